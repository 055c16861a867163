// Writes the seed inputs that only qat itself can produce, for the small
// model the fuzzers use: a checkpoint (with optimizer momentum) and
// encodings files in both versions. Rerun when those formats change:
//   build-san/fuzz/make_seeds fuzz/corpus
#include "fuzz_common.h"
#include "qat/encodings.h"
#include "qat/quantsim.h"
#include "qat/train.h"

#include <torch/optim/sgd.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::filesystem::create_directories(dir + "/checkpoint");
  std::filesystem::create_directories(dir + "/encodings");

  auto model = qat::fuzz::tiny_model();
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  model->forward(torch::randn({2, 1, 8, 8})).sum().backward();
  sgd.step();
  qat::save_checkpoint(dir + "/checkpoint/tiny_model.pt", *model, sgd, qat::TrainState{1, {{1, 0.1, 2.3, 0.1, 0.1, 1.0}}, "tag"});

  qat::QuantSim sim(qat::fuzz::tiny_model(), qat::QuantSimOptions{}, {1, 1, 8, 8});
  sim.compute_encodings([](qat::GraphModule& m) { m.forward(torch::randn({4, 1, 8, 8})); });
  qat::save_encodings(sim, dir + "/encodings/tiny_model_1.0.0.json", qat::EncodingsVersion::k1_0_0);
  qat::save_encodings(sim, dir + "/encodings/tiny_model_0.6.1.json", qat::EncodingsVersion::k0_6_1);
  return 0;
}
