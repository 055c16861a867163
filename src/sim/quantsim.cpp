#include "qat/quantsim.h"

#include "sim/absorb_activations.h"
#include "sim/batchnorm.h"
#include "sim/quantizing_batchnorm.h"
#include "sim/recomputing_conv.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <set>
#include <stdexcept>

namespace qat {
namespace {

using torch::Tensor;

// Ops whose output lies on their input's grid (they move or select values
// without computing new ones), so a quantizer after them would be redundant.
const std::set<std::string>& quantization_agnostic_ops() {
  static const std::set<std::string> ops{"MaxPool", "GlobalMaxPool", "Reshape", "Flatten", "Transpose", "Squeeze",
                                         "Unsqueeze", "Identity", "Dropout", "Split", "Slice", "Gather", "Concat",
                                         "Pad", "Expand", "Tile"};
  return ops;
}

// Ops whose output is never negative: symmetric quantization of their
// output can use the unsigned grid (AIMET's unsigned_symmetric).
bool non_negative_output(const Node& node, const GraphModule& m) {
  if (node.op_type == "Relu" || node.op_type == "Sigmoid" || node.op_type == "HardSigmoid" ||
      node.op_type == "Softmax") {
    return true;
  }
  if (node.op_type == "Clip" && node.has_input(1) && m.has_initializer(node.inputs[1])) {
    return m.initializer(node.inputs[1]).item<double>() >= 0.0;
  }
  return false;
}

// The op type a node stands for in the config (the fused ConvBn is a Conv).
std::string config_op_type(const Node& node) { return node.op_type == kConvBnOp ? "Conv" : node.op_type; }

bool is_weighted(const std::string& op_type) {
  return op_type == "Conv" || op_type == "ConvTranspose" || op_type == "Gemm" || op_type == "MatMul";
}

// Output-channel axis of a weight, for per-channel quantization.
int64_t weight_channel_axis(const Node& node) {
  const std::string op = config_op_type(node);
  if (op == "ConvTranspose") return 1;
  if (op == "Gemm") return node.attr_int("transB", 0) ? 0 : 1;
  if (op == "MatMul") return -1;
  return 0;
}

// Indices of nodes whose output is consumed inside a supergroup: a chain
// op_list[0] -> op_list[1] -> ... where each link is the only reader.
std::set<size_t> inside_supergroups(const Graph& g, const std::vector<std::vector<std::string>>& groups) {
  std::set<size_t> inside;
  for (size_t start = 0; start < g.nodes.size(); ++start) {
    for (const auto& ops : groups) {
      std::vector<size_t> chain{start};
      bool matched = !ops.empty() && config_op_type(g.nodes[start]) == ops[0];
      for (size_t k = 1; matched && k < ops.size(); ++k) {
        const Node& last = g.nodes[chain.back()];
        const auto readers = g.consumers(last.outputs[0]);
        matched = last.outputs.size() == 1 && readers.size() == 1 && config_op_type(g.nodes[readers[0]]) == ops[k] &&
                  std::find(g.outputs.begin(), g.outputs.end(), last.outputs[0]) == g.outputs.end();
        if (matched) chain.push_back(readers[0]);
      }
      if (matched) inside.insert(chain.begin(), chain.end() - 1);
    }
  }
  return inside;
}

// dtype of every value, from one run on zeros.
std::map<std::string, torch::ScalarType> probe_dtypes(GraphModule& m, const std::vector<int64_t>& input_shape) {
  std::map<std::string, torch::ScalarType> dtypes;
  const auto& inputs = m.graph().inputs;
  if (inputs.size() != 1) throw std::invalid_argument("quantsim supports single-input graphs");
  dtypes[inputs[0].name] = inputs[0].dtype;
  m.set_observer([&](const Node& node, const std::vector<Tensor>& outs) {
    for (size_t i = 0; i < outs.size(); ++i) {
      if (outs[i].defined()) dtypes[node.outputs[i]] = outs[i].scalar_type();
    }
  });
  const bool was_training = m.is_training();
  m.eval();
  {
    torch::NoGradGuard no_grad;
    m.run({torch::zeros(input_shape, torch::TensorOptions().dtype(inputs[0].dtype))});
  }
  m.train(was_training);
  m.set_observer(nullptr);
  return dtypes;
}

void register_fake_quant_op() {
  register_op(kFakeQuantOp, [](const OpContext& ctx, const std::vector<Tensor>& in) {
    auto& quantizer = static_cast<Quantizer&>(ctx.module.attachment(ctx.node.attr_string("quantizer")));
    // The producer quantized x already (quantizing_batchnorm.h).
    if (ctx.node.attr_int(kProducerQuantizesAttr, 0) && recomputes(ctx, quantizer)) return std::vector{in.at(0)};
    // Readers that differentiate through x themselves need no history here.
    const bool readers_recompute = ctx.node.attr_int(kReadersRecomputeAttr, 0) && recomputes(ctx, quantizer);
    torch::AutoGradMode grad_mode(torch::GradMode::is_enabled() && !readers_recompute);
    return std::vector<Tensor>{quantizer.forward(in.at(0), fused_activation(ctx.node))};
  });
}

double sqnr_db(const Tensor& reference, const Tensor& noisy) {
  const double signal = reference.to(torch::kDouble).pow(2).sum().item<double>();
  const double noise = (reference.to(torch::kDouble) - noisy.to(torch::kDouble)).pow(2).sum().item<double>();
  if (noise == 0.0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal / noise);
}

// Builds the sim graph: the constructor's state, grouped for short functions.
class Placement {
 public:
  Placement(GraphModule& m, const QuantSimOptions& o, std::map<std::string, torch::ScalarType> dtypes)
      : m_(m), o_(o), dtypes_(std::move(dtypes)) {}

