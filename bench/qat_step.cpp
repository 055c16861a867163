// What QAT costs per training step: one forward + cross-entropy + backward
// + SGD step of a zoo model, as FP32 and as a W8A8 quantization simulation
// (default config: per-channel symmetric weights, BN simulated-fold), with
// and without activation range learning. Also peak RSS per variant and the
// throughput of calibration against FP32 inference.
//
// The machine this runs on is shared, so absolute times drift with load.
// Variants are therefore timed side by side in one process: `rounds`
// rounds, each timing `steps` steps of every variant (the order rotates per
// round), and ratios are the median of the per-round ratios, so that load
// which changes between rounds cancels out. Peak RSS needs one process per
// variant: the table mode re-runs this binary with --variant and reads the
// child's ru_maxrss from wait4() (the number `/usr/bin/time -v` prints as
// "Maximum resident set size"; bench/qat_step.sh cross-checks with it).
//
//   qat_step [--models resnet20,resnet18] [--rounds 5 --steps 10] [--torch-ao /usr/bin/python3]
//       the tables (markdown): step time, peak RSS, calibration throughput,
//       and with --torch-ao the peer's step times (bench/torch_ao_qat.py)
//   qat_step --model resnet20 --variant qat_rl --steps 10
//       one variant in this process; prints one line
//   qat_step --model resnet20 --profile [--variants fp32,bnsim,qat,qat_rl]
//       self time per op and graph node (LibTorch's autograd profiler) of
//       each variant's training step, eval forward and calibration
//
// Variants: fp32 (the zoo model as `qat train` trains it), qat (weight
// encodings learn, activation encodings fixed: `qat qat` without
// --range-learning), qat_rl (all encodings learn, LSQ), bnsim (the sim with
// every quantizer disabled: BN simulated-fold and the graph rewrite alone).
// Tensors come from qat's caching CPU allocator, as in the qat CLI
// (include/qat/cpu_memory.h); --system-allocator measures glibc's malloc.
#include "qat/cpu_memory.h"
#include "qat/data.h"
#include "qat/quantsim.h"
#include "qat/threads.h"
#include "qat/zoo.h"

#include <ATen/record_function.h>
#include <CLI/CLI.hpp>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace qat {
namespace {

using torch::Tensor;

// Batches cycled through by the timed steps; real images, so that the
// fraction of clamped values (which the backward kernels branch on) is
// what training sees.
constexpr int64_t kTrainBatches = 8;
// Rates do not change the cost of a step. The weights' is QAT fine-tuning's
// (the demo's), for every variant. The encodings' is far below the demo's
// 1e-3: an untrained classifier's loss gradients are large, and at 1e-3
// they drove resnet20's fc weight scales through zero within a few steps.
constexpr double kLr = 1e-3;
constexpr double kEncodingLr = 1e-5;

struct Options {
  std::vector<std::string> models{"resnet18", "resnet20", "mobilenet_v2_x0_5"};
  std::vector<std::string> variants{"fp32", "qat", "qat_rl"};
  std::string variant;  // single-variant mode
  int64_t rounds = 5;
  int64_t steps = 10;
  int64_t warmup = 2;
  int64_t batch = 64;
  int64_t calibration_batches = 2;
  int threads = 2;
  int64_t rss_repeats = 3;  // RSS varies by tens of MiB between identical runs
  bool profile = false;
  bool system_allocator = false;  // glibc's malloc instead of qat's caching allocator
  std::string torch_ao_python;    // runs bench/torch_ao_qat.py when set
};

struct Batches {
  std::vector<data::Batch> calibration;
  std::vector<data::Batch> train;
};

// Fashion-MNIST's test split (the smaller file: it loads fast and adds
// little to every variant's RSS), unshuffled and unaugmented.
Batches load_batches(const Options& o) {
  data::LoaderOptions options;
  options.batch_size = o.batch;
  options.normalization = {{data::kFashionMnistMean}, {data::kFashionMnistStd}};
  const data::DataLoader loader(data::load_fashion_mnist(data::Split::kTest), options);
  Batches b;
  for (int64_t i = 0; i < o.calibration_batches; ++i) b.calibration.push_back(loader.batch(0, i));
  for (int64_t i = 0; i < kTrainBatches; ++i) b.train.push_back(loader.batch(0, o.calibration_batches + i));
  return b;
}

// One model in one variant, with its own optimizer state.
class Runner {
 public:
  Runner(const std::string& model_name, const std::string& variant, const Batches& batches)
      : variant_(variant), batches_(batches) {
    ZooOptions zoo;
    zoo.in_channels = batches.train[0].images.size(1);
    zoo.image_size = batches.train[0].images.size(2);
    model_ = make_model(model_name, zoo);
    set_batchnorm_statistics();
    std::vector<Tensor> encodings;
    if (variant != "fp32") {
      QuantSimOptions options;
      options.config = load_sim_config("default");
      options.batchnorm = BatchNormMode::kSimulate;
      std::vector<int64_t> shape = batches.train[0].images.sizes().vec();
      shape[0] = 1;
      sim_ = std::make_unique<QuantSim>(model_, options, shape);
      calibrate();
      if (variant == "qat" || variant == "qat_rl") {
        sim_->set_range_learning(/*weights=*/true, /*activations=*/variant == "qat_rl");
        encodings = sim_->encoding_parameters();
      } else if (variant == "bnsim") {
        sim_->set_quantization_enabled(false);
      } else {
        throw std::invalid_argument("unknown variant '" + variant + "' (fp32, qat, qat_rl, bnsim)");
      }
    }
    optimizer_ = make_optimizer(encodings);
    model_->train();
  }

