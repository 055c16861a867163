#include "qat/cle.h"

#include "qat/quantsim.h"

#include <map>
#include <optional>

namespace qat {
namespace {

using torch::Tensor;

// A channel's expected output: BN's beta (mean) and |gamma| (spread).
struct ChannelStats {
  Tensor mean, spread;
};

struct Pair {
  std::string a, b;
  std::string activation;  // the Relu between them, or "" when direct
};

// BN statistics per conv, read before folding removes them.
std::map<std::string, ChannelStats> batchnorm_stats(const GraphModule& m) {
  std::map<std::string, ChannelStats> stats;
  const Graph& g = m.graph();
  for (const Node& bn : g.nodes) {
    if (bn.op_type != "BatchNormalization" || !m.has_initializer(bn.inputs.at(1))) continue;
    const Node* conv = g.producer(bn.inputs[0]);
    if (!conv || conv->op_type != "Conv" || g.consumers(bn.inputs[0]).size() != 1) continue;
    stats[conv->name] = {m.initializer(bn.inputs[2]).detach().clone(), m.initializer(bn.inputs[1]).detach().abs()};
  }
  return stats;
}

bool is_relu6(const GraphModule& m, const Node& node) {
  if (node.op_type != "Clip" || !node.has_input(1) || !node.has_input(2)) return false;
  if (!m.has_initializer(node.inputs[1]) || !m.has_initializer(node.inputs[2])) return false;
  return m.initializer(node.inputs[1]).item<double>() == 0.0 && m.initializer(node.inputs[2]).item<double>() == 6.0;
}

// B's kind: a plain conv (groups 1) or a depthwise one, whose input
// channel i is its weight's row i.
bool equalizable_reader(const GraphModule& m, const Node& b) {
  if (b.op_type != "Conv" || !m.has_initializer(b.inputs.at(1))) return false;
  const int64_t groups = b.attr_int("group", 1);
  return groups == 1 || groups == m.initializer(b.inputs[1]).size(0);
}

std::optional<size_t> only_reader(const Graph& g, const std::string& value) {
  const auto readers = g.consumers(value);
  const bool is_output = std::find(g.outputs.begin(), g.outputs.end(), value) != g.outputs.end();
  if (readers.size() != 1 || is_output) return std::nullopt;
  return readers[0];
}

std::vector<Pair> find_pairs(const GraphModule& m) {
  std::vector<Pair> pairs;
  const Graph& g = m.graph();
  for (const Node& a : g.nodes) {
    if (a.op_type != "Conv" || !m.has_initializer(a.inputs.at(1))) continue;
    auto next = only_reader(g, a.outputs[0]);
    if (!next) continue;
    std::string activation;
    const Node& mid = g.nodes[*next];
    if (mid.op_type == "Relu" || is_relu6(m, mid)) {
      activation = mid.name;
      next = only_reader(g, mid.outputs[0]);
      if (!next) continue;
    }
    const Node& b = g.nodes[*next];
    if (equalizable_reader(m, b) && b.inputs[0] == (activation.empty() ? a.outputs[0] : mid.outputs[0])) {
      pairs.push_back({a.name, b.name, activation});
    }
  }
  return pairs;
}

void replace_relu6(GraphModule& m, const std::string& name) {
  Node& node = m.mutable_graph().nodes[m.graph().node_index(name)];
  node.op_type = "Relu";
  node.inputs.resize(1);
}

const Node& node_named(const GraphModule& m, const std::string& name) {
  return m.graph().nodes[m.graph().node_index(name)];
}

// Per-channel absolute maximum along axis 0 of w moved to `axis` first.
Tensor channel_range(const Tensor& w, int64_t axis) { return std::get<0>(w.movedim(axis, 0).flatten(1).abs().max(1)); }

Tensor along(const Tensor& v, int64_t dim, int64_t axis) {
  std::vector<int64_t> shape(static_cast<size_t>(dim), 1);
  shape[static_cast<size_t>(axis)] = -1;
  return v.reshape(shape);
}

// B's input-channel axis in its weight: 1, or 0 for a depthwise conv.
int64_t input_axis(const Node& b) { return b.attr_int("group", 1) == 1 ? 1 : 0; }

void equalize(GraphModule& m, const Pair& pair, std::map<std::string, ChannelStats>& stats) {
  const Node& a = node_named(m, pair.a);
  const Node& b = node_named(m, pair.b);
  Tensor wa = m.initializer(a.inputs[1]), wb = m.initializer(b.inputs[1]);
  const int64_t axis = input_axis(b);
  const Tensor r1 = channel_range(wa, 0), r2 = channel_range(wb, axis);
  // Dead channels (a zero range) keep their scale.
  const Tensor s = torch::where((r1 > 0) & (r2 > 0), torch::sqrt(r1 / r2), torch::ones_like(r1));
  wa.div_(along(s, wa.dim(), 0));
  wb.mul_(along(s, wb.dim(), axis));
  if (a.has_input(2)) m.initializer(a.inputs[2]).div_(s);
  const auto it = stats.find(pair.a);
  if (it != stats.end()) {
    it->second.mean = it->second.mean / s;
    it->second.spread = it->second.spread / s;
  }
}

// Moves c = max(0, mean - 3 spread) from A's bias into B's; true if any c > 0.
bool absorb_high_bias(GraphModule& m, const Pair& pair, const ChannelStats& stats) {
  const Node& a = node_named(m, pair.a);
  const Node& b = node_named(m, pair.b);
  if (!a.has_input(2) || !b.has_input(2)) return false;
  const Tensor c = torch::clamp_min(stats.mean - 3.0 * stats.spread, 0.0);
  if (!(c > 0).any().item<bool>()) return false;
  const Tensor wb = m.initializer(b.inputs[1]);
  const int64_t axis = input_axis(b);
  // Per output channel o of B: sum over its input channels i and kernel of W_B[o, i] c_i.
  const Tensor shift = axis == 1 ? (wb * along(c, wb.dim(), 1)).flatten(1).sum(1) : wb.flatten(1).sum(1) * c;
  m.initializer(a.inputs[2]).sub_(c);
  m.initializer(b.inputs[2]).add_(shift);
  return true;
}

}  // namespace

CleResult equalize_cross_layer(GraphModule& m, const CleOptions& options) {
  torch::NoGradGuard no_grad;
  auto stats = batchnorm_stats(m);
  fold_batchnorms(m);
  CleResult result;
  const std::vector<Pair> pairs = find_pairs(m);
  for (const Pair& pair : pairs) {
    result.pairs.push_back({pair.a, pair.b});
    if (!pair.activation.empty() && node_named(m, pair.activation).op_type == "Clip") {
      replace_relu6(m, pair.activation);
      ++result.relu6_replaced;
    }
  }
  for (int64_t sweep = 0; sweep < options.sweeps; ++sweep) {
    for (const Pair& pair : pairs) equalize(m, pair, stats);
  }
  if (!options.absorb_high_bias) return result;
  for (const Pair& pair : pairs) {
    const auto it = stats.find(pair.a);
    if (it != stats.end() && absorb_high_bias(m, pair, it->second)) ++result.biases_absorbed;
  }
  return result;
}

}  // namespace qat