  std::vector<QuantizerInfo> run() {
    Graph& g = m_.mutable_graph();
    const std::set<size_t> inside = inside_supergroups(g, o_.config.supergroups);
    std::vector<std::pair<std::string, std::string>> activations;  // tensor, layer
    if (o_.config.model_input_quantized && is_float(g.inputs[0].name)) {
      activations.push_back({g.inputs[0].name, g.inputs[0].name});
    }
    const std::set<std::string> graph_outputs(g.outputs.begin(), g.outputs.end());
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& node = g.nodes[i];
      const std::string op = config_op_type(node);
      if (inside.count(i) || quantization_agnostic_ops().count(op) || !o_.config.is_output_quantized(op)) continue;
      for (const auto& out : node.outputs) {
        if (out.empty() || !is_float(out)) continue;
        if (graph_outputs.count(out) && !o_.config.is_model_output_quantized(op)) continue;
        activations.push_back({out, node.name});
      }
    }
    add_param_quantizers();
    for (const auto& [tensor, layer] : activations) add_activation_quantizer(tensor, layer);
    share_concat_inputs();
    return infos_;
  }

 private:
  bool is_float(const std::string& value) const {
    const auto it = dtypes_.find(value);
    return it != dtypes_.end() && at::isFloatingType(it->second);
  }

  int bits_for(const std::string& layer, bool param) const {
    const auto it = o_.layer_bits.find(layer);
    if (it != o_.layer_bits.end()) {
      const auto& bits = param ? it->second.param_bits : it->second.activation_bits;
      if (bits) return *bits;
    }
    if (!param && o_.model_input_bits && layer == m_.graph().inputs[0].name) return *o_.model_input_bits;
    return param ? o_.config.param_bitwidth : o_.config.activation_bitwidth;
  }

  std::string attach_quantizer(const std::string& name, const QuantSpec& spec, const std::string& analyzer,
                               int64_t channels) {
    m_.attach(name, std::make_shared<Quantizer>(spec, analyzer, channels));
    return name;
  }

  void add_param_quantizers() {
    Graph& g = m_.mutable_graph();
    std::vector<std::string> weighted;  // by name: insertions below move nodes
    for (const Node& node : g.nodes) {
      if (is_weighted(config_op_type(node))) weighted.push_back(node.name);
    }
    for (const auto& node_name : weighted) {
      const Node node = g.nodes[g.node_index(node_name)];
      const std::string op = config_op_type(node);
      for (const auto& [index, param] : {std::pair<size_t, std::string>{1, "weight"}, {2, "bias"}}) {
        if (!node.has_input(index) || !m_.has_initializer(node.inputs[index])) continue;
        if (!o_.config.is_param_quantized(op, param)) continue;
        QuantSpec spec;
        spec.grid = {bits_for(node.name, true), true, false};
        spec.symmetric = o_.config.is_param_symmetric(op, param);
        const Tensor value = m_.initializer(node.inputs[index]);
        int64_t channels = 1;
        if (param == "weight" && o_.config.is_per_channel(op)) {
          spec.channel_axis = weight_channel_axis(node);
          channels = value.size(normalize_axis(*spec.channel_axis, value.dim()));
        }
        const std::string name = node.name + "." + param + "_quantizer";
        attach_quantizer(name, spec, o_.param_analyzer, channels);
        infos_.push_back({name, node.inputs[index], node.name, true});
        if (node.op_type == kConvBnOp && param == "weight") {
          // Applied inside the fused op, to the folded weight.
          g.nodes[g.node_index(node.name)].attributes["weight_quantizer"] = name;
        } else {
          insert_quantizer_node(node.inputs[index], name, {g.node_index(node.name)});
        }
      }
    }
  }

