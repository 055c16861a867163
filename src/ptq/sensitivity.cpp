#include "qat/sensitivity.h"

#include "sim/absorb_activations.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>

namespace qat {
namespace {

using torch::Tensor;

struct Outcome {
  std::vector<Tensor> logits;
  double accuracy = 0.0;
};

Outcome run_batches(GraphModule& m, const std::vector<data::Batch>& batches) {
  Outcome out;
  int64_t correct = 0, total = 0;
  for (const auto& batch : batches) {
    Tensor logits = m.forward(batch.images);
    correct += logits.argmax(1).eq(batch.labels).sum().item<int64_t>();
    total += batch.labels.size(0);
    out.logits.push_back(logits.to(torch::kDouble));
  }
  out.accuracy = total == 0 ? 0.0 : static_cast<double>(correct) / static_cast<double>(total);
  return out;
}

// One SQNR over all batches: total signal over total noise.
double sqnr_db(const std::vector<Tensor>& reference, const std::vector<Tensor>& noisy) {
  double signal = 0.0, noise = 0.0;
  for (size_t i = 0; i < reference.size(); ++i) {
    signal += reference[i].pow(2).sum().item<double>();
    noise += (reference[i] - noisy[i]).pow(2).sum().item<double>();
  }
  return noise == 0.0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(signal / noise);
}

// Quantizer names per layer and part, layers in graph order (the graph
// input, which no node produces, first).
struct LayerQuantizers {
  std::string layer;
  std::vector<std::string> weights, activations;
};

std::vector<LayerQuantizers> group_by_layer(QuantSim& sim) {
  std::map<std::string, LayerQuantizers> by_layer;
  for (const auto& info : sim.quantizers()) {
    auto& entry = by_layer[info.layer];
    entry.layer = info.layer;
    (info.is_param ? entry.weights : entry.activations).push_back(info.name);
  }
  const Graph& g = sim.model().graph();
  // An absorbed activation is found by the quantizer node that took its place.
  auto position = [&](const std::string& layer) -> int64_t {
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (g.nodes[i].name == layer || g.nodes[i].attr_string(kActivationNodeAttr, "") == layer) {
        return static_cast<int64_t>(i);
      }
    }
    return -1;
  };
  std::vector<LayerQuantizers> layers;
  for (auto& entry : by_layer) layers.push_back(std::move(entry.second));
  std::stable_sort(layers.begin(), layers.end(),
                   [&](const auto& a, const auto& b) { return position(a.layer) < position(b.layer); });
  return layers;
}

class Analysis {
 public:
  Analysis(QuantSim& sim, const std::vector<data::Batch>& batches) : sim_(sim), batches_(batches) {}

  SensitivityReport run() {
    SensitivityReport report;
    sim_.set_quantization_enabled(false);
    fp32_ = run_batches(sim_.model(), batches_);
    report.fp32_accuracy = fp32_.accuracy;
    sim_.set_quantization_enabled(true);
    report.quantized_accuracy = run_batches(sim_.model(), batches_).accuracy;
    for (const auto& group : group_by_layer(sim_)) {
      LayerSensitivity row;
      row.layer = group.layer;
      if (!group.weights.empty()) row.weights = effect_of(group.weights);
      if (!group.activations.empty()) row.activations = effect_of(group.activations);
      report.layers.push_back(row);
    }
    sim_.set_quantization_enabled(true);
    return report;
  }

 private:
  QuantEffect effect_of(const std::vector<std::string>& quantizers) {
    sim_.set_quantization_enabled(false);
    for (const auto& name : quantizers) sim_.quantizer(name).set_enabled(true);
    const Outcome outcome = run_batches(sim_.model(), batches_);
    return {sqnr_db(fp32_.logits, outcome.logits), fp32_.accuracy - outcome.accuracy};
  }

  QuantSim& sim_;
  const std::vector<data::Batch>& batches_;
  Outcome fp32_;
};

}  // namespace

double LayerSensitivity::accuracy_drop() const {
  double drop = -std::numeric_limits<double>::infinity();
  if (weights) drop = std::max(drop, weights->accuracy_drop);
  if (activations) drop = std::max(drop, activations->accuracy_drop);
  return drop;
}

double LayerSensitivity::sqnr_db() const {
  double sqnr = std::numeric_limits<double>::infinity();
  if (weights) sqnr = std::min(sqnr, weights->sqnr_db);
  if (activations) sqnr = std::min(sqnr, activations->sqnr_db);
  return sqnr;
}

SensitivityReport analyze_sensitivity(QuantSim& sim, const std::vector<data::Batch>& batches) {
  if (batches.empty()) throw std::invalid_argument("sensitivity analysis needs at least one batch");
  GraphModule& m = sim.model();
  const bool was_training = m.is_training();
  m.eval();
  torch::NoGradGuard no_grad;
  SensitivityReport report = Analysis(sim, batches).run();
  m.train(was_training);
  return report;
}

std::vector<LayerSensitivity> rank_by_sensitivity(std::vector<LayerSensitivity> layers) {
  std::stable_sort(layers.begin(), layers.end(), [](const auto& a, const auto& b) {
    if (a.sqnr_db() != b.sqnr_db()) return a.sqnr_db() < b.sqnr_db();
    return a.accuracy_drop() > b.accuracy_drop();
  });
  return layers;
}

std::vector<std::string> top_weighted_layers(const std::vector<LayerSensitivity>& ranking, int64_t k) {
  std::vector<std::string> weighted;
  for (const auto& row : ranking) {
    if (row.weights) weighted.push_back(row.layer);
  }
  if (k < 1 || k > static_cast<int64_t>(weighted.size())) {
    throw std::invalid_argument("--top-k " + std::to_string(k) + ": must be between 1 and " +
                                std::to_string(weighted.size()) + " (the layers with weights)");
  }
  weighted.resize(static_cast<size_t>(k));
  return weighted;
}

}  // namespace qat
