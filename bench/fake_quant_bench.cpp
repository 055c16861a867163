// Fake-quant throughput: qat's kernels against ATen's reference ops on an
// activation-sized tensor (64 x 64 x 56 x 56 float32, 12.8M elements).
//
// Variants (each as <variant>/<pass>/<impl>):
//   ste_per_tensor   qat::fake_quantize          at::fake_quantize_per_tensor_affine
//   ste_per_channel  qat::fake_quantize, axis 1  at::fake_quantize_per_channel_affine
//   lsq_per_tensor   qat::fake_quantize_learnable   at::_fake_quantize_learnable_per_tensor_affine
//   lsq_per_channel  qat::fake_quantize_learnable   at::_fake_quantize_learnable_per_channel_affine
// passes: fwd (no autograd) and fwd_bwd (forward, then torch::autograd::grad
// with a fixed random output gradient; for LSQ the gradients of x, scale and
// zero point). All use uint8 asymmetric encodings, so part of the values clamp.
//
// Times are wall-clock (UseRealTime): the kernels run on LibTorch's intra-op
// pool, set at start by qat::configure_threads() ($QAT_NUM_THREADS or every
// core). items/s counts tensor elements.
//
// Extra flag: --rss_once=<variant>/<pass>/<impl> runs that variant once and
// exits without benchmarking (for `/usr/bin/time -v`); --rss_once=none only
// allocates the inputs (the baseline).
#include "qat/fake_quant.h"
#include "qat/threads.h"

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstring>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

namespace {

using torch::Tensor;

constexpr int64_t kQmin = 0, kQmax = 255;
constexpr int64_t kAxis = 1;
const std::vector<int64_t> kShape{64, 64, 56, 56};

qat::QuantSpec spec(bool per_channel) {
  qat::QuantSpec s;
  s.grid = {8, false, false};
  if (per_channel) s.channel_axis = kAxis;
  return s;
}

// Inputs shared by every variant, built once with a fixed seed.
struct Inputs {
  Tensor x;          // requires grad
  Tensor grad_out;   // fixed random output gradient
  double scale = 0.02;
  int64_t zero_point = 128;
  Tensor ch_scale, ch_zero_point;  // [C] float; zero points hold integers
  Tensor ch_zero_point_int;        // [C] int32, for ATen's STE op
  double grad_factor_tensor = 1.0, grad_factor_channel = 1.0;

