// GraphModule: initializer storage and the executor.
#include "qat/graph.h"

#include <torch/autograd.h>

#include <stdexcept>
#include <unordered_map>

namespace qat {

// The graph compiled to slot indices, so that a run does no string lookups
// per node. Each slot is released after its last reader, which bounds peak
// memory by the live activations instead of all of them.
struct GraphModule::Plan {
  struct Step {
    const Node* node;
    const OpKernel* kernel;
    std::vector<int> inputs;   // -1 for omitted optional inputs
    std::vector<int> outputs;  // -1 for unused optional outputs
    std::vector<int> release;  // slots whose last reader is this step
  };
  int num_slots = 0;
  std::vector<std::pair<int, std::string>> initializers;  // slot, name
  std::vector<int> graph_inputs;
  std::vector<int> graph_outputs;
  std::vector<Step> steps;
};

GraphModule::GraphModule(Graph graph) : graph_(std::move(graph)) {}

Graph& GraphModule::mutable_graph() {
  plan_.reset();
  return graph_;
}

std::string GraphModule::key_of(const std::string& name) const {
  const auto it = keys_.find(name);
  if (it == keys_.end()) throw std::out_of_range("no initializer named '" + name + "'");
  return it->second;
}

// Module keys may not contain '.', so ONNX names are mapped to unique keys.
std::string GraphModule::unique_key(const std::string& name) const {
  std::string base = name;
  for (char& c : base) {
    if (c == '.') c = '_';
  }
  std::string key = base;
  for (int suffix = 1; parameters_.contains(key) || named_children().contains(key); ++suffix) {
    key = base + "_" + std::to_string(suffix);
  }
  return key;
}

void GraphModule::add_initializer(const std::string& name, const torch::Tensor& value, bool trainable) {
  if (name.empty()) throw std::invalid_argument("initializer name is empty");
  if (keys_.count(name)) throw std::invalid_argument("initializer '" + name + "' already exists");
  const std::string key = unique_key(name);
  // Everything is held as a parameter (buffers cannot be removed through
  // the public Module API); only trainable ones require grad.
  const bool floating = value.is_floating_point();
  register_parameter(key, value, trainable && floating);
  keys_[name] = key;
  trainable_[name] = trainable && floating;
  plan_.reset();
}

bool GraphModule::has_initializer(const std::string& name) const { return keys_.count(name) != 0; }

torch::Tensor GraphModule::initializer(const std::string& name) const { return parameters_[key_of(name)]; }

bool GraphModule::is_trainable(const std::string& name) const {
  key_of(name);
  return trainable_.at(name);
}

void GraphModule::set_initializer(const std::string& name, const torch::Tensor& value) {
  torch::NoGradGuard no_grad;
  torch::Tensor& slot = parameters_[key_of(name)];
  slot.set_data(value.detach().clone());
}

void GraphModule::remove_initializer(const std::string& name) {
  parameters_.erase(key_of(name));
  keys_.erase(name);
  trainable_.erase(name);
  plan_.reset();
}

std::vector<std::string> GraphModule::initializer_names() const {
  std::vector<std::string> names;
  for (const auto& entry : keys_) names.push_back(entry.first);
  return names;
}

void GraphModule::attach(const std::string& name, std::shared_ptr<torch::nn::Module> submodule) {
  if (attachments_.count(name)) throw std::invalid_argument("attachment '" + name + "' already exists");
  const std::string key = unique_key(name);
  register_module(key, submodule);
  attachments_[name] = {key, std::move(submodule)};
}

void GraphModule::detach(const std::string& name) {
  const auto it = attachments_.find(name);
  if (it == attachments_.end()) throw std::out_of_range("no attachment named '" + name + "'");
  unregister_module(it->second.first);
  attachments_.erase(it);
}

torch::nn::Module& GraphModule::attachment(const std::string& name) const {
  const auto it = attachments_.find(name);
  if (it == attachments_.end()) throw std::out_of_range("no attachment named '" + name + "'");
  return *it->second.second;
}

std::vector<std::string> GraphModule::attachment_names() const {
  std::vector<std::string> names;
  for (const auto& entry : attachments_) names.push_back(entry.first);
  return names;
}

void GraphModule::build_plan() {
  auto plan = std::make_shared<Plan>();
  std::unordered_map<std::string, int> slot_of;
  auto new_slot = [&](const std::string& name) {
    const int slot = plan->num_slots++;
    slot_of[name] = slot;
    return slot;
  };
  for (const auto& entry : keys_) plan->initializers.emplace_back(new_slot(entry.first), entry.first);
  for (const auto& input : graph_.inputs) plan->graph_inputs.push_back(new_slot(input.name));
  std::vector<int> last_reader;
  for (const Node& node : graph_.nodes) {
    Plan::Step step{&node, find_op(node.op_type), {}, {}, {}};
    if (!step.kernel) {
      throw std::invalid_argument("unsupported op type '" + node.op_type + "' (node '" + node.name + "')");
    }
    for (const auto& in : node.inputs) {
      if (in.empty()) {
        step.inputs.push_back(-1);
        continue;
      }
      const auto it = slot_of.find(in);
      if (it == slot_of.end()) {
        throw std::invalid_argument(node.describe() + " reads '" + in +
                                    "', which is no graph input, initializer or earlier node's output");
      }
      step.inputs.push_back(it->second);
    }
    for (const auto& out : node.outputs) step.outputs.push_back(out.empty() ? -1 : new_slot(out));
    plan->steps.push_back(std::move(step));
  }
  for (const auto& out : graph_.outputs) {
    const auto it = slot_of.find(out);
    if (it == slot_of.end()) throw std::invalid_argument("graph output '" + out + "' is never produced");
    plan->graph_outputs.push_back(it->second);
  }
  // Release activations after their last reader; graph inputs, outputs and
  // initializers are never released.
  last_reader.assign(static_cast<size_t>(plan->num_slots), -1);
  for (size_t i = 0; i < plan->steps.size(); ++i) {
    for (int slot : plan->steps[i].inputs) {
      if (slot >= 0) last_reader[static_cast<size_t>(slot)] = static_cast<int>(i);
    }
  }
  std::vector<bool> pinned(static_cast<size_t>(plan->num_slots), false);
  for (const auto& entry : plan->initializers) pinned[static_cast<size_t>(entry.first)] = true;
  for (int slot : plan->graph_outputs) pinned[static_cast<size_t>(slot)] = true;
  for (int slot = 0; slot < plan->num_slots; ++slot) {
    const int reader = last_reader[static_cast<size_t>(slot)];
    if (reader >= 0 && !pinned[static_cast<size_t>(slot)]) {
      plan->steps[static_cast<size_t>(reader)].release.push_back(slot);
    }
  }
  plan_ = std::move(plan);
}

namespace {

std::string message_of(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

}  // namespace

std::vector<torch::Tensor> GraphModule::run(const std::vector<torch::Tensor>& inputs) {
  if (!plan_) build_plan();
  const std::shared_ptr<Plan> plan = plan_;  // a kernel must not rebuild it under us
  if (inputs.size() != plan->graph_inputs.size()) {
    throw std::invalid_argument("graph expects " + std::to_string(plan->graph_inputs.size()) + " inputs, got " +
                                std::to_string(inputs.size()));
  }
  std::vector<torch::Tensor> values(static_cast<size_t>(plan->num_slots));
  for (const auto& [slot, name] : plan->initializers) values[static_cast<size_t>(slot)] = parameters_[keys_[name]];
  for (size_t i = 0; i < inputs.size(); ++i) values[static_cast<size_t>(plan->graph_inputs[i])] = inputs[i];

  std::vector<torch::Tensor> args;
  for (const auto& step : plan->steps) {
    args.clear();
    for (int slot : step.inputs) args.push_back(slot >= 0 ? values[static_cast<size_t>(slot)] : torch::Tensor());
    std::vector<torch::Tensor> results;
    try {
      results = (*step.kernel)(OpContext{*step.node, *this, graph_.opset, is_training()}, args);
    } catch (const std::exception& e) {
      throw std::runtime_error(step.node->describe() + ": " + message_of(e));
    }
    for (size_t i = 0; i < step.outputs.size(); ++i) {
      if (step.outputs[i] < 0) continue;
      if (i >= results.size() || !results[i].defined()) {
        throw std::runtime_error(step.node->describe() + ": produced no value for output '" +
                                 step.node->outputs[i] + "'");
      }
      values[static_cast<size_t>(step.outputs[i])] = std::move(results[i]);
    }
    if (observer_) {
      std::vector<torch::Tensor> outs;
      for (int slot : step.outputs) outs.push_back(slot >= 0 ? values[static_cast<size_t>(slot)] : torch::Tensor());
      observer_(*step.node, outs);
    }
    for (int slot : step.release) values[static_cast<size_t>(slot)].reset();
  }
  std::vector<torch::Tensor> outputs;
  for (int slot : plan->graph_outputs) outputs.push_back(values[static_cast<size_t>(slot)]);
  return outputs;
}

torch::Tensor GraphModule::forward(const torch::Tensor& input) {
  auto outputs = run({input});
  if (outputs.size() != 1) {
    throw std::invalid_argument("forward() needs a single-output graph; this one has " +
                                std::to_string(outputs.size()) + " outputs");
  }
  return outputs[0];
}

std::map<std::string, std::vector<int64_t>> GraphModule::infer_shapes(
    const std::vector<std::vector<int64_t>>& input_shapes) {
  if (input_shapes.size() != graph_.inputs.size()) {
    throw std::invalid_argument("infer_shapes: graph has " + std::to_string(graph_.inputs.size()) +
                                " inputs, got " + std::to_string(input_shapes.size()) + " shapes");
  }
  std::map<std::string, std::vector<int64_t>> shapes;
  std::vector<torch::Tensor> inputs;
  for (size_t i = 0; i < input_shapes.size(); ++i) {
    inputs.push_back(torch::zeros(input_shapes[i], torch::TensorOptions().dtype(graph_.inputs[i].dtype)));
    shapes[graph_.inputs[i].name] = input_shapes[i];
  }
  for (const auto& name : initializer_names()) shapes[name] = initializer(name).sizes().vec();
  const bool was_training = is_training();
  const NodeObserver saved_observer = observer_;
  eval();
  observer_ = [&](const Node& node, const std::vector<torch::Tensor>& outs) {
    for (size_t i = 0; i < outs.size(); ++i) {
      if (outs[i].defined()) shapes[node.outputs[i]] = outs[i].sizes().vec();
    }
  };
  try {
    torch::NoGradGuard no_grad;
    run(inputs);
  } catch (...) {
    observer_ = saved_observer;
    train(was_training);
    throw;
  }
  observer_ = saved_observer;
  train(was_training);
  return shapes;
}

}  // namespace qat
