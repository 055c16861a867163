// QuantSim -> QDQ ONNX model. The sim graph is walked in order and each
// node is written as what a runtime's integer kernels expect:
//
//   QatFakeQuant on an initializer  -> int8 initializer -> DequantizeLinear
//   QatFakeQuant on an activation   -> [its absorbed Relu/Clip] -> [Clip] -> QuantizeLinear -> DequantizeLinear
//   QatConvBn                       -> Conv with the folded weight and bias
//   Conv/Gemm float bias            -> int32 initializer (scale s_in * s_w) -> DequantizeLinear
//   layout op on a quantized value  -> the op, then Q -> DQ with the same encoding
//
// Tensor names stay the sim's (the original model's), so an encodings file
// written from the same sim maps onto the exported graph.
#include "qat/onnx_export.h"

#include "onnx/proto_builder.h"
#include "qat/encodings.h"
#include "qat/fake_quant.h"
#include "sim/absorb_activations.h"
#include "sim/batchnorm.h"
#include "sim/quantizing_batchnorm.h"
#include "sim/recomputing_conv.h"

#include <algorithm>
#include <set>
#include <stdexcept>

namespace qat {
namespace {

using TP = onnx::TensorProto;
using torch::Tensor;

// QuantizeLinear with per-channel axis exists from opset 13; 16-bit
// integer types from opset 21.
constexpr int64_t kMinQdqOpset = 13;
constexpr int64_t kWideQdqOpset = 21;

// Ops whose outputs are values of their (first) input: requantizing them
// with the input's encoding is exact, and gives the runtime a DQ in front
// of the next quantized op (Flatten before Gemm, MaxPool).
const std::set<std::string>& value_moving_ops() {
  static const std::set<std::string> ops{"MaxPool", "GlobalMaxPool", "Reshape", "Flatten",  "Transpose",
                                         "Squeeze", "Unsqueeze",     "Identity", "Dropout", "Slice",
                                         "Gather",  "Expand",        "Tile",     "Concat"};
  return ops;
}

// Reduce ops whose axes moved from an attribute to an input at opset 18.
const std::set<std::string>& reduce_ops_with_axes_input_at_18() {
  static const std::set<std::string> ops{"ReduceMean", "ReduceMax",    "ReduceMin",       "ReduceProd",     "ReduceL1",
                                         "ReduceL2",   "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"};
  return ops;
}

// The integer type holding a grid: 8-bit for 2-8 bits, 16-bit above.
struct Container {
  int32_t type;
  int64_t lo, hi;
};

Container container_of(const QuantGrid& grid) {
  const bool wide = grid.bitwidth > 8;
  if (grid.is_signed) return wide ? Container{TP::INT16, -32768, 32767} : Container{TP::INT8, -128, 127};
  return wide ? Container{TP::UINT16, 0, 65535} : Container{TP::UINT8, 0, 255};
}

bool fills_container(const QuantGrid& grid) {
  const Container c = container_of(grid);
  return grid.qmin() == c.lo && grid.qmax() == c.hi;
}

bool same_encoding(const Encoding& a, const Encoding& b) {
  return a.spec.grid.bitwidth == b.spec.grid.bitwidth && a.spec.grid.is_signed == b.spec.grid.is_signed &&
         a.spec.grid.narrow_range == b.spec.grid.narrow_range && a.spec.channel_axis == b.spec.channel_axis &&
         torch::equal(a.scale, b.scale) && torch::equal(a.zero_point, b.zero_point);
}

Tensor per_out_channel(const Tensor& v, int64_t dim) {
  std::vector<int64_t> shape(static_cast<size_t>(dim), 1);
  shape[0] = v.numel();
  return v.reshape(shape);
}

// QatConvBn in eval: the conv's weight and bias with the BN folded in,
// computed with the same ops as batchnorm.cpp's kernel, so that the
// quantized weight codes are the sim's.
struct FoldedConv {
  Tensor weight, bias;
};

FoldedConv fold_conv_bn(const GraphModule& m, const Node& node) {
  torch::NoGradGuard no_grad;
  auto init = [&](size_t i) {
    if (!node.has_input(i) || !m.has_initializer(node.inputs[i])) {
      throw std::invalid_argument(node.describe() + ": input " + std::to_string(i) + " is not an initializer");
    }
    return m.initializer(node.inputs[i]);
  };
  const Tensor w = init(1), gamma = init(3), beta = init(4), mean = init(5), var = init(6);
  const Tensor bias = node.has_input(2) ? init(2) : torch::zeros({w.size(0)}, w.options());
  const Tensor factor = gamma / torch::sqrt(var + node.attr_float("epsilon", 1e-5));
  return {w * per_out_channel(factor, w.dim()), (bias - mean) * factor + beta};
}

class QdqWriter {
 public:
  explicit QdqWriter(QuantSim& sim) : sim_(sim), m_(sim.model()), g_(m_.graph()) {
    if (g_.opset < kMinQdqOpset) {
      throw std::invalid_argument("QDQ export needs opset >= 13 (per-channel QuantizeLinear); the model is opset " +
                                  std::to_string(g_.opset) + ": re-export it from its framework at opset 13+");
    }
    opset_ = needs_wide_container() ? kWideQdqOpset : g_.opset;
    for (const auto& in : g_.inputs) taken_.insert(in.name);
    for (const Node& node : g_.nodes) taken_.insert(node.outputs.begin(), node.outputs.end());
    for (const auto& name : m_.initializer_names()) taken_.insert(name);
  }