  void add_activation_quantizer(const std::string& tensor, const std::string& layer) {
    const Graph& g = m_.graph();
    QuantSpec spec;
    const Node* producer = g.producer(tensor);
    const bool non_negative = producer && non_negative_output(*producer, m_);
    spec.symmetric = o_.config.is_activation_symmetric(producer ? config_op_type(*producer) : "");
    spec.grid = {bits_for(layer, false), spec.symmetric && !(o_.config.unsigned_symmetric && non_negative), false};
    const std::string name = tensor + ".quantizer";
    attach_quantizer(name, spec, o_.activation_analyzer, 1);
    infos_.push_back({name, tensor, layer, false});
    insert_quantizer_node(tensor, name, g.consumers(tensor));
  }

  // value -> QatFakeQuant -> value + ".quantized", read by `readers`.
  void insert_quantizer_node(const std::string& value, const std::string& quantizer, std::vector<size_t> readers) {
    Graph& g = m_.mutable_graph();
    const std::string quantized = value + ".quantized";
    for (size_t r : readers) {
      for (auto& in : g.nodes[r].inputs) {
        if (in == value) in = quantized;
      }
    }
    for (auto& out : g.outputs) {
      if (out == value) out = quantized;
    }
    Node q;
    q.name = quantizer;
    q.op_type = kFakeQuantOp;
    q.inputs = {value};
    q.outputs = {quantized};
    q.attributes["quantizer"] = quantizer;
    // Right after the producer (or first, for inputs and initializers), so
    // that the order stays topological.
    const Node* producer = g.producer(value);
    const size_t at = producer ? g.node_index(producer->name) + 1 : 0;
    g.nodes.insert(g.nodes.begin() + static_cast<std::ptrdiff_t>(at), std::move(q));
    quantized_by_[quantized] = quantizer;
  }

  // Concat must not requantize: all its inputs share the first one's
  // quantizer, so they lie on one grid.
  void share_concat_inputs() {
    Graph& g = m_.mutable_graph();
    for (const Node& node : g.nodes) {
      if (node.op_type != "Concat") continue;
      std::string shared;
      for (const auto& in : node.inputs) {
        const auto it = quantized_by_.find(in);
        if (it == quantized_by_.end()) continue;
        if (shared.empty()) {
          shared = it->second;
          continue;
        }
        const std::string old = it->second;
        for (auto& n : g.nodes) {
          if (n.op_type == kFakeQuantOp && n.attr_string("quantizer") == old) n.attributes["quantizer"] = shared;
        }
        for (auto& info : infos_) {
          if (info.name == old) info.name = shared;
        }
        for (auto& entry : quantized_by_) {
          if (entry.second == old) entry.second = shared;
        }
        m_.detach(old);
      }
    }
  }

  GraphModule& m_;
  const QuantSimOptions& o_;
  std::map<std::string, torch::ScalarType> dtypes_;
  std::vector<QuantizerInfo> infos_;
  std::map<std::string, std::string> quantized_by_;  // quantized value -> quantizer
};

}  // namespace

QuantSim::QuantSim(std::shared_ptr<GraphModule> model, QuantSimOptions options, std::vector<int64_t> input_shape)
    : model_(std::move(model)), options_(std::move(options)) {
  register_fake_quant_op();
  register_conv_bn_op();
  if (options_.batchnorm == BatchNormMode::kFold) {
    fold_batchnorms(*model_);
  } else {
    simulate_batchnorms(*model_);
  }
  const auto dtypes = probe_dtypes(*model_, input_shape);
  quantizers_ = Placement(*model_, options_, dtypes).run();
  absorb_activations(*model_, dtypes);
}

Quantizer& QuantSim::quantizer(const std::string& name) {
  return static_cast<Quantizer&>(model_->attachment(name));
}

