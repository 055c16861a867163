// The qat command line. Each subcommand is one pipeline stage; `demo` runs
// every stage that exists end to end on Fashion-MNIST.
#include "qat/encoding.h"
#include "qat/fake_quant.h"
#include "qat/threads.h"

#include <CLI/CLI.hpp>

#include <iostream>
#include <optional>

namespace {

// The demo grows with the pipeline; until the graph IR and data loaders
// land it exercises the quantization core on a random tensor and says
// which stages are still missing.
int run_demo() {
  std::cout << "qat demo: Fashion-MNIST quantization-aware training pipeline\n";
  torch::manual_seed(0);
  const torch::Tensor x = torch::randn({64, 16, 28, 28});
  for (int bits : {8, 4}) {
    qat::QuantSpec spec;
    spec.grid = {bits, /*is_signed=*/true, /*narrow_range=*/false};
    spec.symmetric = true;
    const auto enc = qat::encoding_from_range(x.min().item<double>(), x.max().item<double>(), spec);
    const torch::Tensor err = qat::fake_quantize(x, enc) - x;
    const double sqnr = 10.0 * std::log10(x.pow(2).mean().item<double>() / err.pow(2).mean().item<double>());
    std::cout << "  [done] fake-quant core    " << enc.to_string() << "  SQNR " << sqnr << " dB\n";
  }
  for (const char* stage : {"FP32 training (graph IR, Fashion-MNIST loader)", "PTQ calibration",
                            "QAT", "ONNX QDQ export and validation"}) {
    std::cout << "  [todo] " << stage << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qat: quantization-aware training for LibTorch models"};
  app.require_subcommand(1);
  std::optional<int> threads;
  app.add_option("--threads", threads, "intra-op threads (default: $QAT_NUM_THREADS or all cores)");
  auto* demo = app.add_subcommand("demo", "run the end-to-end Fashion-MNIST QAT pipeline");
  CLI11_PARSE(app, argc, argv);
  try {
    const int used = qat::configure_threads(threads);
    std::cout << "threads: " << used << "\n";
    if (demo->parsed()) return run_demo();
  } catch (const std::exception& e) {
    std::cerr << "qat: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
