#include "qat/adaround.h"

#include "ptq/weighted_layer.h"

#include <torch/autograd.h>
#include <torch/optim/adam.h>

#include <cmath>
#include <stdexcept>

namespace qat {
namespace {

using ptq::WeightedLayer;
using torch::Tensor;

constexpr double kZeta = 1.1;
constexpr double kGamma = -0.1;

// The rectified sigmoid: the soft rounding offset in [0, 1].
Tensor soft_offset(const Tensor& v) { return torch::clamp(torch::sigmoid(v) * (kZeta - kGamma) + kGamma, 0.0, 1.0); }

// The weight on the grid for a rounding offset (soft or 0/1).
struct Grid {
  Tensor scale, zero_point, floor;
  double qmin, qmax;

  Tensor weight(const Tensor& offset) const {
    return (torch::clamp(floor + offset + zero_point, qmin, qmax) - zero_point) * scale;
  }
};

Grid grid_of(const Tensor& w, const Encoding& enc) {
  const Tensor s = broadcast_along(enc.scale, w.dim(), enc.spec.channel_axis);
  const Tensor z = broadcast_along(enc.zero_point, w.dim(), enc.spec.channel_axis);
  return {s, z, torch::floor(w / s),
          static_cast<double>(enc.spec.grid.qmin()), static_cast<double>(enc.spec.grid.qmax())};
}

// beta for iteration t: constant until warm-up ends, then cosine decay.
double beta_at(int64_t t, const AdaRoundOptions& o) {
  const double warm = o.warm_start * static_cast<double>(o.iterations);
  const double progress = (static_cast<double>(t) - warm) / (static_cast<double>(o.iterations) - warm);
  return o.beta_end + 0.5 * (o.beta_start - o.beta_end) * (1.0 + std::cos(progress * std::acos(-1.0)));
}

void round_layer(const WeightedLayer& layer, const Tensor& inputs, const Tensor& targets, const AdaRoundOptions& o) {
  const Tensor w = layer.weight().detach();
  const Grid grid = grid_of(w, layer.quantizer().encoding());
  // V with h(V) = the fractional part, so that training starts at W~ = W.
  const Tensor rest = (w / grid.scale - grid.floor).clamp(1e-4, 1.0 - 1e-4);
  Tensor v = (-torch::log((kZeta - kGamma) / (rest - kGamma) - 1.0)).detach().requires_grad_(true);
  torch::optim::Adam optimizer({v}, torch::optim::AdamOptions(o.lr));
  const int64_t n = inputs.size(0);
  for (int64_t t = 0; t < o.iterations; ++t) {
    const Tensor index = torch::randperm(n, torch::kLong).slice(0, 0, std::min(o.batch_size, n));
    const Tensor h = soft_offset(v);
    const Tensor out = layer.output(inputs.index_select(0, index), grid.weight(h));
    Tensor loss = (out - targets.index_select(0, index)).pow(2).sum(1).mean();
    if (t >= static_cast<int64_t>(o.warm_start * static_cast<double>(o.iterations))) {
      loss = loss + o.reg_param * (1.0 - (2.0 * h - 1.0).abs().pow(beta_at(t, o))).sum();
    }
    // Gradient for V only: the model's parameters must not collect any.
    v.mutable_grad() = torch::autograd::grad({loss}, {v})[0];
    optimizer.step();
  }
  torch::NoGradGuard no_grad;
  layer.set_weight(grid.weight((v >= 0).to(w.scalar_type())));
}

}  // namespace

void apply_adaround(QuantSim& sim, const std::vector<Tensor>& batches, const AdaRoundOptions& options) {
  if (options.iterations < 1) {
    throw std::invalid_argument("--adaround-iters " + std::to_string(options.iterations) + ": must be >= 1");
  }
  if (options.batch_size < 1) throw std::invalid_argument("adaround: batch size must be >= 1");
  if (batches.empty()) throw std::invalid_argument("adaround: needs at least one batch");
  torch::manual_seed(options.seed);
  const auto layers = ptq::weighted_layers(sim);
  GraphModule& m = sim.model();
  const bool was_training = m.is_training();
  m.eval();
  for (size_t k = 0; k < layers.size(); ++k) {
    Tensor targets;
    {
      torch::NoGradGuard no_grad;
      sim.set_quantization_enabled(false);
      std::vector<Tensor> outputs;
      for (const auto& x : ptq::layer_inputs(sim, layers[k], batches)) {
        outputs.push_back(layers[k].output(x, layers[k].weight()));
      }
      targets = torch::cat(outputs);
    }
    ptq::enable_only_weights_of(sim, layers, k);
    const Tensor inputs = torch::cat(ptq::layer_inputs(sim, layers[k], batches));
    round_layer(layers[k], inputs, targets, options);
  }
  sim.set_quantization_enabled(true);
  m.train(was_training);
}

}  // namespace qat
