// ONNX import: how a model maps onto a GraphModule, and the errors for
// files that cannot be imported. The models are built here with the ONNX
// protobuf API, so these tests need no fixtures; tests/onnx/
// torchvision_models_test.cpp runs real exported models.
#include "qat/onnx_import.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <fstream>
#include <random>
#include <string>

namespace qat {
namespace {

using torch::Tensor;

onnx::TensorProto tensor_proto(const std::string& name, const Tensor& value) {
  onnx::TensorProto proto;
  proto.set_name(name);
  proto.set_data_type(value.scalar_type() == torch::kLong ? onnx::TensorProto::INT64 : onnx::TensorProto::FLOAT);
  for (int64_t d : value.sizes()) proto.add_dims(d);
  const Tensor contiguous = value.contiguous();
  proto.set_raw_data(contiguous.data_ptr(), contiguous.numel() * contiguous.element_size());
  return proto;
}

// Just enough of onnx.helper to write small models.
class ModelBuilder {
 public:
  explicit ModelBuilder(int64_t opset = 13) {
    model_.set_ir_version(onnx::IR_VERSION);
    auto* import = model_.add_opset_import();
    import->set_domain("");
    import->set_version(opset);
    graph()->set_name("test");
  }

  void input(const std::string& name, const std::vector<int64_t>& shape) { value(graph()->add_input(), name, shape); }
  void output(const std::string& name, const std::vector<int64_t>& shape, int32_t type = onnx::TensorProto::FLOAT) {
    value(graph()->add_output(), name, shape, type);
  }
  void initializer(const std::string& name, const Tensor& value) { *graph()->add_initializer() = tensor_proto(name, value); }
  onnx::NodeProto* node(const std::string& op, const std::string& name, const std::vector<std::string>& inputs,
                        const std::vector<std::string>& outputs) {
    onnx::NodeProto* node = graph()->add_node();
    node->set_op_type(op);
    node->set_name(name);
    for (const auto& in : inputs) node->add_input(in);
    for (const auto& out : outputs) node->add_output(out);
    return node;
  }
  const onnx::ModelProto& model() const { return model_; }

  std::string save(const std::string& file) const {
    const std::string path = ::testing::TempDir() + file;
    std::ofstream(path, std::ios::binary) << model_.SerializeAsString();
    return path;
  }

 private:
  onnx::GraphProto* graph() { return model_.mutable_graph(); }
  static void value(onnx::ValueInfoProto* info, const std::string& name, const std::vector<int64_t>& shape,
                    int32_t type = onnx::TensorProto::FLOAT) {
    info->set_name(name);
    auto* tensor_type = info->mutable_type()->mutable_tensor_type();
    tensor_type->set_elem_type(type);
    for (int64_t d : shape) tensor_type->mutable_shape()->add_dim()->set_dim_value(d);
  }

  onnx::ModelProto model_;
};

void add_int_attribute(onnx::NodeProto* node, const std::string& name, int64_t value) {
  auto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INT);
  attr->set_i(value);
}

void add_ints_attribute(onnx::NodeProto* node, const std::string& name, const std::vector<int64_t>& values) {
  auto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) attr->add_ints(v);
}

// x -> Conv -> BatchNormalization -> Relu -> Reshape(shape from a Constant
// node): the layout of a real CNN stem, with PyTorch-style dotted names.
struct ConvBnModel {
  Tensor weight = torch::randn({4, 2, 3, 3}), bias = torch::randn({4});
  Tensor gamma = torch::rand({4}) + 0.5, beta = torch::randn({4});
  Tensor mean = torch::randn({4}), var = torch::rand({4}) + 0.5;
  ModelBuilder builder;

  ConvBnModel() {
    builder.input("x", {1, 2, 5, 5});
    builder.output("y", {1, 100});
    builder.initializer("stem.conv.weight", weight);
    builder.initializer("stem.conv.bias", bias);
    builder.initializer("stem.bn.weight", gamma);
    builder.initializer("stem.bn.bias", beta);
    builder.initializer("stem.bn.running_mean", mean);
    builder.initializer("stem.bn.running_var", var);
    auto* conv = builder.node("Conv", "stem.conv", {"x", "stem.conv.weight", "stem.conv.bias"}, {"conv_out"});
    add_ints_attribute(conv, "kernel_shape", {3, 3});
    add_ints_attribute(conv, "pads", {1, 1, 1, 1});
    builder.node("BatchNormalization", "stem.bn",
                 {"conv_out", "stem.bn.weight", "stem.bn.bias", "stem.bn.running_mean", "stem.bn.running_var"},
                 {"bn_out"});
    builder.node("Relu", "stem.relu", {"bn_out"}, {"relu_out"});
    auto* shape = builder.node("Constant", "head.shape", {}, {"head.shape_value"});
    auto* value = shape->add_attribute();
    value->set_name("value");
    value->set_type(onnx::AttributeProto::TENSOR);
    *value->mutable_t() = tensor_proto("", torch::tensor({1, -1}, torch::kLong));
    builder.node("Reshape", "head.reshape", {"relu_out", "head.shape_value"}, {"y"});
  }

  Tensor expected(const Tensor& x) const {
    const Tensor conv = torch::conv2d(x, weight, bias, 1, 1);
    return torch::relu(torch::batch_norm(conv, gamma, beta, mean, var, false, 0.1, 1e-5, false)).reshape({1, -1});
  }
};

