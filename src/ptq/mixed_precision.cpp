#include "qat/mixed_precision.h"

#include "ptq/weighted_layer.h"
#include "qat/analyzers.h"
#include "qat/sensitivity.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace qat {
namespace {

std::string format_budget(double bits) {
  std::ostringstream out;
  out << bits;
  return out.str();
}

// The next narrower candidate below `bits`, or 0 when there is none.
int narrower(const std::vector<int>& sorted, int bits) {
  int best = 0;
  for (int b : sorted) {
    if (b < bits) best = b;
  }
  return best;
}

// Placement names a weight's quantizer "<node>.weight_quantizer" (and a
// bias's "<node>.bias_quantizer", which mixed precision leaves alone).
bool is_weight_quantizer(const QuantizerInfo& info) {
  const std::string suffix = ".weight_quantizer";
  return info.name.size() > suffix.size() && info.name.compare(info.name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> weighted_layer_names(QuantSim& sim) {
  std::vector<std::string> names;
  for (const auto& info : sim.quantizers()) {
    if (is_weight_quantizer(info) && std::find(names.begin(), names.end(), info.layer) == names.end()) names.push_back(info.layer);
  }
  return names;
}

int64_t weight_params(QuantSim& sim, const std::string& layer) {
  int64_t count = 0;
  for (const auto& info : sim.quantizers()) {
    if (is_weight_quantizer(info) && info.layer == layer) count += sim.model().initializer(info.tensor).numel();
  }
  return count;
}

}  // namespace

void check_mixed_precision_options(const MixedPrecisionOptions& o) {
  if (o.candidates.empty()) throw std::invalid_argument("--mp-candidates: give at least one bitwidth");
  for (int b : o.candidates) {
    if (b < 2 || b > 16) throw std::invalid_argument("--mp-candidates: " + std::to_string(b) + " is not in 2..16");
  }
  const auto [lo, hi] = std::minmax_element(o.candidates.begin(), o.candidates.end());
  if (!(o.mean_weight_bits >= *lo && o.mean_weight_bits <= *hi)) {
    throw std::invalid_argument("--mp-budget " + format_budget(o.mean_weight_bits) + ": must lie between " +
                                std::to_string(*lo) + " and " + std::to_string(*hi) + " mean weight bits");
  }
}

std::map<std::string, int> greedy_weight_bits(const std::vector<LayerNoise>& layers,
                                              const MixedPrecisionOptions& options) {
  check_mixed_precision_options(options);
  std::vector<int> sorted = options.candidates;
  std::sort(sorted.begin(), sorted.end());
  std::map<std::string, int> bits;
  for (const auto& l : layers) bits[l.layer] = sorted.back();
  while (mean_weight_bits(layers, bits) > options.mean_weight_bits + 1e-9) {
    double best_cost = std::numeric_limits<double>::infinity();
    const LayerNoise* best = nullptr;
    for (const auto& l : layers) {
      const int to = narrower(sorted, bits[l.layer]);
      if (to == 0) continue;
      const double added = l.noise.at(to) - l.noise.at(bits[l.layer]);
      const double cost = added / (static_cast<double>(l.params) * (bits[l.layer] - to));
      if (cost < best_cost) best_cost = cost, best = &l;
    }
    if (!best) break;  // every layer at the narrowest: the budget is that
    bits[best->layer] = narrower(sorted, bits[best->layer]);
  }
  return bits;
}

double mean_weight_bits(const std::vector<LayerNoise>& layers, const std::map<std::string, int>& bits) {
  double weighted = 0.0, total = 0.0;
  for (const auto& l : layers) {
    weighted += static_cast<double>(l.params) * bits.at(l.layer);
    total += static_cast<double>(l.params);
  }
  return total == 0.0 ? 0.0 : weighted / total;
}

void set_weight_bits(QuantSim& sim, const std::string& layer, int bits) {
  const auto views = ptq::weighted_layers(sim);
  bool found = false;
  for (const auto& info : sim.quantizers()) {
    if (!info.is_param || info.layer != layer || !is_weight_quantizer(info)) continue;
    found = true;
    // What the quantizer sees: the folded weight for a simulated-fold ConvBn.
    torch::Tensor weight = sim.model().initializer(info.tensor);
    for (const auto& view : views) {
      if (view.name() == layer) weight = view.weight();
    }
    Quantizer& q = sim.quantizer(info.name);
    QuantSpec spec = q.spec();
    spec.grid.bitwidth = bits;
    spec.grid.validate();
    auto analyzer = make_analyzer(q.analyzer_name(), spec.channel_axis);
    analyzer->update(weight.detach());
    q.set_encoding(analyzer->compute_encoding(spec));
  }
  if (!found) throw std::invalid_argument("--layer-bits: no weighted layer named '" + layer + "'");
}

MixedPrecisionResult choose_weight_bits(QuantSim& sim, const std::vector<data::Batch>& batches,
                                        const MixedPrecisionOptions& options) {
  check_mixed_precision_options(options);
  const auto names = weighted_layer_names(sim);
  MixedPrecisionResult result;
  for (const auto& name : names) result.layers.push_back({name, weight_params(sim, name), {}});
  for (int bits : options.candidates) {
    for (const auto& name : names) set_weight_bits(sim, name, bits);
    const SensitivityReport report = analyze_sensitivity(sim, batches);
    for (auto& layer : result.layers) {
      for (const auto& row : report.layers) {
        if (row.layer == layer.layer && row.weights) layer.noise[bits] = std::pow(10.0, -row.weights->sqnr_db / 10.0);
      }
    }
  }
  result.bits = greedy_weight_bits(result.layers, options);
  for (const auto& [name, bits] : result.bits) set_weight_bits(sim, name, bits);
  result.mean_bits = mean_weight_bits(result.layers, result.bits);
  return result;
}

}  // namespace qat