  // Node name -> the value of its int32 bias, as runtimes dequantize it.
  const std::map<std::string, Tensor>& integer_biases() const { return integer_biases_; }

  onnx::ModelProto run() {
    proto_ = onnx_proto::new_model(opset_, "qat_qdq");
    out_ = proto_.mutable_graph();
    for (const Node& node : g_.nodes) {
      if (node.op_type == kFakeQuantOp) {
        write_fake_quant(node);
      } else if (node.op_type == kConvBnOp) {
        write_conv_bn(node);
      } else if (node.op_type.rfind("Qat", 0) == 0) {
        throw std::invalid_argument(node.describe() + ": qat op with no QDQ form");
      } else {
        write_plain(node);
      }
    }
    write_float_initializers();
    onnx_proto::add_graph_io(out_, m_);
    return std::move(proto_);
  }

 private:
  bool needs_wide_container() {
    for (const auto& info : sim_.quantizers()) {
      if (applied_encoding(sim_, info.name).spec.grid.bitwidth > 8) return true;
    }
    return false;
  }

  // `base`, or base_1, base_2, ... if a value or initializer has that name.
  std::string fresh(const std::string& base) {
    std::string name = base;
    for (int i = 1; taken_.count(name); ++i) name = base + "_" + std::to_string(i);
    taken_.insert(name);
    return name;
  }

  std::string renamed(const std::string& value) const {
    const auto it = renamed_.find(value);
    return it == renamed_.end() ? value : it->second;
  }

  // Where the exported form of an initializer (integer codes, a folded
  // weight) is stored: under its own name, so that encodings files map,
  // unless a node other than `reader` reads the original, as PyTorch's
  // exporter does with Identity nodes for initializers of equal value.
  std::string stored_name(const std::string& initializer, const std::string& reader) {
    for (size_t i : g_.consumers(initializer)) {
      if (g_.nodes[i].name != reader) return fresh(initializer + ".int");
    }
    return initializer;
  }

  const Encoding* grid_of(const std::string& value) const {
    const auto it = grid_.find(value);
    return it == grid_.end() ? nullptr : &it->second;
  }

  void add_initializer(const TP& tensor) {
    *out_->add_initializer() = tensor;
    written_.insert(tensor.name());
  }