// The message import_onnx(path) throws, or "" if it does not throw.
std::string import_error(const std::string& path) {
  try {
    import_onnx(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(OnnxImport, RunsAsTheOnnxModelComputes) {
  torch::manual_seed(0);
  ConvBnModel m;
  auto module = import_onnx(m.builder.save("/conv_bn.onnx"));
  module->eval();
  const Tensor x = torch::randn({1, 2, 5, 5});
  EXPECT_TRUE(torch::allclose(module->forward(x), m.expected(x), 1e-5, 1e-5));
}

TEST(OnnxImport, InitializersKeepNamesWeightsTrainBatchNormStatisticsDoNot) {
  torch::manual_seed(0);
  ConvBnModel m;
  auto module = import_onnx(m.builder.model(), "conv_bn");
  EXPECT_EQ(module->initializer_names(),
            (std::vector<std::string>{"head.shape_value", "stem.bn.bias", "stem.bn.running_mean",
                                      "stem.bn.running_var", "stem.bn.weight", "stem.conv.bias",
                                      "stem.conv.weight"}));
  for (const char* weight : {"stem.conv.weight", "stem.conv.bias", "stem.bn.weight", "stem.bn.bias"}) {
    EXPECT_TRUE(module->is_trainable(weight)) << weight;
  }
  for (const char* state : {"stem.bn.running_mean", "stem.bn.running_var", "head.shape_value"}) {
    EXPECT_FALSE(module->is_trainable(state)) << state;
    EXPECT_FALSE(module->initializer(state).requires_grad()) << state;
  }
  EXPECT_TRUE(torch::equal(module->initializer("stem.conv.weight"), m.weight));
  EXPECT_TRUE(torch::equal(module->initializer("head.shape_value"), torch::tensor({1, -1}, torch::kLong)));
  EXPECT_EQ(module->graph().nodes.size(), 4u) << "the Constant node becomes an initializer";

  module->eval();
  module->forward(torch::randn({1, 2, 5, 5})).sum().backward();
  EXPECT_TRUE(module->initializer("stem.conv.weight").grad().defined());
  EXPECT_TRUE(module->initializer("stem.bn.bias").grad().defined());
  EXPECT_FALSE(module->initializer("stem.bn.running_mean").grad().defined());
}

TEST(OnnxImport, MissingFileNamesThePath) {
  const std::string path = ::testing::TempDir() + "/no_such_model.onnx";
  const std::string error = import_error(path);
  EXPECT_TRUE(contains(error, path)) << error;
  EXPECT_TRUE(contains(error, "cannot open")) << error;
}

TEST(OnnxImport, TruncatedFileIsRejected) {
  torch::manual_seed(0);
  ConvBnModel m;
  const std::string bytes = m.builder.model().SerializeAsString();
  const std::string path = ::testing::TempDir() + "/truncated.onnx";
  std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  const std::string error = import_error(path);
  EXPECT_TRUE(contains(error, path)) << error;
}

TEST(OnnxImport, RandomBytesAreRejected) {
  std::mt19937 rng(1);
  std::string bytes(4096, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  const std::string path = ::testing::TempDir() + "/random.onnx";
  std::ofstream(path, std::ios::binary) << bytes;
  const std::string error = import_error(path);
  EXPECT_TRUE(contains(error, path)) << error;
}

TEST(OnnxImport, UnsupportedOpNamesOpNodeAndFile) {
  ModelBuilder builder(13);
  builder.input("boxes", {1, 4, 4});
  builder.input("scores", {1, 1, 4});
  builder.output("selected", {-1, 3}, onnx::TensorProto::INT64);
  builder.node("Relu", "ok", {"scores"}, {"relu_scores"});
  builder.node("NonMaxSuppression", "detector.nms", {"boxes", "relu_scores"}, {"selected"});
  const std::string path = builder.save("/nms.onnx");
  const std::string error = import_error(path);
  EXPECT_TRUE(contains(error, "NonMaxSuppression")) << error;
  EXPECT_TRUE(contains(error, "'detector.nms'")) << error;
  EXPECT_TRUE(contains(error, path)) << error;
}

TEST(OnnxImport, OpsetOutsideTheSupportedRangeIsRejected) {
  for (int64_t opset : {9, 18}) {
    ModelBuilder builder(opset);
    builder.input("x", {2});
    builder.output("y", {2});
    builder.node("Relu", "relu", {"x"}, {"y"});
    const std::string path = builder.save("/opset.onnx");
    const std::string error = import_error(path);
    EXPECT_TRUE(contains(error, "opset " + std::to_string(opset))) << error;
    EXPECT_TRUE(contains(error, path)) << error;
  }
}

TEST(OnnxImport, AttributesReachKernels) {
  ModelBuilder builder(11);
  builder.input("x", {2, 1, 3});
  builder.output("y", {3, 2});
  add_ints_attribute(builder.node("Squeeze", "squeeze", {"x"}, {"s"}), "axes", {1});
  add_int_attribute(builder.node("Flatten", "flatten", {"s"}, {"f"}), "axis", 1);
  builder.node("Transpose", "transpose", {"f"}, {"y"});
  auto module = import_onnx(builder.model(), "attributes");
  EXPECT_EQ(module->graph().opset, 11);
  const Tensor x = torch::arange(6, torch::kFloat).reshape({2, 1, 3});
  EXPECT_TRUE(torch::equal(module->forward(x), x.reshape({2, 3}).t()));
}

}  // namespace
}  // namespace qat