  const std::string& variant() const { return variant_; }

  // Calibration runs in eval mode, so an untrained model's running
  // statistics (mean 0, variance 1) would give ranges unrelated to what
  // training sees; in MobileNet they shrink layer by layer, QAT then clamps
  // nearly everything and the gradients explode. One train-mode pass with
  // ONNX momentum 0 sets every running statistic to a batch's, as a trained
  // model's would be. Done for every variant, so they start alike.
  void set_batchnorm_statistics() {
    std::vector<std::pair<Node*, double>> saved;
    for (Node& node : model_->mutable_graph().nodes) {
      if (node.op_type != "BatchNormalization") continue;
      saved.push_back({&node, node.attr_float("momentum", 0.9)});
      node.attributes["momentum"] = 0.0;
    }
    {
      torch::NoGradGuard no_grad;
      model_->train();
      model_->forward(batches_.calibration[0].images);
    }
    for (auto& [node, momentum] : saved) node->attributes["momentum"] = momentum;
  }

  void calibrate() {
    sim_->compute_encodings([&](GraphModule& m) {
      for (const auto& b : batches_.calibration) m.forward(b.images);
    });
  }

  // Inference on the calibration batches, to compare calibration with.
  void evaluate() {
    torch::NoGradGuard no_grad;
    model_->eval();
    for (const auto& b : batches_.calibration) model_->forward(b.images);
    model_->train();
  }

  void step() {
    RECORD_USER_SCOPE("step");
    const data::Batch& b = batches_.train[static_cast<size_t>(next_++ % kTrainBatches)];
    optimizer_->zero_grad();
    Tensor logits;
    {
      RECORD_USER_SCOPE("step.forward");
      logits = model_->forward(b.images);
    }
    loss_ = torch::nn::functional::cross_entropy(logits, b.labels);
    {
      RECORD_USER_SCOPE("step.backward");
      loss_.backward();
    }
    {
      RECORD_USER_SCOPE("step.optimizer");
      optimizer_->step();
    }
  }

  // A diverged run would time NaN arithmetic, not training.
  void check_loss() const {
    if (!std::isfinite(loss_.item<double>())) throw std::runtime_error(variant_ + ": loss is not finite");
  }

 private:
  // trainer.cpp's groups: weights, and encodings with their own rate and
  // no weight decay.
  std::unique_ptr<torch::optim::SGD> make_optimizer(const std::vector<Tensor>& encodings) {
    std::vector<Tensor> weights;
    for (const auto& p : model_->parameters()) {
      bool is_encoding = false;
      for (const auto& e : encodings) is_encoding = is_encoding || e.is_same(p);
      if (p.requires_grad() && !is_encoding) weights.push_back(p);
    }
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(weights);
    if (!encodings.empty()) {
      auto options = std::make_unique<torch::optim::SGDOptions>(kEncodingLr);
      options->momentum(0.9).weight_decay(0.0);
      groups.emplace_back(encodings, std::move(options));
    }
    return std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(kLr).momentum(0.9).weight_decay(5e-4));
  }

  std::string variant_;
  const Batches& batches_;
  std::shared_ptr<GraphModule> model_;
  std::unique_ptr<QuantSim> sim_;
  std::unique_ptr<torch::optim::SGD> optimizer_;
  int64_t next_ = 0;
  Tensor loss_;
};

