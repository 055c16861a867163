// libFuzzer target: bytes -> ONNX import -> one forward pass.
//
// The forward pass matters: the importer only builds the graph, while
// attributes and shapes (strides, axes, pads) are first used by the
// kernels. Inputs are zeros of the declared shape, capped in size so that
// a fuzzed shape cannot exhaust memory.
#include "fuzz_common.h"
#include "qat/onnx_import.h"

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace {

constexpr int64_t kMaxInputElements = 1 << 14;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qat::fuzz::expect_clean_error([&] {
    auto model = qat::import_onnx_bytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz.onnx");
    std::vector<torch::Tensor> inputs;
    for (const auto& input : model->graph().inputs) {
      int64_t elements = 1;
      for (int64_t d : input.shape) {
        if (d < 0 || d > kMaxInputElements) return;
        elements *= d;
        if (elements > kMaxInputElements) return;
      }
      inputs.push_back(torch::zeros(input.shape, torch::TensorOptions().dtype(input.dtype)));
    }
    torch::NoGradGuard no_grad;
    model->eval();
    model->run(inputs);
  });
  return 0;
}
