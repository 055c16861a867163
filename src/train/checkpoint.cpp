// Checkpoint files: one torch archive holding the model, the optimizer, the
// global RNG and the training history, written atomically.
#include "qat/train.h"

#include "zip_check.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>
#include <filesystem>
#include <map>
#include <stdexcept>

namespace qat {
namespace {

constexpr const char* kFormat = "qat-checkpoint-1";
constexpr int64_t kStatsColumns = 6;

torch::Tensor history_tensor(const std::vector<EpochStats>& history) {
  torch::Tensor t = torch::zeros({static_cast<int64_t>(history.size()), kStatsColumns}, torch::kDouble);
  for (size_t i = 0; i < history.size(); ++i) {
    const EpochStats& s = history[i];
    const double row[kStatsColumns] = {static_cast<double>(s.epoch), s.lr, s.train_loss, s.train_accuracy,
                                       s.test_accuracy, s.seconds};
    for (int64_t c = 0; c < kStatsColumns; ++c) t[static_cast<int64_t>(i)][c] = row[c];
  }
  return t;
}

std::vector<EpochStats> history_from(const torch::Tensor& t) {
  std::vector<EpochStats> history;
  const auto rows = t.accessor<double, 2>();
  for (int64_t i = 0; i < t.size(0); ++i) {
    history.push_back({static_cast<int64_t>(rows[i][0]), rows[i][1], rows[i][2], rows[i][3], rows[i][4], rows[i][5]});
  }
  return history;
}

void sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error(path + ": cannot reopen to sync");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw std::runtime_error(path + ": fsync failed");
}

// Parameters and buffers of the whole module tree, by dotted name.
torch::OrderedDict<std::string, torch::Tensor> model_tensors(GraphModule& model) {
  auto tensors = model.named_parameters();
  for (const auto& b : model.named_buffers()) tensors.insert(b.key(), b.value());
  return tensors;
}

// Tensors are stored flat as "t<i>" with their names in a list, so that
// loading can say exactly which name is missing or has the wrong shape.
void save_model(torch::serialize::OutputArchive& archive, GraphModule& model) {
  c10::List<std::string> names;
  int64_t index = 0;
  for (const auto& t : model_tensors(model)) {
    names.push_back(t.key());
    archive.write("t" + std::to_string(index++), t.value().detach());
  }
  archive.write("names", c10::IValue(names));
}

// Checks every tensor before copying any, so a mismatch changes nothing.
void load_model(torch::serialize::InputArchive& archive, GraphModule& model, const std::string& path) {
  c10::IValue names_value;
  archive.read("names", names_value);
  std::map<std::string, torch::Tensor> saved;
  int64_t index = 0;
  for (const c10::IValue& name : names_value.toListRef()) {
    torch::Tensor t;
    archive.read("t" + std::to_string(index++), t);
    saved[name.toStringRef()] = t;
  }
  const auto tensors = model_tensors(model);
  for (const auto& t : tensors) {
    const auto it = saved.find(t.key());
    if (it == saved.end()) throw std::runtime_error(path + ": checkpoint has no tensor '" + t.key() + "'");
    if (it->second.sizes() != t.value().sizes() || it->second.scalar_type() != t.value().scalar_type()) {
      throw std::runtime_error(path + ": checkpoint tensor '" + t.key() + "' has shape " +
                               c10::str(it->second.sizes()) + ", the model's has " + c10::str(t.value().sizes()));
    }
  }
  for (const auto& [name, tensor] : saved) {
    if (!tensors.contains(name)) {
      throw std::runtime_error(path + ": checkpoint tensor '" + name + "' is not in this model (" +
                               std::to_string(saved.size()) + " tensors in the file, " +
                               std::to_string(tensors.size()) + " in the model: a checkpoint of another model?)");
    }
  }
  torch::NoGradGuard no_grad;
  for (const auto& t : tensors) t.value().copy_(saved[t.key()]);
}

}  // namespace

void save_checkpoint(const std::string& path, GraphModule& model, const torch::optim::Optimizer& optimizer,
                     const TrainState& state) {
  torch::serialize::OutputArchive archive;
  archive.write("format", c10::IValue(std::string(kFormat)));
  torch::serialize::OutputArchive model_archive, optimizer_archive;
  save_model(model_archive, model);
  optimizer.save(optimizer_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("epochs_done", torch::tensor(state.epochs_done));
  archive.write("tag", c10::IValue(state.tag));
  archive.write("history", history_tensor(state.history));
  {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    archive.write("rng", generator.get_state());
  }
  const std::string tmp = path + ".tmp";
  archive.save_to(tmp);
  sync_file(tmp);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error(path + ": cannot rename " + tmp + " over it");
  // The rename itself lives in the directory: until that is on disk, a
  // power cut could bring back the previous checkpoint (never half of one).
  const std::string dir = std::filesystem::path(path).parent_path().string();
  sync_file(dir.empty() ? "." : dir);
}

namespace {

torch::serialize::InputArchive open_checkpoint(const std::string& path) {
  if (!std::filesystem::exists(path)) throw std::runtime_error(path + ": checkpoint not found");
  check_zip_integrity(path);
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw std::runtime_error(path + ": corrupt or truncated checkpoint (" + e.what_without_backtrace() + ")");
  } catch (const std::exception& e) {
    // Loading compiles the archive's TorchScript code, whose parser throws
    // torch::jit::ErrorReport (often with an empty message) on damage there.
    const std::string detail = e.what();
    throw std::runtime_error(path + ": corrupt or truncated checkpoint" + (detail.empty() ? "" : " (" + detail + ")"));
  }
  try {
    c10::IValue format;
    archive.read("format", format);
    if (!format.isString() || format.toStringRef() != kFormat) throw std::runtime_error("wrong format marker");
  } catch (const std::exception&) {
    throw std::runtime_error(path + ": not a qat checkpoint (format marker '" + std::string(kFormat) + "' missing)");
  }
  return archive;
}

}  // namespace

void load_checkpoint_weights(const std::string& path, GraphModule& model) {
  torch::serialize::InputArchive archive = open_checkpoint(path);
  try {
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    load_model(model_archive, model, path);
  } catch (const c10::Error& e) {
    throw std::runtime_error(path + ": checkpoint does not match this model (" + e.what_without_backtrace() + ")");
  }
}

TrainState load_checkpoint(const std::string& path, GraphModule& model, torch::optim::Optimizer& optimizer) {
  torch::serialize::InputArchive archive = open_checkpoint(path);
  TrainState state;
  try {
    torch::serialize::InputArchive model_archive, optimizer_archive;
    archive.read("model", model_archive);
    load_model(model_archive, model, path);
    archive.read("optimizer", optimizer_archive);
    optimizer.load(optimizer_archive);
    c10::IValue tag;
    archive.read("tag", tag);
    state.tag = tag.toStringRef();
    torch::Tensor epochs_done, history, rng;
    archive.read("epochs_done", epochs_done);
    archive.read("history", history);
    archive.read("rng", rng);
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng);
    state.epochs_done = epochs_done.item<int64_t>();
    state.history = history_from(history);
  } catch (const c10::Error& e) {
    throw std::runtime_error(path + ": checkpoint does not match this model or optimizer (" +
                             e.what_without_backtrace() + ")");
  }
  return state;
}

}  // namespace qat