double seconds(const std::function<void()>& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

// "1.07 (1.03-1.12)": median and range over rounds, so the noise shows.
std::string spread_cell(const std::vector<double>& values, int digits = 2) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f (%.*f-%.*f)", digits, median(values), digits,
                *std::min_element(values.begin(), values.end()), digits,
                *std::max_element(values.begin(), values.end()));
  return buffer;
}

// Peak RSS (MiB) of this binary run as a single-variant child.
double child_peak_rss_mib(const Options& o, const std::string& model, const std::string& variant, int64_t steps) {
  std::vector<std::string> args{"qat_step",  "--model",   model,
                                "--variant", variant,     "--steps",
                                std::to_string(steps),    "--threads",
                                std::to_string(o.threads), "--batch",
                                std::to_string(o.batch),  "--calibration-batches",
                                std::to_string(o.calibration_batches)};
  if (o.system_allocator) args.push_back("--system-allocator");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);  // keep the tables clean
  pid_t pid = 0;
  const int error = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) throw std::runtime_error("posix_spawn failed: " + std::string(std::strerror(error)));
  int status = 0;
  rusage usage{};
  if (wait4(pid, &status, 0, &usage) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("child run " + model + " " + variant + " failed");
  }
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

int run_single(const Options& o, const std::string& model) {
  const Batches batches = load_batches(o);
  Runner runner(model, o.variant, batches);
  for (int64_t i = 0; i < std::min(o.warmup, o.steps); ++i) runner.step();
  const int64_t timed = o.steps - std::min(o.warmup, o.steps);
  const double s = seconds([&] {
    for (int64_t i = 0; i < timed; ++i) runner.step();
  });
  if (o.steps > 0) runner.check_loss();
  std::printf("model=%s variant=%s steps=%ld ms_per_step=%.1f maxrss_mib=%.1f\n", model.c_str(), o.variant.c_str(),
              static_cast<long>(o.steps), timed > 0 ? 1e3 * s / static_cast<double>(timed) : 0.0, peak_rss_mib());
  return 0;
}

struct ModelResult {
  std::string model;
  std::map<std::string, std::vector<double>> ms;      // variant -> ms/step per round
  std::map<std::string, std::vector<double>> ratio;   // variant -> ms / fp32 ms per round
  std::map<std::string, std::vector<double>> rss;     // variant or "idle" -> peak MiB per repeat
  std::vector<double> eval_ips, calibration_ips, sim_eval_ips, calibration_ratio;
  std::vector<double> torch_ao_ms;  // FP32, QAT, LSQ: medians over the peer's rounds
};

void measure(const Options& o, const Batches& batches, ModelResult& result) {
  const std::string& model = result.model;
  std::vector<std::unique_ptr<Runner>> runners;
  for (const auto& v : o.variants) runners.push_back(std::make_unique<Runner>(model, v, batches));
  for (auto& r : runners) {
    for (int64_t i = 0; i < o.warmup; ++i) r->step();
  }
  for (int64_t round = 0; round < o.rounds; ++round) {
    std::map<std::string, double> ms;
    for (size_t k = 0; k < runners.size(); ++k) {
      Runner& r = *runners[(k + static_cast<size_t>(round)) % runners.size()];
      ms[r.variant()] = 1e3 *
                        seconds([&] {
                          for (int64_t i = 0; i < o.steps; ++i) r.step();
                        }) /
                        static_cast<double>(o.steps);
    }
    for (const auto& [v, t] : ms) {
      result.ms[v].push_back(t);
      if (ms.count("fp32")) result.ratio[v].push_back(t / ms.at("fp32"));
    }
    std::fprintf(stderr, "%s round %ld/%ld done\n", model.c_str(), static_cast<long>(round + 1),
                 static_cast<long>(o.rounds));
  }
  for (auto& r : runners) r->check_loss();

  // Calibration vs inference, interleaved the same way; calibration runs on
  // the first sim (it overwrites that sim's encodings, so it comes last).
  Runner* fp32 = nullptr;
  Runner* sim = nullptr;
  for (auto& r : runners) {
    if (r->variant() == "fp32") fp32 = r.get();
    if (r->variant() != "fp32" && !sim) sim = r.get();
  }
  if (fp32 && sim) {
    const double images = static_cast<double>(o.calibration_batches * o.batch);
    for (int64_t round = 0; round < o.rounds; ++round) {
      const double eval = images / seconds([&] { fp32->evaluate(); });
      const double calibration = images / seconds([&] { sim->calibrate(); });
      const double sim_eval = images / seconds([&] { sim->evaluate(); });
      result.eval_ips.push_back(eval);
      result.calibration_ips.push_back(calibration);
      result.sim_eval_ips.push_back(sim_eval);
      result.calibration_ratio.push_back(calibration / eval);
    }
  }
}

