#include "qat/seq_mse.h"

#include "ptq/weighted_layer.h"
#include "qat/fake_quant.h"

#include <stdexcept>

namespace qat {
namespace {

using ptq::WeightedLayer;
using torch::Tensor;

// Per-channel [min, max] of a weight along the quantizer's channel axis
// (scalars for per-tensor quantizers).
std::pair<Tensor, Tensor> weight_range(const Tensor& w, const QuantSpec& spec) {
  if (!spec.channel_axis) return {w.min(), w.max()};
  const Tensor rows = w.movedim(normalize_axis(*spec.channel_axis, w.dim()), 0).flatten(1);
  return {std::get<0>(rows.min(1)), std::get<0>(rows.max(1))};
}

// Error of `out` against `ref` per output channel (axis 1), or in total
// for a per-tensor quantizer.
Tensor channel_error(const Tensor& out, const Tensor& ref, const std::string& loss, bool per_channel) {
  const Tensor diff = out - ref;
  const Tensor e = loss == "l1" ? diff.abs() : diff.pow(2);
  if (!per_channel) return e.sum().to(torch::kDouble);
  return e.transpose(0, 1).flatten(1).sum(1).to(torch::kDouble);
}

void search_layer(const WeightedLayer& layer, const std::vector<Tensor>& inputs, const SeqMseOptions& options) {
  Quantizer& q = layer.quantizer();
  const QuantSpec spec = q.spec();
  const Tensor w = layer.weight();
  const auto [lo, hi] = weight_range(w, spec);
  std::vector<Tensor> refs;
  for (const auto& x : inputs) refs.push_back(layer.output(x, w));
  Tensor best_loss, best_fraction;
  for (int64_t i = 1; i <= options.candidates; ++i) {
    const double fraction = static_cast<double>(i) / static_cast<double>(options.candidates);
    const Encoding candidate = encoding_from_range(lo * fraction, hi * fraction, spec);
    const Tensor quantized = fake_quantize(w, candidate);
    Tensor loss;
    for (size_t b = 0; b < inputs.size(); ++b) {
      const Tensor out = layer.output(inputs[b], quantized);
      const Tensor e = channel_error(out, refs[b], options.loss, spec.channel_axis.has_value());
      loss = loss.defined() ? loss + e : e;
    }
    if (!best_loss.defined()) {
      best_loss = loss;
      best_fraction = torch::full_like(loss, fraction);
      continue;
    }
    const Tensor better = loss < best_loss;
    best_loss = torch::where(better, loss, best_loss);
    best_fraction = torch::where(better, torch::full_like(loss, fraction), best_fraction);
  }
  const Tensor f = best_fraction.to(lo.scalar_type());
  q.set_encoding(encoding_from_range(lo * f, hi * f, spec));
}

}  // namespace

void apply_seq_mse(QuantSim& sim, const std::vector<Tensor>& batches, const SeqMseOptions& options) {
  if (options.candidates < 1) {
    throw std::invalid_argument("--seq-mse-candidates " + std::to_string(options.candidates) + ": must be >= 1");
  }
  if (options.loss != "mse" && options.loss != "l1") {
    throw std::invalid_argument("--seq-mse-loss '" + options.loss + "': unknown (mse, l1)");
  }
  if (batches.empty()) throw std::invalid_argument("seq-mse: needs at least one batch");
  const auto layers = ptq::weighted_layers(sim);
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < layers.size(); ++k) {
    ptq::enable_only_weights_of(sim, layers, k);
    search_layer(layers[k], ptq::layer_inputs(sim, layers[k], batches), options);
  }
  sim.set_quantization_enabled(true);
}

}  // namespace qat