  // Scale and zero-point initializers for Q/DQ nodes on `base`.
  std::pair<std::string, std::string> add_qparams(const std::string& base, const Encoding& enc) {
    const std::string scale = fresh(base + ".scale"), zero_point = fresh(base + ".zero_point");
    add_initializer(tensor_to_onnx(enc.scale.to(torch::kFloat), scale));
    add_initializer(tensor_to_onnx(enc.zero_point, zero_point, container_of(enc.spec.grid).type));
    return {scale, zero_point};
  }

  // `base`/QuantizeLinear or `base`/DequantizeLinear; ONNX takes negative
  // channel axes as they are.
  void add_qdq_node(const std::string& op, const std::string& base, const std::string& in, const std::string& out,
                    const std::pair<std::string, std::string>& qparams, std::optional<int64_t> axis) {
    onnx::NodeProto* node =
        onnx_proto::add_node(out_, op, fresh(base + "/" + op), {in, qparams.first, qparams.second}, {out});
    if (axis) onnx_proto::set_attribute(node, "axis", *axis);
  }

  // Weight `name` (read by node `reader`): its codes as an integer
  // initializer, dequantized into `out`.
  void write_weight(const std::string& name, const std::string& reader, const Tensor& value, const Encoding& enc,
                    const std::string& out) {
    torch::NoGradGuard no_grad;
    const std::string codes = stored_name(name, reader);
    add_initializer(tensor_to_onnx(quantize(value, enc), codes, container_of(enc.spec.grid).type));
    add_qdq_node("DequantizeLinear", name, codes, out, add_qparams(name, enc), enc.spec.channel_axis);
    grid_[out] = enc;
  }

  // Activation `in` -> [Clip] -> QuantizeLinear -> DequantizeLinear -> `out`.
  // A grid narrower than its container (sub-8-bit, narrow range) is
  // enforced by clipping to the grid's float range first: QuantizeLinear
  // then yields exactly the sim's codes, never one outside the grid.
  void write_activation(const std::string& in, const std::string& out, const Encoding& enc, const std::string& base) {
    std::string x = in;
    if (!fills_container(enc.spec.grid)) x = write_clip(in, enc, base);
    const auto qparams = add_qparams(base, enc);
    const std::string codes = fresh(base + ".q");
    add_qdq_node("QuantizeLinear", base, x, codes, qparams, enc.spec.channel_axis);
    add_qdq_node("DequantizeLinear", base, codes, out, qparams, enc.spec.channel_axis);
    grid_[out] = enc;
  }

  std::string write_clip(const std::string& in, const Encoding& enc, const std::string& base) {
    if (enc.spec.channel_axis) {
      throw std::invalid_argument("tensor '" + base + "': per-channel activation grids narrower than " +
                                  "their integer type cannot be exported");
    }
    const std::string lo = fresh(base + ".clip_min"), hi = fresh(base + ".clip_max"), out = fresh(base + ".clipped");
    add_initializer(tensor_to_onnx(enc.min().to(torch::kFloat), lo));
    add_initializer(tensor_to_onnx(enc.max().to(torch::kFloat), hi));
    onnx_proto::add_node(out_, "Clip", fresh(base + "/Clip"), {in, lo, hi}, {out});
    return out;
  }

  void write_fake_quant(const Node& node) {
    const Encoding enc = applied_encoding(sim_, node.attr_string("quantizer"));
    const std::string& in = node.inputs.at(0);
    if (m_.has_initializer(in)) {
      write_weight(in, node.name, m_.initializer(in), enc, node.outputs.at(0));
    } else if (node.has_attr(kActivationAttr)) {
      const std::string activated = write_absorbed_activation(node);
      write_activation(activated, node.outputs.at(0), enc, activated);
    } else {
      write_activation(renamed(in), node.outputs.at(0), enc, in);
    }
  }

