#include "qat/builder.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <stdexcept>

namespace qat {

GraphBuilder::GraphBuilder(uint64_t seed) : generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

std::string GraphBuilder::input(const std::string& name, const std::vector<int64_t>& shape) {
  if (shape.size() != 4) throw std::invalid_argument("builder input '" + name + "' must be [N, C, H, W]");
  graph_.inputs.push_back({name, shape, torch::kFloat});
  channels_[name] = shape[1];
  return name;
}

void GraphBuilder::output(const std::string& value) { graph_.outputs.push_back(value); }

int64_t GraphBuilder::channels(const std::string& value) const {
  const auto it = channels_.find(value);
  if (it == channels_.end()) throw std::invalid_argument("builder: unknown value '" + value + "'");
  return it->second;
}

std::string GraphBuilder::node(const std::string& op_type, const std::vector<std::string>& inputs,
                               std::map<std::string, AttributeValue> attributes, const std::string& name) {
  const std::string node_name = name.empty() ? op_type + "_" + std::to_string(op_counts_[op_type]++) : name;
  Node n;
  n.name = node_name;
  n.op_type = op_type;
  n.inputs = inputs;
  n.outputs = {node_name + ".out"};
  n.attributes = std::move(attributes);
  graph_.nodes.push_back(std::move(n));
  // Ops without a name of their own keep the channel count of their input.
  channels_[node_name + ".out"] = channels(inputs[0]);
  return node_name + ".out";
}

void GraphBuilder::parameter(const std::string& name, const torch::Tensor& value, bool trainable) {
  parameters_.push_back({name, {value, trainable}});
}

std::string GraphBuilder::conv(const std::string& x, const std::string& name, int64_t out_channels, int64_t kernel,
                               int64_t stride, int64_t groups, bool bias, int64_t padding) {
  const int64_t in_channels = channels(x);
  if (in_channels % groups || out_channels % groups) {
    throw std::invalid_argument("builder: conv '" + name + "' channels not divisible by groups");
  }
  const int64_t pad = padding < 0 ? kernel / 2 : padding;
  // Kaiming normal, fan-out mode, as torchvision initialises ResNets.
  const double std_dev = std::sqrt(2.0 / static_cast<double>(out_channels * kernel * kernel));
  parameter(name + ".weight",
            torch::randn({out_channels, in_channels / groups, kernel, kernel}, generator_) * std_dev);
  std::vector<std::string> inputs{x, name + ".weight"};
  if (bias) {
    parameter(name + ".bias", torch::zeros({out_channels}));
    inputs.push_back(name + ".bias");
  }
  const std::string out = node("Conv", inputs,
                               {{"kernel_shape", std::vector<int64_t>{kernel, kernel}},
                                {"strides", std::vector<int64_t>{stride, stride}},
                                {"pads", std::vector<int64_t>{pad, pad, pad, pad}},
                                {"group", groups}},
                               name);
  channels_[out] = out_channels;
  return out;
}

std::string GraphBuilder::batch_norm(const std::string& x, const std::string& name) {
  const int64_t c = channels(x);
  parameter(name + ".weight", torch::ones({c}));
  parameter(name + ".bias", torch::zeros({c}));
  parameter(name + ".running_mean", torch::zeros({c}), false);
  parameter(name + ".running_var", torch::ones({c}), false);
  // ONNX momentum weighs the old statistic: 0.9 is PyTorch's momentum 0.1.
  return node("BatchNormalization",
              {x, name + ".weight", name + ".bias", name + ".running_mean", name + ".running_var"},
              {{"epsilon", 1e-5}, {"momentum", 0.9}}, name);
}

std::string GraphBuilder::relu(const std::string& x) { return node("Relu", {x}); }

std::string GraphBuilder::relu6(const std::string& x) {
  const std::string name = "Clip_" + std::to_string(op_counts_["Clip"]);
  parameter(name + ".min", torch::tensor(0.0f), false);
  parameter(name + ".max", torch::tensor(6.0f), false);
  return node("Clip", {x, name + ".min", name + ".max"});
}

std::string GraphBuilder::add(const std::string& a, const std::string& b) {
  if (channels(a) != channels(b)) throw std::invalid_argument("builder: add of '" + a + "' and '" + b + "' mismatch");
  return node("Add", {a, b});
}

std::string GraphBuilder::max_pool(const std::string& x, int64_t kernel, int64_t stride) {
  return node("MaxPool", {x},
              {{"kernel_shape", std::vector<int64_t>{kernel, kernel}}, {"strides", std::vector<int64_t>{stride, stride}}});
}

std::string GraphBuilder::global_avg_pool(const std::string& x) { return node("GlobalAveragePool", {x}); }

std::string GraphBuilder::flatten(const std::string& x) { return node("Flatten", {x}, {{"axis", int64_t{1}}}); }

std::string GraphBuilder::linear(const std::string& x, const std::string& name, int64_t out_features) {
  const int64_t in_features = channels(x);
  // PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  parameter(name + ".weight", (torch::rand({out_features, in_features}, generator_) * 2 - 1) * bound);
  parameter(name + ".bias", (torch::rand({out_features}, generator_) * 2 - 1) * bound);
  const std::string out =
      node("Gemm", {x, name + ".weight", name + ".bias"}, {{"transB", int64_t{1}}}, name);
  channels_[out] = out_features;
  return out;
}

std::shared_ptr<GraphModule> GraphBuilder::build() {
  auto module = std::make_shared<GraphModule>(std::move(graph_));
  for (const auto& [name, value] : parameters_) module->add_initializer(name, value.first, value.second);
  graph_ = Graph{};
  parameters_.clear();
  channels_.clear();
  op_counts_.clear();
  return module;
}

}  // namespace qat
