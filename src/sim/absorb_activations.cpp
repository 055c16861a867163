#include "sim/absorb_activations.h"

#include "qat/quantsim.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>
#include <stdexcept>

namespace qat {
namespace {

// Clip bound `i`: absent is infinite; otherwise a constant, one-element,
// finite-or-infinite initializer of x's type (what the Clip kernel takes as
// a constant), else nullopt.
std::optional<double> clip_bound(const GraphModule& m, const Node& clip, size_t i, double absent,
                                 torch::ScalarType x_type) {
  if (!clip.has_input(i)) return absent;
  const std::string& name = clip.inputs[i];
  if (!m.has_initializer(name) || m.is_trainable(name)) return std::nullopt;
  const torch::Tensor bound = m.initializer(name);
  if (bound.numel() != 1 || bound.scalar_type() != x_type) return std::nullopt;
  const double value = bound.item<double>();
  if (std::isnan(value)) return std::nullopt;
  return value;
}

// The activation `node` computes, if the quantizer kernels can take it over.
std::optional<FusedActivation> absorbable(const GraphModule& m, const Node& node, torch::ScalarType x_type) {
  if (node.op_type == "Relu" && node.inputs.size() == 1) return FusedActivation::relu();
  if (node.op_type != "Clip" || node.has_attr("min") || node.has_attr("max") || node.inputs.size() > 3) {
    return std::nullopt;
  }
  const auto lo = clip_bound(m, node, 1, -INFINITY, x_type), hi = clip_bound(m, node, 2, INFINITY, x_type);
  if (!lo || !hi) return std::nullopt;
  return FusedActivation::clip(*lo, *hi);
}

torch::ScalarType type_of(const std::map<std::string, torch::ScalarType>& dtypes, const std::string& value) {
  const auto it = dtypes.find(value);
  return it == dtypes.end() ? torch::kByte : it->second;  // unknown: never a fake-quant input
}

}  // namespace

void absorb_activations(GraphModule& m, const std::map<std::string, torch::ScalarType>& dtypes) {
  Graph& g = m.mutable_graph();
  const std::set<std::string> graph_outputs(g.outputs.begin(), g.outputs.end());
  std::vector<size_t> absorbed;
  for (Node& fq : g.nodes) {
    if (fq.op_type != kFakeQuantOp || m.has_initializer(fq.inputs.at(0))) continue;
    const std::string c = fq.inputs[0];
    const Node* producer = g.producer(c);
    if (!producer || producer->outputs.size() != 1 || graph_outputs.count(c) || g.consumers(c).size() != 1) continue;
    // Relu and Clip keep their input's type (x may be a value placement
    // added, which `dtypes` does not know).
    const torch::ScalarType x_type = type_of(dtypes, c);
    if (x_type != torch::kFloat && x_type != torch::kDouble) continue;
    const auto activation = absorbable(m, *producer, x_type);
    if (!activation) continue;
    fq.attributes[kActivationAttr] = producer->op_type;
    if (activation->kind == FusedActivation::Kind::kClip) {
      fq.attributes[kActivationBoundsAttr] = std::vector<double>{activation->lo, activation->hi};
    }
    fq.attributes[kActivationNodeAttr] = producer->name;
    fq.attributes[kActivationInputsAttr] = producer->inputs;
    fq.attributes[kActivationOutputAttr] = c;
    fq.inputs[0] = producer->inputs[0];
    absorbed.push_back(g.node_index(producer->name));
  }
  // The quantizer node sits right after its producer, so removing the
  // producer keeps the order topological.
  std::sort(absorbed.rbegin(), absorbed.rend());
  for (size_t index : absorbed) g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(index));
}

FusedActivation fused_activation(const Node& node, const std::string& prefix) {
  const std::string op = node.attr_string(prefix + kActivationAttr, "");
  if (op == "Relu") return FusedActivation::relu();
  if (op == "Clip") {
    const auto bounds = node.attr_floats(prefix + kActivationBoundsAttr);
    if (bounds.size() != 2) throw std::invalid_argument(node.describe() + ": activation bounds must be {lo, hi}");
    return FusedActivation::clip(bounds[0], bounds[1]);
  }
  if (!op.empty()) throw std::invalid_argument(node.describe() + ": cannot fuse activation '" + op + "'");
  return {};
}

void copy_activation_attributes(const Node& from, Node& to, const std::string& prefix) {
  for (const char* key : {kActivationAttr, kActivationBoundsAttr}) {
    const auto it = from.attributes.find(key);
    if (it != from.attributes.end()) to.attributes[prefix + key] = it->second;
  }
}

}  // namespace qat