  // The Relu or Clip a quantizer absorbed (absorb_activations.h), as the
  // model had it; returns its output.
  std::string write_absorbed_activation(const Node& fq) {
    Node activation;
    activation.name = fq.attr_string(kActivationNodeAttr);
    activation.op_type = fq.attr_string(kActivationAttr);
    activation.inputs = fq.attributes.count(kActivationInputsAttr)
                            ? std::get<std::vector<std::string>>(fq.attributes.at(kActivationInputsAttr))
                            : std::vector<std::string>{};
    if (activation.inputs.empty()) throw std::invalid_argument(fq.describe() + ": absorbed activation has no inputs");
    activation.inputs[0] = renamed(fq.inputs.at(0));
    activation.outputs = {fq.attr_string(kActivationOutputAttr)};
    onnx_proto::add_graph_node(out_, activation);
    return activation.outputs[0];
  }

  // Bias of a Conv/Gemm: int32 codes with scale s_in * s_w and zero point
  // 0 where input and weight are quantized (the integer kernels' bias),
  // float otherwise. Sets the node's input 2.
  void write_bias(Node& node, const std::string& name, const Tensor& value) {
    const Encoding* in = grid_of(node.inputs[0]);
    const Encoding* w = grid_of(node.inputs[1]);
    const std::string stored = stored_name(name, node.name);
    node.inputs[2] = stored;
    if (!in || !w || in->spec.channel_axis || value.dim() != 1) {
      add_initializer(tensor_to_onnx(value, stored));
      return;
    }
    const Tensor step = (in->scale * w->scale).to(torch::kFloat);  // [] or [C], as the weight's scale
    const Tensor codes = torch::round(value.to(torch::kDouble) / step.to(torch::kDouble))
                             .clamp(static_cast<double>(INT32_MIN), static_cast<double>(INT32_MAX));
    add_initializer(tensor_to_onnx(codes, stored, TP::INT32));
    const std::string scale = fresh(name + ".scale"), zero_point = fresh(name + ".zero_point");
    add_initializer(tensor_to_onnx(step, scale));
    add_initializer(tensor_to_onnx(torch::zeros_like(step, torch::kInt), zero_point));
    const std::string out = fresh(name + ".quantized");
    const std::optional<int64_t> axis = w->spec.channel_axis ? std::optional<int64_t>(0) : std::nullopt;
    add_qdq_node("DequantizeLinear", name, stored, out, {scale, zero_point}, axis);
    node.inputs[2] = out;
    integer_biases_[node.name] = (codes * step.to(torch::kDouble)).to(torch::kFloat);
  }

  void write_conv_bn(const Node& node) {
    const FoldedConv folded = fold_conv_bn(m_, node);
    Node conv = node;
    conv.op_type = "Conv";
    for (const char* key :
         {"epsilon", "momentum", "frozen", "weight_quantizer", kInputQuantizerAttr, kOutputQuantizerAttr}) {
      conv.attributes.erase(key);
    }
    for (const char* key : {kActivationAttr, kActivationBoundsAttr}) {
      for (const char* prefix : {kInputPrefix, kOutputPrefix}) conv.attributes.erase(prefix + std::string(key));
    }
    conv.inputs = {renamed(node.inputs[0]), node.inputs[1], ""};
    if (node.has_attr("weight_quantizer")) {
      conv.inputs[1] = fresh(node.inputs[1] + ".quantized");
      write_weight(node.inputs[1], node.name, folded.weight,
                   applied_encoding(sim_, node.attr_string("weight_quantizer")), conv.inputs[1]);
    } else {
      conv.inputs[1] = stored_name(node.inputs[1], node.name);
      add_initializer(tensor_to_onnx(folded.weight, conv.inputs[1]));
    }
    write_bias(conv, node.has_input(2) ? node.inputs[2] : fresh(node.name + ".bias"), folded.bias);
    onnx_proto::add_graph_node(out_, conv);
  }

