// Training and evaluation loops for GraphModules on image classification
// data, and checkpoints that resume exactly.
#pragma once

#include "qat/data.h"
#include "qat/graph.h"

#include <torch/optim/optimizer.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace qat {

struct EvalResult {
  double loss = 0.0;      // mean cross-entropy
  double accuracy = 0.0;  // top-1, in [0, 1]
  int64_t samples = 0;
};

// Runs the model in eval mode without autograd over one pass of `loader`.
EvalResult evaluate(GraphModule& model, const data::DataLoader& loader, const std::string& label = "eval",
                    bool progress = true);

// What train() does when a step's loss or a gradient is NaN or Inf.
enum class NonFinitePolicy {
  kStop,  // throw std::runtime_error naming the step (and parameter)
  kSkip,  // warn, drop the step's update and go on
};

struct TrainOptions {
  int64_t epochs = 10;
  double lr = 0.05;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  // "cosine": lr * (1 + cos(pi * epoch / epochs)) / 2; "step": lr is
  // multiplied by step_gamma every step_epochs; "constant".
  std::string schedule = "cosine";
  int64_t step_epochs = 1;
  double step_gamma = 0.1;
  double grad_clip_norm = 0.0;  // 0 disables clipping
  // Training batches per epoch (0: the whole training split). A budget for
  // quick runs; the epoch still ends with a full test evaluation.
  int64_t steps_per_epoch = 0;
  NonFinitePolicy on_nonfinite = NonFinitePolicy::kStop;
  bool progress = true;
  // Directory for checkpoint.pt (written after every epoch) and resume.
  std::string out_dir;
  bool resume = false;

  // QAT: quantizer encodings train in their own parameter group, with
  // their own learning rate (0: same as lr) and no weight decay.
  std::vector<torch::Tensor> encoding_parameters;
  double encoding_lr = 0.0;
  // Called before each epoch (0-based), e.g. to freeze BN statistics.
  std::function<void(int64_t epoch)> on_epoch_start;
  // Stored in the checkpoint and compared on resume, so a checkpoint of a
  // differently configured quantsim is refused (QuantSim::describe()).
  std::string checkpoint_tag;
  // Knowledge distillation: with a teacher (e.g. the FP32 model a QAT run
  // starts from) and distill_weight > 0, the training loss is
  // cross-entropy + distill_weight * distillation_loss(student, teacher,
  // distill_temperature), the teacher running in eval mode without
  // autograd. The reported train loss is that sum.
  std::shared_ptr<GraphModule> teacher;
  double distill_weight = 0.0;
  double distill_temperature = 1.0;
  // A term added to every step's loss (QAT: oscillation dampening), given
  // the fraction of training done before the step, for weights annealed
  // over the run. The reported train loss includes it.
  std::function<torch::Tensor(double progress)> regularizer;
};

struct EpochStats {
  int64_t epoch = 0;  // 1-based
  double lr = 0.0;
  double train_loss = 0.0;
  double train_accuracy = 0.0;
  double test_accuracy = 0.0;
  double seconds = 0.0;
};

// What a checkpoint records besides tensors.
struct TrainState {
  int64_t epochs_done = 0;
  std::vector<EpochStats> history;
  std::string tag;  // TrainOptions::checkpoint_tag
};

double scheduled_lr(const TrainOptions& options, int64_t epoch_index);

// T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the
// batch: the soft-target loss of knowledge distillation (Hinton et al.,
// NNCF's "softmax" distillation loss). The T^2 keeps its gradient's scale
// independent of T. Gradients flow to the student logits only.
torch::Tensor distillation_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                                double temperature);

// SGD with momentum and weight decay; evaluates on `test` after each epoch.
// With options.resume and a checkpoint in out_dir, continues after its last
// finished epoch and reproduces the uninterrupted run exactly.
std::vector<EpochStats> train(GraphModule& model, const data::DataLoader& train_loader,
                              const data::DataLoader& test_loader, const TrainOptions& options);

// Writes model parameters, optimizer state, the global RNG state and
// `state` to path + ".tmp", syncs it, then renames it over `path`, so a
// crash leaves either the old or the new checkpoint, never half of one.
void save_checkpoint(const std::string& path, GraphModule& model, const torch::optim::Optimizer& optimizer,
                     const TrainState& state);
// Restores what save_checkpoint wrote; a missing, corrupt or mismatched
// file throws std::runtime_error naming the path.
TrainState load_checkpoint(const std::string& path, GraphModule& model, torch::optim::Optimizer& optimizer);
// Restores only the model's tensors (e.g. an FP32 run's weights before PTQ).
void load_checkpoint_weights(const std::string& path, GraphModule& model);

}  // namespace qat