  Inputs() {
    torch::manual_seed(0);
    x = torch::randn(kShape).requires_grad_();
    grad_out = torch::randn(kShape);
    const int64_t channels = kShape[kAxis];
    ch_scale = torch::rand({channels}) * 0.03 + 0.005;
    ch_zero_point = torch::randint(96, 160, {channels}).to(torch::kFloat);
    ch_zero_point_int = ch_zero_point.to(torch::kInt);
    grad_factor_tensor = qat::lsq_grad_factor(x, spec(false));
    grad_factor_channel = qat::lsq_grad_factor(x, spec(true));
  }
};

Inputs& inputs() {
  static Inputs in;
  return in;
}

// One variant: builds its parameters (leaf tensors that require grad for
// LSQ) and maps x to the fake-quantized output.
struct Variant {
  std::string name;  // <variant>/<impl>
  std::function<Tensor(const Tensor& x, const std::vector<Tensor>& params)> op;
  std::function<std::vector<Tensor>()> make_params;  // differentiable params (LSQ), else empty
};

std::vector<Variant> variants() {
  Inputs& in = inputs();
  std::vector<Variant> v;
  const auto none = [] { return std::vector<Tensor>{}; };

  v.push_back({"ste_per_tensor/qat",
               [&in](const Tensor& x, const std::vector<Tensor>&) {
                 return qat::fake_quantize(x, qat::Encoding{spec(false), torch::tensor(static_cast<float>(in.scale)),
                                                            torch::tensor(static_cast<float>(in.zero_point))});
               },
               none});
  v.push_back({"ste_per_tensor/aten",
               [&in](const Tensor& x, const std::vector<Tensor>&) {
                 return at::fake_quantize_per_tensor_affine(x, in.scale, in.zero_point, kQmin, kQmax);
               },
               none});
  v.push_back({"ste_per_channel/qat",
               [&in](const Tensor& x, const std::vector<Tensor>&) {
                 return qat::fake_quantize(x, qat::Encoding{spec(true), in.ch_scale, in.ch_zero_point});
               },
               none});
  v.push_back({"ste_per_channel/aten",
               [&in](const Tensor& x, const std::vector<Tensor>&) {
                 return at::fake_quantize_per_channel_affine(x, in.ch_scale, in.ch_zero_point_int, kAxis, kQmin,
                                                             kQmax);
               },
               none});

  // LSQ: qat takes [] parameters per tensor, ATen a one-element [1].
  const auto tensor_params = [&in](std::vector<int64_t> shape) {
    return [&in, shape] {
      return std::vector<Tensor>{torch::full(shape, in.scale).requires_grad_(),
                                 torch::full(shape, static_cast<double>(in.zero_point)).requires_grad_()};
    };
  };
  const auto channel_params = [&in] {
    return std::vector<Tensor>{in.ch_scale.clone().requires_grad_(), in.ch_zero_point.clone().requires_grad_()};
  };
  v.push_back({"lsq_per_tensor/qat",
               [&in](const Tensor& x, const std::vector<Tensor>& p) {
                 return qat::fake_quantize_learnable(x, p[0], p[1], spec(false), in.grad_factor_tensor);
               },
               tensor_params({})});
  v.push_back({"lsq_per_tensor/aten",
               [&in](const Tensor& x, const std::vector<Tensor>& p) {
                 return at::_fake_quantize_learnable_per_tensor_affine(x, p[0], p[1], kQmin, kQmax,
                                                                       in.grad_factor_tensor);
               },
               tensor_params({1})});
  v.push_back({"lsq_per_channel/qat",
               [&in](const Tensor& x, const std::vector<Tensor>& p) {
                 return qat::fake_quantize_learnable(x, p[0], p[1], spec(true), in.grad_factor_channel);
               },
               channel_params});
  v.push_back({"lsq_per_channel/aten",
               [&in](const Tensor& x, const std::vector<Tensor>& p) {
                 return at::_fake_quantize_learnable_per_channel_affine(x, p[0], p[1], kAxis, kQmin, kQmax,
                                                                        in.grad_factor_channel);
               },
               channel_params});
  return v;
}

// "<variant>/<pass>/<impl>" from "<variant>/<impl>".
std::string full_name(const std::string& name, const char* pass) {
  const auto slash = name.find('/');
  return name.substr(0, slash) + "/" + pass + name.substr(slash);
}

// Forward without autograd.
void run_forward(const Variant& v, const std::vector<Tensor>& params) {
  torch::NoGradGuard no_grad;
  Tensor y = v.op(inputs().x, params);
  benchmark::DoNotOptimize(y.data_ptr());
}

// Forward and backward; gradients are returned, not accumulated into .grad.
void run_forward_backward(const Variant& v, const std::vector<Tensor>& params) {
  Inputs& in = inputs();
  Tensor y = v.op(in.x, params);
  std::vector<Tensor> wrt{in.x};
  wrt.insert(wrt.end(), params.begin(), params.end());
  const auto grads = torch::autograd::grad({y}, wrt, {in.grad_out});
  benchmark::DoNotOptimize(grads[0].data_ptr());
}

void register_all() {
  const int64_t numel = inputs().x.numel();
  for (const Variant& v : variants()) {
    for (const bool backward : {false, true}) {
      benchmark::RegisterBenchmark(full_name(v.name, backward ? "fwd_bwd" : "fwd").c_str(),
                                   [v, backward, numel](benchmark::State& state) {
                                     const std::vector<Tensor> params = v.make_params();
                                     for (auto _ : state) {
                                       if (backward) run_forward_backward(v, params);
                                       else run_forward(v, params);
                                     }
                                     state.SetItemsProcessed(state.iterations() * numel);
                                   })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
}

// Forward outputs of each qat/ATen pair must agree bit for bit, else the
// comparison is between different computations.
bool forward_outputs_match() {
  const auto all = variants();
  bool ok = true;
  for (size_t i = 0; i + 1 < all.size(); i += 2) {
    torch::NoGradGuard no_grad;
    const Tensor a = all[i].op(inputs().x, all[i].make_params());
    const Tensor b = all[i + 1].op(inputs().x, all[i + 1].make_params());
    if (!torch::equal(a, b)) {
      std::cerr << "warning: " << all[i].name << " and " << all[i + 1].name << " disagree\n";
      ok = false;
    }
  }
  return ok;
}

// --rss_once=NAME: one run of NAME (or only the inputs for "none").
int rss_once(const std::string& name) {
  Inputs& in = inputs();
  if (name == "none") {
    benchmark::DoNotOptimize(in.x.data_ptr());
    return 0;
  }
  for (const Variant& v : variants()) {
    for (const bool backward : {false, true}) {
      if (full_name(v.name, backward ? "fwd_bwd" : "fwd") != name) continue;
      const auto params = v.make_params();
      if (backward) run_forward_backward(v, params);
      else run_forward(v, params);
      return 0;
    }
  }
  std::cerr << "unknown variant " << name << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = qat::configure_threads();
  for (int i = 1; i < argc; ++i) {
    constexpr const char* kFlag = "--rss_once=";
    if (std::strncmp(argv[i], kFlag, std::strlen(kFlag)) == 0) return rss_once(argv[i] + std::strlen(kFlag));
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("intra_op_threads", std::to_string(threads));
  benchmark::AddCustomContext("tensor", "64x64x56x56 float32");
  benchmark::AddCustomContext("forward_outputs_match", forward_outputs_match() ? "yes" : "NO");
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
