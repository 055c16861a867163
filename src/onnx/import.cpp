// ONNX ModelProto -> GraphModule.
#include "qat/onnx_import.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace qat {
namespace {

constexpr int64_t kMinOpset = 11;
constexpr int64_t kMaxOpset = 17;

int64_t default_domain_opset(const onnx::ModelProto& model, const std::string& source) {
  for (const auto& entry : model.opset_import()) {
    if (entry.domain().empty() || entry.domain() == "ai.onnx") {
      const int64_t version = entry.version();
      if (version < kMinOpset || version > kMaxOpset) {
        throw std::invalid_argument(source + ": opset " + std::to_string(version) + " is not supported (qat imports opset " +
                                    std::to_string(kMinOpset) + " to " + std::to_string(kMaxOpset) + ")");
      }
      return version;
    }
  }
  throw std::invalid_argument(source + ": model imports no default-domain opset");
}

AttributeValue attribute_value(const onnx::AttributeProto& a, const std::string& context) {
  using AP = onnx::AttributeProto;
  switch (a.type()) {
    case AP::INT: return a.i();
    case AP::FLOAT: return static_cast<double>(a.f());
    case AP::STRING: return a.s();
    case AP::TENSOR: return tensor_from_onnx(a.t(), context);
    case AP::INTS: return std::vector<int64_t>(a.ints().begin(), a.ints().end());
    case AP::FLOATS: return std::vector<double>(a.floats().begin(), a.floats().end());
    case AP::STRINGS: return std::vector<std::string>(a.strings().begin(), a.strings().end());
    default:
      throw std::invalid_argument(context + ": attribute '" + a.name() + "' has unsupported type " +
                                  AP::AttributeType_Name(a.type()));
  }
}

torch::ScalarType value_dtype(const onnx::ValueInfoProto& info) {
  if (!info.type().has_tensor_type()) return torch::kFloat;
  switch (info.type().tensor_type().elem_type()) {
    case onnx::TensorProto::INT64: return torch::kLong;
    case onnx::TensorProto::INT32: return torch::kInt;
    case onnx::TensorProto::UINT8: return torch::kByte;
    case onnx::TensorProto::INT8: return torch::kChar;
    case onnx::TensorProto::BOOL: return torch::kBool;
    case onnx::TensorProto::DOUBLE: return torch::kDouble;
    default: return torch::kFloat;
  }
}

std::vector<int64_t> value_shape(const onnx::ValueInfoProto& info) {
  std::vector<int64_t> shape;
  if (!info.type().tensor_type().has_shape()) return shape;
  for (const auto& dim : info.type().tensor_type().shape().dim()) {
    shape.push_back(dim.has_dim_value() ? dim.dim_value() : -1);
  }
  return shape;
}

// Running statistics are state, not weights: an optimizer must not move them.
std::set<std::string> batchnorm_statistics(const onnx::GraphProto& graph) {
  std::set<std::string> names;
  for (const auto& node : graph.node()) {
    if (node.op_type() == "BatchNormalization" && node.input_size() >= 5) {
      names.insert(node.input(3));
      names.insert(node.input(4));
    }
  }
  return names;
}

std::string node_name(const onnx::NodeProto& node, size_t index) {
  if (!node.name().empty()) return node.name();
  return node.op_type() + "_" + std::to_string(index);
}

}  // namespace

std::shared_ptr<GraphModule> import_onnx(const onnx::ModelProto& model, const std::string& source) {
  const onnx::GraphProto& g = model.graph();
  Graph graph;
  graph.opset = default_domain_opset(model, source);
  auto module = std::make_shared<GraphModule>();

  const auto statistics = batchnorm_statistics(g);
  std::set<std::string> initializer_names;
  for (const auto& init : g.initializer()) {
    const torch::Tensor value = tensor_from_onnx(init, source);
    module->add_initializer(init.name(), value, statistics.count(init.name()) == 0);
    initializer_names.insert(init.name());
  }
  // Older exporters also list initializers as graph inputs.
  for (const auto& input : g.input()) {
    if (!initializer_names.count(input.name())) {
      graph.inputs.push_back({input.name(), value_shape(input), value_dtype(input)});
    }
  }
  for (const auto& output : g.output()) graph.outputs.push_back(output.name());

  for (int i = 0; i < g.node_size(); ++i) {
    const onnx::NodeProto& proto = g.node(i);
    Node node;
    node.name = node_name(proto, static_cast<size_t>(i));
    node.op_type = proto.op_type();
    const std::string context = source + ": " + node.describe();
    if (!proto.domain().empty() && proto.domain() != "ai.onnx") {
      throw std::invalid_argument(context + ": op domain '" + proto.domain() + "' is not supported");
    }
    if (!find_op(node.op_type)) {
      throw std::invalid_argument(source + ": unsupported op type '" + node.op_type + "' (node '" + node.name + "')");
    }
    node.inputs.assign(proto.input().begin(), proto.input().end());
    node.outputs.assign(proto.output().begin(), proto.output().end());
    for (const auto& attr : proto.attribute()) node.attributes[attr.name()] = attribute_value(attr, context);
    // A Constant is an initializer in disguise; keeping it as one lets
    // passes see weights stored this way.
    if (node.op_type == "Constant" && node.outputs.size() == 1 && node.has_attr("value")) {
      module->add_initializer(node.outputs[0], node.attr_tensor("value"), false);
      continue;
    }
    graph.nodes.push_back(std::move(node));
  }
  module->mutable_graph() = std::move(graph);
  return module;
}

std::shared_ptr<GraphModule> import_onnx_bytes(const std::string& bytes, const std::string& source) {
  onnx::ModelProto model;
  if (!model.ParseFromString(bytes)) {
    throw std::runtime_error(source + ": not a valid ONNX model (protobuf parse failed; truncated or not ONNX?)");
  }
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    throw std::runtime_error(source + ": ONNX checker rejected the model: " + e.what());
  }
  try {
    return import_onnx(model, source);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(e.what());
  }
}

std::shared_ptr<GraphModule> import_onnx(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open ONNX file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return import_onnx_bytes(buffer.str(), path);
}

}  // namespace qat
