// The graph IR at the centre of qat. Frontends (ONNX import, the C++
// builder, the model zoo) produce a GraphModule; quantsim, PTQ, training
// and export are passes over it.
//
// A Graph is a list of nodes in topological order. Values are named by
// strings (the ONNX tensor names are kept, since encodings files refer to
// them). Initializers (weights, biases, BatchNorm statistics, constants)
// are not values of the graph: they are parameters or buffers of the
// GraphModule, a torch::nn::Module, so that LibTorch optimizers and
// serialization work on them unchanged.
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace qat {

using AttributeValue = std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>,
                                    std::vector<std::string>, torch::Tensor>;

struct Node {
  std::string name;
  std::string op_type;               // ONNX op type ("Conv", "Relu", ...)
  std::vector<std::string> inputs;   // "" marks an omitted optional input
  std::vector<std::string> outputs;  // "" marks an unused optional output
  std::map<std::string, AttributeValue> attributes;

  // Typed attribute access; a missing attribute without a fallback, or one
  // of the wrong type, throws std::invalid_argument naming node and key.
  int64_t attr_int(const std::string& key, std::optional<int64_t> fallback = std::nullopt) const;
  double attr_float(const std::string& key, std::optional<double> fallback = std::nullopt) const;
  std::string attr_string(const std::string& key, std::optional<std::string> fallback = std::nullopt) const;
  std::vector<int64_t> attr_ints(const std::string& key,
                                 std::optional<std::vector<int64_t>> fallback = std::nullopt) const;
  std::vector<double> attr_floats(const std::string& key,
                                  std::optional<std::vector<double>> fallback = std::nullopt) const;
  torch::Tensor attr_tensor(const std::string& key) const;
  bool has_attr(const std::string& key) const { return attributes.count(key) != 0; }
  // True when input i exists and is not the empty name.
  bool has_input(size_t i) const { return i < inputs.size() && !inputs[i].empty(); }
  // "Conv 'layer1.conv'" for error messages.
  std::string describe() const;
};

struct ValueInfo {
  std::string name;
  std::vector<int64_t> shape;  // -1 for a dimension unknown until run time
  torch::ScalarType dtype = torch::kFloat;
};

struct Graph {
  std::vector<ValueInfo> inputs;
  std::vector<std::string> outputs;
  std::vector<Node> nodes;  // topological order
  int64_t opset = 17;       // default-domain opset the nodes follow

  // Index of the node named `name`; throws std::out_of_range if absent.
  size_t node_index(const std::string& name) const;
  // The node producing `value`, or nullptr for graph inputs/initializers.
  const Node* producer(const std::string& value) const;
  // Indices of the nodes reading `value`.
  std::vector<size_t> consumers(const std::string& value) const;
};

class GraphModule;

// What an op kernel sees besides its input tensors.
struct OpContext {
  const Node& node;
  GraphModule& module;
  int64_t opset;
  bool training;
};

// Input tensors in node-input order (undefined tensors for omitted optional
// inputs); returns one tensor per node output (undefined for unused ones).
using OpKernel = std::function<std::vector<torch::Tensor>(const OpContext&, const std::vector<torch::Tensor>&)>;

// The op registry: kernels for ONNX op types (src/graph/ops_*.cpp) and for
// qat's own ops (quantizers). Registering an op type twice replaces it.
void register_op(const std::string& op_type, OpKernel kernel);
const OpKernel* find_op(const std::string& op_type);
std::vector<std::string> registered_ops();

class GraphModule : public torch::nn::Module {
 public:
  explicit GraphModule(Graph graph = {});

  const Graph& graph() const { return graph_; }
  // Mutable access for passes; the execution plan is rebuilt on next run.
  Graph& mutable_graph();

  // Adds an initializer: a trainable parameter or a buffer (BatchNorm
  // statistics, shape constants). Names may contain any character.
  void add_initializer(const std::string& name, const torch::Tensor& value, bool trainable);
  bool has_initializer(const std::string& name) const;
  torch::Tensor initializer(const std::string& name) const;
  bool is_trainable(const std::string& name) const;
  // Replaces an initializer's tensor, keeping its kind.
  void set_initializer(const std::string& name, const torch::Tensor& value);
  void remove_initializer(const std::string& name);
  std::vector<std::string> initializer_names() const;

  // Submodules that kernels of qat's own ops look up by name (quantizers).
  // They are registered with torch::nn::Module, so their parameters take
  // part in optimizers, train()/eval() and serialization.
  void attach(const std::string& name, std::shared_ptr<torch::nn::Module> submodule);
  void detach(const std::string& name);
  torch::nn::Module& attachment(const std::string& name) const;
  std::vector<std::string> attachment_names() const;

  // Runs the graph. Inputs are matched to graph inputs by position.
  std::vector<torch::Tensor> run(const std::vector<torch::Tensor>& inputs);
  // Single-input, single-output convenience.
  torch::Tensor forward(const torch::Tensor& input);

  // Calls `observer(node, outputs)` after each node (calibration, SQNR
  // reports, debugging). Pass nullptr to remove.
  using NodeObserver = std::function<void(const Node&, const std::vector<torch::Tensor>&)>;
  void set_observer(NodeObserver observer) { observer_ = std::move(observer); }

  // Shapes of every value for the given input shapes, found by running the
  // graph once in eval mode on zeros without autograd.
  std::map<std::string, std::vector<int64_t>> infer_shapes(const std::vector<std::vector<int64_t>>& input_shapes);

 private:
  struct Plan;
  void build_plan();
  std::string key_of(const std::string& name) const;
  std::string unique_key(const std::string& name) const;

  Graph graph_;
  std::map<std::string, std::string> keys_;  // initializer name -> module key
  std::map<std::string, bool> trainable_;
  std::map<std::string, std::pair<std::string, std::shared_ptr<torch::nn::Module>>> attachments_;  // name -> key, module
  std::shared_ptr<Plan> plan_;
  NodeObserver observer_;
};

}  // namespace qat