  void write_plain(const Node& original) {
    Node node = original;
    for (auto& in : node.inputs) in = renamed(in);
    const bool has_float_bias = (node.op_type == "Conv" || node.op_type == "Gemm") && node.has_input(2) &&
                                m_.has_initializer(node.inputs[2]) && !written_.count(node.inputs[2]);
    if (has_float_bias) write_bias(node, node.inputs[2], m_.initializer(node.inputs[2]).detach());
    if (opset_ >= 18 && g_.opset < 18) move_axes_to_input(node);
    onnx_proto::add_graph_node(out_, node);
    requantize_output(node);
  }

  void move_axes_to_input(Node& node) {
    if (!reduce_ops_with_axes_input_at_18().count(node.op_type) || !node.has_attr("axes")) return;
    const std::string axes = fresh(node.name + ".axes");
    add_initializer(tensor_to_onnx(torch::tensor(node.attr_ints("axes"), torch::kLong), axes));
    node.attributes.erase("axes");
    node.inputs.resize(1);
    node.inputs.push_back(axes);
  }

  // After a value-moving op on quantized input(s) sharing one encoding,
  // Q -> DQ with that encoding, unless the sim quantizes the output itself
  // or it is a graph output (which keeps its name).
  void requantize_output(const Node& node) {
    if (!value_moving_ops().count(node.op_type) || node.outputs.empty() || node.outputs[0].empty()) return;
    const Encoding* enc = grid_of(node.inputs.at(0));
    if (!enc) return;
    if (node.op_type == "Concat") {
      for (const auto& in : node.inputs) {
        const Encoding* other = grid_of(in);
        if (!other || !same_encoding(*enc, *other)) return;
      }
    }
    const std::string& out = node.outputs[0];
    if (std::find(g_.outputs.begin(), g_.outputs.end(), out) != g_.outputs.end()) return;
    for (size_t reader : g_.consumers(out)) {
      if (g_.nodes[reader].op_type == kFakeQuantOp) return;
    }
    const Encoding copy = *enc;
    const std::string requantized = fresh(out + ".quantized");
    write_activation(out, requantized, copy, out);
    renamed_[out] = requantized;
  }

  void write_float_initializers() {
    std::set<std::string> read(g_.outputs.begin(), g_.outputs.end());
    for (const auto& node : out_->node()) read.insert(node.input().begin(), node.input().end());
    for (const auto& name : m_.initializer_names()) {
      if (read.count(name) && !written_.count(name)) add_initializer(tensor_to_onnx(m_.initializer(name), name));
    }
  }

  QuantSim& sim_;
  GraphModule& m_;
  const Graph& g_;
  int64_t opset_ = kMinQdqOpset;
  onnx::ModelProto proto_;
  onnx::GraphProto* out_ = nullptr;
  std::set<std::string> taken_;                 // every name in use
  std::set<std::string> written_;               // initializers in out_
  std::map<std::string, std::string> renamed_;  // value -> its requantized twin
  std::map<std::string, Encoding> grid_;        // dequantized value -> encoding
  std::map<std::string, Tensor> integer_biases_;
};

}  // namespace

onnx::ModelProto qdq_model_proto(QuantSim& sim) { return QdqWriter(sim).run(); }

void round_biases_to_export_grid(QuantSim& sim) {
  QdqWriter writer(sim);
  writer.run();
  GraphModule& m = sim.model();
  torch::NoGradGuard no_grad;
  for (const auto& [name, value] : writer.integer_biases()) {
    const Node& node = m.graph().nodes[m.graph().node_index(name)];
    if (node.op_type == kConvBnOp) {
      // The folded bias is (b - mean) * factor + beta: beta absorbs the shift.
      m.initializer(node.inputs[4]).add_(value - fold_conv_bn(m, node).bias);
    } else {
      m.initializer(node.inputs[2]).copy_(value);
    }
  }
}

void export_onnx_qdq(QuantSim& sim, const std::string& path) { write_onnx_model(qdq_model_proto(sim), path); }

}  // namespace qat
