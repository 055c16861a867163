#include "qat/progress.h"
#include "qat/train.h"

#include <torch/nn/functional/loss.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

namespace qat {
namespace {

// Weights in one group; encodings (if any) in a second one with their own
// learning rate and no weight decay (decay would shrink ranges).
std::vector<torch::optim::OptimizerParamGroup> parameter_groups(GraphModule& model, const TrainOptions& o) {
  std::vector<torch::Tensor> weights;
  for (const auto& p : model.parameters()) {
    bool is_encoding = false;
    for (const auto& e : o.encoding_parameters) is_encoding = is_encoding || e.is_same(p);
    if (p.requires_grad() && !is_encoding) weights.push_back(p);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(weights);
  if (!o.encoding_parameters.empty()) {
    auto options = std::make_unique<torch::optim::SGDOptions>(o.encoding_lr > 0 ? o.encoding_lr : o.lr);
    options->momentum(o.momentum).weight_decay(0.0);
    groups.emplace_back(o.encoding_parameters, std::move(options));
  }
  return groups;
}

// "epoch 2, batch 17 (step 49)": where a non-finite value appeared.
std::string step_name(int64_t epoch, int64_t batch, int64_t step) {
  return "epoch " + std::to_string(epoch) + ", batch " + std::to_string(batch) + " (step " + std::to_string(step) + ")";
}

// The first trainable parameter whose gradient holds a NaN or Inf, or "".
// One reduction per parameter and a single host sync for the whole model.
std::string nonfinite_gradient(GraphModule& model) {
  std::vector<std::string> names;
  std::vector<torch::Tensor> finite;
  for (const auto& p : model.named_parameters()) {
    if (!p.value().grad().defined()) continue;
    names.push_back(p.key());
    finite.push_back(p.value().grad().isfinite().all());
  }
  if (finite.empty() || torch::stack(finite).all().item<bool>()) return "";
  for (size_t i = 0; i < finite.size(); ++i) {
    if (!finite[i].item<bool>()) return names[i];
  }
  return "";
}

// A NaN or Inf would silently destroy every weight on the next step:
// kStop throws before it, kSkip warns and the caller drops the update.
void report_nonfinite(NonFinitePolicy policy, const std::string& what, const std::string& where) {
  if (policy == NonFinitePolicy::kStop) {
    throw std::runtime_error(what + " at " + where + "; stopping before the weights are damaged "
                             "(--on-nonfinite skip drops such steps instead)");
  }
  std::fprintf(stderr, "\nwarning: %s at %s; skipping this step\n", what.c_str(), where.c_str());
}

// Cross-entropy, plus the distillation term when options ask for one.
torch::Tensor training_loss(const torch::Tensor& logits, const data::Batch& batch, const TrainOptions& options) {
  torch::Tensor loss = torch::nn::functional::cross_entropy(logits, batch.labels);
  if (!options.teacher || options.distill_weight == 0.0) return loss;
  torch::Tensor teacher_logits;
  {
    torch::NoGradGuard no_grad;
    teacher_logits = options.teacher->forward(batch.images);
  }
  return loss + options.distill_weight * distillation_loss(logits, teacher_logits, options.distill_temperature);
}

}  // namespace

EvalResult evaluate(GraphModule& model, const data::DataLoader& loader, const std::string& label, bool progress) {
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  EvalResult result;
  double loss_sum = 0.0;
  int64_t correct = 0;
  ProgressBar bar(label, loader.num_batches(), progress);
  int64_t done = 0;
  for (const data::Batch& batch : loader) {
    const torch::Tensor logits = model.forward(batch.images);
    loss_sum += torch::nn::functional::cross_entropy(logits, batch.labels,
                                                     torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += logits.argmax(1).eq(batch.labels).sum().item<int64_t>();
    result.samples += batch.labels.size(0);
    bar.update(++done, "acc " + percent(static_cast<double>(correct) / static_cast<double>(result.samples)));
  }
  result.loss = loss_sum / static_cast<double>(std::max<int64_t>(result.samples, 1));
  result.accuracy = static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(result.samples, 1));
  bar.finish("acc " + percent(result.accuracy));
  model.train(was_training);
  return result;
}

torch::Tensor distillation_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                                double temperature) {
  const torch::Tensor log_student = torch::log_softmax(student_logits / temperature, 1);
  const torch::Tensor log_teacher = torch::log_softmax(teacher_logits.detach() / temperature, 1);
  return (log_teacher.exp() * (log_teacher - log_student)).sum(1).mean() * (temperature * temperature);
}

double scheduled_lr(const TrainOptions& o, int64_t epoch_index) {
  if (o.schedule == "constant") return o.lr;
  if (o.schedule == "step") {
    return o.lr * std::pow(o.step_gamma, static_cast<double>(epoch_index / std::max<int64_t>(o.step_epochs, 1)));
  }
  if (o.schedule == "cosine") {
    return o.lr * 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(epoch_index) / static_cast<double>(o.epochs)));
  }
  throw std::invalid_argument("unknown lr schedule '" + o.schedule + "' (cosine, step, constant)");
}

