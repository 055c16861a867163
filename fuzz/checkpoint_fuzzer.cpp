// libFuzzer target: bytes -> checkpoint loader (model, optimizer, RNG and
// history) for the small model. load_checkpoint takes a path, so each
// input goes through a file of this process's own.
#include "fuzz_common.h"
#include "qat/train.h"

#include <torch/optim/sgd.h>

#include <unistd.h>

#include <fstream>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto model = qat::fuzz::tiny_model();
  static torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  static const std::string path = "/tmp/qat_checkpoint_fuzz_" + std::to_string(::getpid()) + ".pt";
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), size);
  qat::fuzz::expect_clean_error([&] { qat::load_checkpoint(path, *model, sgd); });
  return 0;
}
