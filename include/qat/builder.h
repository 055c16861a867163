// A small functional builder for the graph IR:
//
//   GraphBuilder b;
//   auto x = b.input("image", {-1, 1, 28, 28});
//   x = b.relu(b.batch_norm(b.conv(x, "conv1", 16, 3)));
//   b.output(b.linear(b.flatten(b.global_avg_pool(x)), "fc", 10));
//   std::shared_ptr<GraphModule> model = b.build();
//
// Values are named strings; each layer is given a name that prefixes its
// parameters ("conv1.weight"), as in PyTorch, and nodes use ONNX op types,
// so a built model is indistinguishable from an imported one.
#pragma once

#include "qat/graph.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace qat {

class GraphBuilder {
 public:
  // `seed` makes parameter initialisation reproducible.
  explicit GraphBuilder(uint64_t seed = 0);

  // shape is [N, C, H, W]; -1 for the batch dimension.
  std::string input(const std::string& name, const std::vector<int64_t>& shape);
  void output(const std::string& value);

  // Square kernel, zero padding of kernel/2 ("same" for stride 1) unless given.
  std::string conv(const std::string& x, const std::string& name, int64_t out_channels, int64_t kernel,
                   int64_t stride = 1, int64_t groups = 1, bool bias = false, int64_t padding = -1);
  std::string batch_norm(const std::string& x, const std::string& name);
  std::string relu(const std::string& x);
  std::string relu6(const std::string& x);
  std::string add(const std::string& a, const std::string& b);
  std::string max_pool(const std::string& x, int64_t kernel, int64_t stride);
  std::string global_avg_pool(const std::string& x);
  std::string flatten(const std::string& x);
  std::string linear(const std::string& x, const std::string& name, int64_t out_features);

  int64_t channels(const std::string& value) const;

  // Hands over the graph and its initialized parameters; the builder is
  // left empty.
  std::shared_ptr<GraphModule> build();

 private:
  std::string node(const std::string& op_type, const std::vector<std::string>& inputs,
                   std::map<std::string, AttributeValue> attributes = {}, const std::string& name = "");
  void parameter(const std::string& name, const torch::Tensor& value, bool trainable = true);

  Graph graph_;
  std::vector<std::pair<std::string, std::pair<torch::Tensor, bool>>> parameters_;
  std::map<std::string, int64_t> channels_;
  std::map<std::string, int> op_counts_;
  at::Generator generator_;
};

}  // namespace qat
