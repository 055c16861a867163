#include "onnx/proto_builder.h"

#include "qat/onnx_export.h"

#include <onnx/checker.h>
#include <onnx/defs/schema.h>

#include <fstream>
#include <stdexcept>

namespace qat {
namespace onnx_proto {
namespace {

constexpr const char* kBatchDim = "batch";

// Opset 21 (16-bit QuantizeLinear) needs IR version 10; everything below
// opset 18 is valid at IR 8, the newest the linked libonnx writes.
int64_t ir_version_for(int64_t opset) { return opset >= 21 ? 10 : opset >= 19 ? 9 : 8; }

void set_shape(onnx::TypeProto_Tensor* type, const std::vector<int64_t>& dims) {
  auto* shape = type->mutable_shape();
  for (int64_t d : dims) {
    auto* dim = shape->add_dim();
    if (d < 0) dim->set_dim_param(kBatchDim);
    else dim->set_dim_value(d);
  }
}

void add_value_info(google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* list, const std::string& name,
                    torch::ScalarType dtype, const std::vector<int64_t>& dims) {
  auto* info = list->Add();
  info->set_name(name);
  auto* type = info->mutable_type()->mutable_tensor_type();
  // tensor_to_onnx knows the ONNX type of every dtype qat produces.
  type->set_elem_type(tensor_to_onnx(torch::empty({0}, dtype), name).data_type());
  set_shape(type, dims);
}

std::vector<int64_t> with_batch(std::vector<int64_t> shape, int64_t batch) {
  for (auto& d : shape) {
    if (d < 0) d = batch;
  }
  return shape;
}

std::vector<torch::Tensor> run_on_zeros(GraphModule& model, int64_t batch) {
  std::vector<torch::Tensor> inputs;
  for (const ValueInfo& in : model.graph().inputs) {
    if (in.shape.empty()) throw std::invalid_argument("export: graph input '" + in.name + "' has no known shape");
    inputs.push_back(torch::zeros(with_batch(in.shape, batch), torch::TensorOptions().dtype(in.dtype)));
  }
  return model.run(inputs);
}

}  // namespace

onnx::ModelProto new_model(int64_t opset, const std::string& graph_name) {
  onnx::ModelProto model;
  model.set_ir_version(ir_version_for(opset));
  model.set_producer_name("qat");
  auto* import = model.add_opset_import();
  import->set_domain("");
  import->set_version(opset);
  model.mutable_graph()->set_name(graph_name);
  return model;
}

onnx::NodeProto* add_node(onnx::GraphProto* graph, const std::string& op_type, const std::string& name,
                          const std::vector<std::string>& inputs, const std::vector<std::string>& outputs) {
  onnx::NodeProto* node = graph->add_node();
  node->set_op_type(op_type);
  node->set_name(name);
  for (const auto& in : inputs) node->add_input(in);
  for (const auto& out : outputs) node->add_output(out);
  return node;
}

void set_attribute(onnx::NodeProto* node, const std::string& key, const AttributeValue& value) {
  using AP = onnx::AttributeProto;
  AP* a = node->add_attribute();
  a->set_name(key);
  if (const auto* i = std::get_if<int64_t>(&value)) {
    a->set_type(AP::INT);
    a->set_i(*i);
  } else if (const auto* f = std::get_if<double>(&value)) {
    a->set_type(AP::FLOAT);
    a->set_f(static_cast<float>(*f));
  } else if (const auto* s = std::get_if<std::string>(&value)) {
    a->set_type(AP::STRING);
    a->set_s(*s);
  } else if (const auto* ints = std::get_if<std::vector<int64_t>>(&value)) {
    a->set_type(AP::INTS);
    for (int64_t v : *ints) a->add_ints(v);
  } else if (const auto* floats = std::get_if<std::vector<double>>(&value)) {
    a->set_type(AP::FLOATS);
    for (double v : *floats) a->add_floats(static_cast<float>(v));
  } else if (const auto* strings = std::get_if<std::vector<std::string>>(&value)) {
    a->set_type(AP::STRINGS);
    for (const auto& v : *strings) a->add_strings(v);
  } else {
    a->set_type(AP::TENSOR);
    *a->mutable_t() = tensor_to_onnx(std::get<torch::Tensor>(value), "");
  }
}

onnx::NodeProto* add_graph_node(onnx::GraphProto* graph, const Node& node) {
  onnx::NodeProto* proto = add_node(graph, node.op_type, node.name, node.inputs, node.outputs);
  for (const auto& [key, value] : node.attributes) {
    try {
      set_attribute(proto, key, value);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(node.describe() + ": attribute '" + key + "': " + e.what());
    }
  }
  return proto;
}

void add_graph_io(onnx::GraphProto* graph, GraphModule& model) {
  const Graph& g = model.graph();
  for (const ValueInfo& in : g.inputs) add_value_info(graph->mutable_input(), in.name, in.dtype, in.shape);
  const bool was_training = model.is_training();
  model.eval();
  std::vector<torch::Tensor> one, two;
  {
    torch::NoGradGuard no_grad;
    one = run_on_zeros(model, 1);
    two = run_on_zeros(model, 2);
  }
  model.train(was_training);
  for (size_t i = 0; i < g.outputs.size(); ++i) {
    std::vector<int64_t> dims = one[i].sizes().vec();
    for (size_t d = 0; d < dims.size(); ++d) {
      if (static_cast<int64_t>(d) >= two[i].dim() || two[i].size(static_cast<int64_t>(d)) != dims[d]) dims[d] = -1;
    }
    add_value_info(graph->mutable_output(), g.outputs[i], one[i].scalar_type(), dims);
  }
}

}  // namespace onnx_proto

bool write_onnx_model(const onnx::ModelProto& model, const std::string& path) {
  const int64_t known_opset = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map().at("").second;
  bool checkable = model.ir_version() <= onnx::IR_VERSION;
  for (const auto& import : model.opset_import()) {
    if (import.domain().empty() && import.version() > known_opset) checkable = false;
  }
  if (checkable) {
    try {
      onnx::checker::check_model(model);
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ": ONNX checker rejected the exported model: " + e.what());
    }
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out || !model.SerializeToOstream(&out)) throw std::runtime_error(path + ": cannot write ONNX model");
  return checkable;
}

}  // namespace qat