std::vector<EpochStats> train(GraphModule& model, const data::DataLoader& train_loader,
                              const data::DataLoader& test_loader, const TrainOptions& options) {
  scheduled_lr(options, 0);  // rejects a bad schedule before any work
  if (options.distill_weight < 0 || !(options.distill_temperature > 0)) {
    throw std::invalid_argument("distillation needs a weight >= 0 and a temperature > 0, got " +
                                fixed(options.distill_weight, 3) + " and " + fixed(options.distill_temperature, 3));
  }
  if (options.distill_weight > 0 && !options.teacher) {
    throw std::invalid_argument("distillation weight " + fixed(options.distill_weight, 3) + " without a teacher model");
  }
  if (options.teacher) options.teacher->eval();
  torch::optim::SGD optimizer(parameter_groups(model, options), torch::optim::SGDOptions(options.lr)
                                                                     .momentum(options.momentum)
                                                                     .weight_decay(options.weight_decay));
  // The encoding group's lr follows the same schedule, scaled.
  const double encoding_ratio = options.encoding_lr > 0 ? options.encoding_lr / options.lr : 1.0;
  const std::string checkpoint = options.out_dir.empty() ? "" : options.out_dir + "/checkpoint.pt";
  if (!checkpoint.empty()) std::filesystem::create_directories(options.out_dir);
  TrainState state;
  state.tag = options.checkpoint_tag;
  if (options.resume && !checkpoint.empty() && std::filesystem::exists(checkpoint)) {
    state = load_checkpoint(checkpoint, model, optimizer);
    if (state.tag != options.checkpoint_tag) {
      throw std::runtime_error(checkpoint + ": checkpoint was written for a different quantsim configuration");
    }
    std::fprintf(stderr, "resuming %s after epoch %ld\n", checkpoint.c_str(), static_cast<long>(state.epochs_done));
  }
  for (int64_t epoch = state.epochs_done; epoch < options.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    const double lr = scheduled_lr(options, epoch);
    for (size_t g = 0; g < optimizer.param_groups().size(); ++g) {
      optimizer.param_groups()[g].options().set_lr(g == 0 ? lr : lr * encoding_ratio);
    }
    if (options.on_epoch_start) options.on_epoch_start(epoch);
    model.train();
    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0, index = 0, skipped = 0;
    const int64_t steps = options.steps_per_epoch > 0
                              ? std::min(options.steps_per_epoch, train_loader.num_batches())
                              : train_loader.num_batches();
    ProgressBar bar("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(options.epochs), steps,
                    options.progress);
    for (auto it = train_loader.begin(epoch); index < steps && it != train_loader.end(); ++it, ++index) {
      const data::Batch batch = *it;
      optimizer.zero_grad();
      const torch::Tensor logits = model.forward(batch.images);
      const int64_t step = epoch * steps + index;
      torch::Tensor loss = training_loss(logits, batch, options);
      if (options.regularizer) {
        loss = loss + options.regularizer(static_cast<double>(step) / static_cast<double>(options.epochs * steps));
      }
      const double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value)) {
        report_nonfinite(options.on_nonfinite, "loss is " + fixed(loss_value, 3), step_name(epoch + 1, index, step));
        ++skipped;
        continue;
      }
      loss.backward();
      const std::string bad_gradient = nonfinite_gradient(model);
      if (!bad_gradient.empty()) {
        report_nonfinite(options.on_nonfinite, "gradient of '" + bad_gradient + "' is not finite",
                         step_name(epoch + 1, index, step));
        ++skipped;
        continue;
      }
      if (options.grad_clip_norm > 0) {
        for (auto& group : optimizer.param_groups()) {
          torch::nn::utils::clip_grad_norm_(group.params(), options.grad_clip_norm);
        }
      }
      optimizer.step();
      const int64_t n = batch.labels.size(0);
      loss_sum += loss_value * static_cast<double>(n);
      correct += logits.argmax(1).eq(batch.labels).sum().item<int64_t>();
      seen += n;
      bar.update(index + 1, "loss " + fixed(loss_sum / static_cast<double>(seen), 4) + " acc " +
                                percent(static_cast<double>(correct) / static_cast<double>(seen)));
    }
    bar.finish("loss " + fixed(loss_sum / static_cast<double>(std::max<int64_t>(seen, 1)), 4));
    if (skipped > 0) {
      std::fprintf(stderr, "epoch %ld: skipped %ld of %ld steps with a non-finite loss or gradient\n",
                   static_cast<long>(epoch + 1), static_cast<long>(skipped), static_cast<long>(index));
    }
    const EvalResult test = evaluate(model, test_loader, "  test", options.progress);
    EpochStats stats{epoch + 1,
                     lr,
                     loss_sum / static_cast<double>(std::max<int64_t>(seen, 1)),
                     static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(seen, 1)),
                     test.accuracy,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
    std::fprintf(stderr, "epoch %ld: lr %.4g  train loss %.4f acc %s  test acc %s  (%s)\n",
                 static_cast<long>(stats.epoch), lr, stats.train_loss, percent(stats.train_accuracy).c_str(),
                 percent(stats.test_accuracy).c_str(), format_duration(stats.seconds).c_str());
    state.history.push_back(stats);
    state.epochs_done = epoch + 1;
    if (!checkpoint.empty()) save_checkpoint(checkpoint, model, optimizer, state);
  }
  return state.history;
}

}  // namespace qat
