#include "qat/graph.h"

#include "graph/ops.h"

#include <stdexcept>

namespace qat {
namespace {

template <typename T>
const T& typed_attr(const Node& node, const std::string& key, const char* type_name) {
  const auto it = node.attributes.find(key);
  const T* value = std::get_if<T>(&it->second);
  if (!value) throw std::invalid_argument(node.describe() + ": attribute '" + key + "' is not " + type_name);
  return *value;
}

template <typename T>
T attr_or(const Node& node, const std::string& key, const std::optional<T>& fallback, const char* type_name) {
  if (!node.has_attr(key)) {
    if (fallback) return *fallback;
    throw std::invalid_argument(node.describe() + ": missing required attribute '" + key + "'");
  }
  return typed_attr<T>(node, key, type_name);
}

ops::KernelMap builtin_kernels() {
  ops::KernelMap kernels;
  ops::add_nn_ops(kernels);
  ops::add_elementwise_ops(kernels);
  ops::add_tensor_ops(kernels);
  return kernels;
}

ops::KernelMap& registry() {
  static ops::KernelMap kernels = builtin_kernels();
  return kernels;
}

}  // namespace

int64_t Node::attr_int(const std::string& key, std::optional<int64_t> fallback) const {
  return attr_or<int64_t>(*this, key, fallback, "an integer");
}

double Node::attr_float(const std::string& key, std::optional<double> fallback) const {
  return attr_or<double>(*this, key, fallback, "a float");
}

std::string Node::attr_string(const std::string& key, std::optional<std::string> fallback) const {
  return attr_or<std::string>(*this, key, fallback, "a string");
}

std::vector<int64_t> Node::attr_ints(const std::string& key, std::optional<std::vector<int64_t>> fallback) const {
  return attr_or<std::vector<int64_t>>(*this, key, fallback, "a list of integers");
}

std::vector<double> Node::attr_floats(const std::string& key, std::optional<std::vector<double>> fallback) const {
  return attr_or<std::vector<double>>(*this, key, fallback, "a list of floats");
}

torch::Tensor Node::attr_tensor(const std::string& key) const {
  return attr_or<torch::Tensor>(*this, key, std::nullopt, "a tensor");
}

std::string Node::describe() const { return op_type + " node '" + name + "'"; }

size_t Graph::node_index(const std::string& name) const {
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].name == name) return i;
  }
  throw std::out_of_range("no node named '" + name + "'");
}

const Node* Graph::producer(const std::string& value) const {
  for (const Node& node : nodes) {
    for (const auto& out : node.outputs) {
      if (out == value) return &node;
    }
  }
  return nullptr;
}

std::vector<size_t> Graph::consumers(const std::string& value) const {
  std::vector<size_t> result;
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const auto& in : nodes[i].inputs) {
      if (in == value) {
        result.push_back(i);
        break;
      }
    }
  }
  return result;
}

void register_op(const std::string& op_type, OpKernel kernel) { registry()[op_type] = std::move(kernel); }

const OpKernel* find_op(const std::string& op_type) {
  const auto& kernels = registry();
  const auto it = kernels.find(op_type);
  return it == kernels.end() ? nullptr : &it->second;
}

std::vector<std::string> registered_ops() {
  std::vector<std::string> names;
  for (const auto& entry : registry()) names.push_back(entry.first);
  return names;
}

}  // namespace qat