std::string shell_quoted(const std::string& arg) {
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// torch.ao's step times for the same model, rounds, steps, batch and
// threads: bench/torch_ao_qat.py's variants fp32, qat and qat_lsq, read
// from the first numbers of its table row. A separate process (the peer is
// Python), run after qat's rounds rather than interleaved with them.
std::vector<double> torch_ao_ms(const Options& o, const std::string& model) {
  std::string command = shell_quoted(o.torch_ao_python) + " " + shell_quoted(QAT_TORCH_AO_SCRIPT);
  for (const auto& [flag, value] : std::vector<std::pair<std::string, std::string>>{
           {"--models", model},
           {"--variants", "fp32,qat,qat_lsq"},
           {"--threads", std::to_string(o.threads)},
           {"--batch", std::to_string(o.batch)},
           {"--calibration-batches", std::to_string(o.calibration_batches)},
           {"--rounds", std::to_string(o.rounds)},
           {"--steps", std::to_string(o.steps)},
           {"--warmup", std::to_string(o.warmup)}}) {
    command += " " + flag + " " + shell_quoted(value);
  }
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("cannot run " + command);
  std::vector<double> ms;
  const std::string row = "| " + model + " |";
  char line[1024];
  while (std::fgets(line, sizeof line, pipe)) {
    if (std::strncmp(line, row.c_str(), row.size()) != 0) continue;
    const char* p = line + row.size();
    for (int i = 0; i < 3; ++i) {
      char* end = nullptr;
      ms.push_back(std::strtod(p, &end));
      p = std::strchr(end, '|');
      if (!p) break;
      ++p;
    }
  }
  const int status = pclose(pipe);
  if (status != 0 || ms.size() != 3) throw std::runtime_error("torch.ao peer failed or printed no row: " + command);
  return ms;
}

// Linux carries the old address space's high-water mark across exec into
// the child's ru_maxrss, so children must be spawned while this process is
// still small: before it loads data or builds models.
// "idle" is an FP32 run without steps: LibTorch, data and model only.
void measure_rss(const Options& o, ModelResult& result) {
  for (int64_t i = 0; i < o.rss_repeats; ++i) {
    result.rss["idle"].push_back(child_peak_rss_mib(o, result.model, "fp32", 0));
    for (const auto& v : o.variants) {
      result.rss[v].push_back(child_peak_rss_mib(o, result.model, v, o.warmup + o.steps));
    }
  }
}

const char* variant_title(const std::string& v) {
  if (v == "fp32") return "FP32";
  if (v == "qat") return "QAT";
  if (v == "qat_rl") return "QAT+RL";
  return "BN-sim only";
}

void print_tables(const Options& o, const std::vector<ModelResult>& results) {
  std::printf("\nStep time, ms/step: median over %ld rounds of %ld steps (batch %ld, %d threads); ratios: median "
              "(min-max) of per-round ratios to FP32\n\n| model |",
              static_cast<long>(o.rounds), static_cast<long>(o.steps), static_cast<long>(o.batch), o.threads);
  for (const auto& v : o.variants) std::printf(" %s ms |", variant_title(v));
  for (const auto& v : o.variants) {
    if (v != "fp32") std::printf(" %s / FP32 |", variant_title(v));
  }
  std::printf("\n|---|");
  for (size_t i = 0; i < 2 * o.variants.size() - 1; ++i) std::printf("---|");
  std::printf("\n");
  for (const auto& r : results) {
    std::printf("| %s |", r.model.c_str());
    for (const auto& v : o.variants) std::printf(" %.1f |", median(r.ms.at(v)));
    for (const auto& v : o.variants) {
      if (v != "fp32") std::printf(" %s |", r.ratio.count(v) ? spread_cell(r.ratio.at(v)).c_str() : "-");
    }
    std::printf("\n");
  }

  if (o.rss_repeats > 0) {
    std::printf("\nPeak RSS, MiB: median (min-max) of %ld processes per variant, each loading data and model, "
                "calibrating and running %ld steps\n\n| model | idle |",
                static_cast<long>(o.rss_repeats), static_cast<long>(o.warmup + o.steps));
    for (const auto& v : o.variants) std::printf(" %s |", variant_title(v));
    std::printf(" QAT+RL / QAT |\n|---|---|");
    for (size_t i = 0; i <= o.variants.size(); ++i) std::printf("---|");
    std::printf("\n");
    for (const auto& r : results) {
      std::printf("| %s | %s |", r.model.c_str(), spread_cell(r.rss.at("idle"), 0).c_str());
      for (const auto& v : o.variants) std::printf(" %s |", spread_cell(r.rss.at(v), 0).c_str());
      if (r.rss.count("qat") && r.rss.count("qat_rl")) {
        std::printf(" %.3f |\n", median(r.rss.at("qat_rl")) / median(r.rss.at("qat")));
      } else {
        std::printf(" - |\n");
      }
    }
  }

  if (!o.torch_ao_python.empty()) {
    std::printf("\ntorch.ao eager-mode QAT (bench/torch_ao_qat.py, a separate process after qat's rounds; same "
                "rounds, steps, batch and threads), ms/step, and how many times qat's step it takes\n\n"
                "| model | torch.ao FP32 ms | torch.ao QAT ms | torch.ao LSQ ms | torch.ao QAT / qat QAT | "
                "torch.ao LSQ / qat QAT+RL |\n|---|---|---|---|---|---|\n");
    for (const auto& r : results) {
      const auto times = [&](const char* v) { return r.ms.count(v) ? median(r.ms.at(v)) : NAN; };
      const auto& peer = r.torch_ao_ms;
      std::printf("| %s | %.1f | %.1f | %.1f | %.2f | %.2f |\n", r.model.c_str(), peer[0], peer[1], peer[2],
                  peer[1] / times("qat"), peer[2] / times("qat_rl"));
    }
  }

  std::printf("\nCalibration vs inference, images/s: median over %ld rounds of %ld batches (eval mode, no grad)\n\n"
              "| model | FP32 eval | calibration (compute_encodings) | calibration / FP32 eval | QAT sim eval |\n"
              "|---|---|---|---|---|\n",
              static_cast<long>(o.rounds), static_cast<long>(o.calibration_batches));
  for (const auto& r : results) {
    if (r.eval_ips.empty()) continue;
    std::printf("| %s | %.0f | %.0f | %s | %.0f |\n", r.model.c_str(), median(r.eval_ips), median(r.calibration_ips),
                spread_cell(r.calibration_ratio).c_str(), median(r.sim_eval_ips));
  }
}

// --profile: self and inclusive time per recorded name (ATen ops, autograd
// nodes, graph ops labelled "op:<type>", the step phases), per step.
struct Timing {
  int64_t calls = 0;
  double self_us = 0.0;
  double total_us = 0.0;
};

std::map<std::string, Timing> aggregate(const torch::autograd::profiler::thread_event_lists& threads) {
  using torch::autograd::profiler::EventKind;
  using torch::autograd::profiler::LegacyEvent;
  std::map<std::string, Timing> timings;
  for (const auto& events : threads) {
    struct Open {
      const LegacyEvent* push;
      double children_us;
    };
    std::vector<Open> stack;
    for (const auto& e : events) {
      if (e.kind() == EventKind::PushRange) {
        stack.push_back({&e, 0.0});
      } else if (e.kind() == EventKind::PopRange && !stack.empty()) {
        const Open open = stack.back();
        stack.pop_back();
        const double total = open.push->cpuElapsedUs(e);
        Timing& t = timings[open.push->name()];
        t.calls += 1;
        t.total_us += total;
        t.self_us += total - open.children_us;
        if (!stack.empty()) stack.back().children_us += total;
      }
    }
  }
  return timings;
}

// Graph kernels wrapped in a named scope, so the profiler attributes
// forward time to graph ops (QatFakeQuant's own loop is no ATen op and
// would otherwise be invisible). Called after every QuantSim is built:
// the QuantSim constructor re-registers its ops.
void label_graph_ops() {
  for (const auto& op : registered_ops()) {
    OpKernel inner = *find_op(op);
    register_op(op, [inner, name = "op:" + op](const OpContext& ctx, const std::vector<Tensor>& in) {
      RECORD_USER_SCOPE(name);
      return inner(ctx, in);
    });
  }
}

// Runs `fn` `repeats` times under the profiler and prints the names that
// take at least 0.2 ms per repeat, by self time.
void print_profile(const std::string& title, int64_t repeats, const std::function<void()>& fn) {
  std::map<std::string, Timing> timings;
  {
    torch::autograd::profiler::TLSLegacyProfilerGuard guard(
        torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU),
        [&](const torch::autograd::profiler::thread_event_lists& events) { timings = aggregate(events); });
    for (int64_t i = 0; i < repeats; ++i) fn();
  }
  std::vector<std::pair<std::string, Timing>> sorted(timings.begin(), timings.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second.self_us > b.second.self_us; });
  const double n = static_cast<double>(repeats);
  std::printf("\n%s: ms per call (self = excluding recorded children)\n\n| name | calls | self ms | total ms |\n"
              "|---|---|---|---|\n",
              title.c_str());
  for (const auto& [name, t] : sorted) {
    if (t.self_us / n < 200.0 && name.rfind("step", 0) != 0 && name.rfind("op:", 0) != 0) continue;
    std::printf("| %s | %.1f | %.2f | %.2f |\n", name.c_str(), static_cast<double>(t.calls) / n, t.self_us / n / 1e3,
                t.total_us / n / 1e3);
  }
}

