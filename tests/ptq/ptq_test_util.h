// Shared fixtures of the PTQ tests: real Fashion-MNIST batches and a
// briefly trained ResNet-8, so that errors and accuracies are those of a
// model that has learned something from real data.
#pragma once

#include "qat/data.h"
#include "qat/quantsim.h"
#include "qat/train.h"
#include "qat/zoo.h"
#include "sim_options.h"

#include <memory>
#include <string>
#include <vector>

namespace qat::testing {

using qat::sim_options;

inline data::DataLoader fashion(data::Split split, int64_t first, int64_t count, bool shuffle) {
  data::Dataset d = data::load_fashion_mnist(split);
  d.images = d.images.slice(0, first, first + count);
  d.labels = d.labels.slice(0, first, first + count);
  data::LoaderOptions o;
  o.batch_size = 64;
  o.shuffle = shuffle;
  o.drop_last = shuffle;
  o.seed = 3;
  o.normalization = {{data::kFashionMnistMean}, {data::kFashionMnistStd}};
  return data::DataLoader(std::move(d), o);
}

inline std::vector<data::Batch> batches(data::Split split, int64_t first, int64_t count) {
  std::vector<data::Batch> out;
  for (const auto& batch : fashion(split, first, count, false)) out.push_back(batch);
  return out;
}

inline std::vector<torch::Tensor> images(const std::vector<data::Batch>& batches) {
  std::vector<torch::Tensor> out;
  for (const auto& batch : batches) out.push_back(batch.images);
  return out;
}

// ResNet-8 after `steps` SGD steps of batch 64 (about 80 % top-1 at 200).
inline std::shared_ptr<GraphModule> trained_resnet8(int64_t steps = 200) {
  ZooOptions zoo;
  zoo.seed = 1;
  auto model = make_model("resnet8", zoo);
  TrainOptions options;
  options.epochs = 1;
  options.lr = 0.05;
  options.progress = false;
  train(*model, fashion(data::Split::kTrain, 0, steps * 64, true), fashion(data::Split::kTest, 0, 64, false),
        options);
  return model;
}

inline std::unique_ptr<QuantSim> calibrated_sim(std::shared_ptr<GraphModule> model, QuantSimOptions options,
                                                const std::vector<torch::Tensor>& calibration) {
  auto sim = std::make_unique<QuantSim>(std::move(model), std::move(options), std::vector<int64_t>{1, 1, 28, 28});
  sim->compute_encodings([&](GraphModule& m) {
    for (const auto& batch : calibration) m.forward(batch);
  });
  return sim;
}

// A copy of an FP32 model (weights and buffers), so one trained model can
// seed several sims.
inline std::shared_ptr<GraphModule> clone(GraphModule& model) {
  auto copy = std::make_shared<GraphModule>(model.graph());
  for (const auto& name : model.initializer_names()) {
    copy->add_initializer(name, model.initializer(name).detach().clone(), model.is_trainable(name));
  }
  return copy;
}

}  // namespace qat::testing