namespace {

template <typename F>
void for_each_quantizer(QuantSim& sim, const F& fn) {
  std::set<std::string> seen;
  for (const auto& info : sim.quantizers()) {
    if (seen.insert(info.name).second) fn(info, sim.quantizer(info.name));
  }
}

}  // namespace

void QuantSim::compute_encodings(const std::function<void(GraphModule&)>& forward_pass) {
  for_each_quantizer(*this, [](const QuantizerInfo&, Quantizer& q) { q.start_calibration(); });
  const bool was_training = model_->is_training();
  model_->eval();
  {
    torch::NoGradGuard no_grad;
    forward_pass(*model_);
  }
  model_->train(was_training);
  std::string unseen;
  for_each_quantizer(*this, [&](const QuantizerInfo& info, Quantizer& q) {
    try {
      q.finish_calibration();
    } catch (const std::logic_error&) {
      unseen += (unseen.empty() ? "" : ", ") + info.name;
    }
  });
  if (!unseen.empty()) throw std::runtime_error("calibration data never reached these quantizers: " + unseen);
}

void QuantSim::set_quantization_enabled(bool enabled) {
  for_each_quantizer(*this, [&](const QuantizerInfo&, Quantizer& q) { q.set_enabled(enabled); });
}

void QuantSim::set_range_learning(bool weights, bool activations) {
  for_each_quantizer(*this, [&](const QuantizerInfo& info, Quantizer& q) {
    q.set_trainable(info.is_param ? weights : activations);
  });
  if (activations) {
    link_quantized_conv_inputs(*model_);
    link_quantized_batchnorm_outputs(*model_);
  } else {
    unlink_quantized_conv_inputs(*model_);
    unlink_quantized_batchnorm_outputs(*model_);
  }
}

std::vector<Tensor> QuantSim::encoding_parameters() {
  std::vector<Tensor> params;
  for_each_quantizer(*this, [&](const QuantizerInfo&, Quantizer& q) {
    for (const auto& p : q.encoding_parameters()) params.push_back(p);
  });
  return params;
}

std::vector<Tensor> QuantSim::weight_parameters() {
  std::vector<Tensor> params;
  for (const auto& name : model_->initializer_names()) {
    const Tensor t = model_->initializer(name);
    if (t.requires_grad()) params.push_back(t);
  }
  return params;
}

void QuantSim::freeze_batchnorm_stats(bool frozen) {
  for (auto& node : model_->mutable_graph().nodes) {
    if (node.op_type == kConvBnOp) node.attributes["frozen"] = int64_t{frozen ? 1 : 0};
  }
}

std::vector<LayerSqnr> QuantSim::sqnr_report(const Tensor& batch) {
  std::map<std::string, Tensor> reference;
  std::map<std::string, Tensor>* target = &reference;
  std::map<std::string, Tensor> quantized;
  model_->set_observer([&](const Node& node, const std::vector<Tensor>& outs) {
    if (node.op_type != kFakeQuantOp && !outs.empty() && outs[0].defined()) (*target)[node.name] = outs[0];
  });
  const bool was_training = model_->is_training();
  model_->eval();
  torch::NoGradGuard no_grad;
  set_quantization_enabled(false);
  model_->forward(batch);
  set_quantization_enabled(true);
  target = &quantized;
  model_->forward(batch);
  model_->set_observer(nullptr);
  model_->train(was_training);
  std::vector<LayerSqnr> report;
  for (const Node& node : model_->graph().nodes) {
    const auto ref = reference.find(node.name);
    if (ref == reference.end() || !at::isFloatingType(ref->second.scalar_type())) continue;
    report.push_back({node.name, config_op_type(node), sqnr_db(ref->second, quantized.at(node.name))});
  }
  return report;
}

std::string QuantSim::describe() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& info : quantizers_) {
    const QuantSpec& spec = static_cast<Quantizer&>(model_->attachment(info.name)).spec();
    list.push_back({{"name", info.name},
                    {"tensor", info.tensor},
                    {"layer", info.layer},
                    {"is_param", info.is_param},
                    {"bitwidth", spec.grid.bitwidth},
                    {"signed", spec.grid.is_signed},
                    {"symmetric", spec.symmetric},
                    {"axis", spec.channel_axis ? *spec.channel_axis : -1}});
  }
  return list.dump();
}

}  // namespace qat