int run_profile(const Options& o, const std::string& model) {
  const Batches batches = load_batches(o);
  std::vector<std::unique_ptr<Runner>> runners;
  for (const auto& v : o.variants) runners.push_back(std::make_unique<Runner>(model, v, batches));
  label_graph_ops();
  for (auto& r : runners) {
    for (int64_t i = 0; i < o.warmup; ++i) r->step();
    print_profile(model + " " + r->variant() + ", training step", o.steps, [&] { r->step(); });
    print_profile(model + " " + r->variant() + ", eval forward of the calibration batches", o.steps,
                  [&] { r->evaluate(); });
    if (r->variant() != "fp32") {
      print_profile(model + " " + r->variant() + ", compute_encodings on the calibration batches", o.steps,
                    [&] { r->calibrate(); });
    }
  }
  return 0;
}

}  // namespace
}  // namespace qat

int main(int argc, char** argv) {
  qat::Options o;
  std::string model;
  CLI::App app("Step time and peak RSS of QAT against FP32 training (see the header of bench/qat_step.cpp)");
  app.add_option("--models", o.models, "zoo models for the tables")->delimiter(',');
  app.add_option("--model", model, "one model (single-variant and profile modes)");
  app.add_option("--variants", o.variants, "fp32, qat, qat_rl, bnsim")->delimiter(',');
  app.add_option("--variant", o.variant, "run only this variant and print one line");
  app.add_option("--rounds", o.rounds, "timing rounds")->check(CLI::PositiveNumber);
  app.add_option("--steps", o.steps, "steps per variant per round (single-variant mode: in all, warm-up included)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--warmup", o.warmup, "untimed steps per variant first")->check(CLI::NonNegativeNumber);
  app.add_option("--batch", o.batch, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--calibration-batches", o.calibration_batches, "batches for compute_encodings")
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", o.threads, "LibTorch intra-op threads")->check(CLI::PositiveNumber);
  app.add_option("--rss-repeats", o.rss_repeats, "child processes per variant for peak RSS (0: none)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--profile", o.profile, "profile --model's variants instead of timing them");
  app.add_option("--torch-ao", o.torch_ao_python,
                 "also time torch.ao's QAT of each model with this Python (Debian's /usr/bin/python3 with "
                 "python3-torch: the same LibTorch build)");
  app.add_flag("--system-allocator", o.system_allocator,
               "tensors from glibc's malloc, as LibTorch does by default (qat installs its caching allocator)");
  CLI11_PARSE(app, argc, argv);
  try {
    qat::configure_threads(o.threads);
    if (!o.system_allocator) qat::install_caching_cpu_allocator();
    if (!o.variant.empty()) return qat::run_single(o, model.empty() ? o.models.at(0) : model);
    if (o.profile) return qat::run_profile(o, model.empty() ? o.models.at(0) : model);
    std::vector<qat::ModelResult> results(o.models.size());
    for (size_t i = 0; i < o.models.size(); ++i) {
      results[i].model = o.models[i];
      qat::measure_rss(o, results[i]);
    }
    const qat::Batches batches = qat::load_batches(o);
    for (auto& r : results) {
      qat::measure(o, batches, r);
      if (!o.torch_ao_python.empty()) r.torch_ao_ms = qat::torch_ao_ms(o, r.model);
    }
    qat::print_tables(o, results);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qat_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
