// Kernels for the ONNX neural-network ops: convolutions, Gemm and MatMul,
// BatchNormalization, pooling, Dropout and Softmax. Each is built from
// differentiable torch ops, so that QAT gradients reach inputs and weights.
#include "graph/ops.h"
#include "qat/encoding.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace qat::ops {
namespace {

using torch::Tensor;
using Inputs = std::vector<Tensor>;
using Outputs = std::vector<Tensor>;

// The executor passes one tensor per node input, so trailing optional
// inputs that the node leaves out are absent, not undefined.
Tensor optional_input(const Inputs& in, size_t i) { return i < in.size() ? in[i] : Tensor(); }

bool wants_output(const Node& node, size_t i) { return i < node.outputs.size() && !node.outputs[i].empty(); }

// Number of spatial axes of an N x C x D1 x ... input.
size_t spatial_rank(const Tensor& x) {
  if (x.dim() < 3 || x.dim() > 5) {
    throw std::invalid_argument("input has rank " + std::to_string(x.dim()) +
                                "; expected N x C x D1 [x D2 [x D3]] (1 to 3 spatial axes)");
  }
  return static_cast<size_t>(x.dim() - 2);
}

// A per-spatial-axis attribute (strides, dilations, ...), `fill` on every
// axis when absent.
std::vector<int64_t> spatial_attr(const Node& node, const std::string& key, size_t rank, int64_t fill) {
  std::vector<int64_t> values = node.attr_ints(key, std::vector<int64_t>(rank, fill));
  if (values.size() != rank) {
    throw std::invalid_argument("attribute '" + key + "' has " + std::to_string(values.size()) + " values for " +
                                std::to_string(rank) + " spatial axes");
  }
  return values;
}

// Spatial extent of a dilated kernel: (k - 1) * d + 1 per axis.
std::vector<int64_t> kernel_extent(const std::vector<int64_t>& kernel, const std::vector<int64_t>& dilations) {
  std::vector<int64_t> extent(kernel.size());
  for (size_t i = 0; i < kernel.size(); ++i) extent[i] = (kernel[i] - 1) * dilations[i] + 1;
  return extent;
}

// ONNX lets the two sides of an axis be padded differently; torch does not.
struct Pads {
  std::vector<int64_t> begin;
  std::vector<int64_t> end;

  bool symmetric() const { return begin == end; }
  bool none() const {
    return std::all_of(begin.begin(), begin.end(), [](int64_t p) { return p == 0; }) &&
           std::all_of(end.begin(), end.end(), [](int64_t p) { return p == 0; });
  }
};

// The `pads` attribute: [x1_begin, x2_begin, ..., x1_end, x2_end].
Pads explicit_pads(const Node& node, size_t rank) {
  const std::vector<int64_t> list = node.attr_ints("pads", std::vector<int64_t>(2 * rank, 0));
  if (list.size() != 2 * rank) {
    throw std::invalid_argument("attribute 'pads' has " + std::to_string(list.size()) + " values; " +
                                std::to_string(rank) + " spatial axes need " + std::to_string(2 * rank));
  }
  return {{list.begin(), list.begin() + static_cast<std::ptrdiff_t>(rank)},
          {list.begin() + static_cast<std::ptrdiff_t>(rank), list.end()}};
}

// Splits `total` padding between the sides of an axis; SAME_UPPER puts the
// odd element at the end. Python-style floor halving keeps this right for
// the negative totals a transposed convolution can have.
void split_padding(int64_t total, bool upper, int64_t& begin, int64_t& end) {
  const int64_t small = total >= 0 ? total / 2 : -((1 - total) / 2);
  begin = upper ? small : total - small;
  end = total - begin;
}

std::string auto_pad_mode(const Node& node) {
  const std::string mode = node.attr_string("auto_pad", "NOTSET");
  if (mode != "NOTSET" && mode != "VALID" && mode != "SAME_UPPER" && mode != "SAME_LOWER") {
    throw std::invalid_argument("unknown auto_pad '" + mode + "'");
  }
  return mode;
}

// Padding of a convolution or pooling window, from `pads` or `auto_pad`:
// SAME_* pads so that the output has ceil(in / stride) elements.
Pads window_pads(const Node& node, torch::IntArrayRef in, const std::vector<int64_t>& extent,
                 const std::vector<int64_t>& strides) {
  const size_t rank = extent.size();
  const std::string mode = auto_pad_mode(node);
  if (mode == "NOTSET") {
    // A pad wider than the window only adds outputs that see nothing but
    // padding; bounding it keeps a corrupt attribute (pads of 1e9, found
    // by fuzz/onnx_import_fuzzer) from allocating gigabytes.
    const Pads pads = explicit_pads(node, rank);
    for (size_t i = 0; i < rank; ++i) {
      for (const int64_t pad : {pads.begin[i], pads.end[i]}) {
        if (pad < 0 || pad > extent[i]) {
          throw std::invalid_argument("attribute 'pads' has " + std::to_string(pad) + " for spatial axis " +
                                      std::to_string(i) + "; it must be between 0 and the window's extent " +
                                      std::to_string(extent[i]));
        }
      }
    }
    return pads;
  }
  Pads pads{std::vector<int64_t>(rank, 0), std::vector<int64_t>(rank, 0)};
  if (mode == "VALID") return pads;
  for (size_t i = 0; i < rank; ++i) {
    const int64_t out = (in[i] + strides[i] - 1) / strides[i];
    const int64_t total = std::max<int64_t>(0, (out - 1) * strides[i] + extent[i] - in[i]);
    split_padding(total, mode == "SAME_UPPER", pads.begin[i], pads.end[i]);
  }
  return pads;
}

// Pads (or, for negative amounts, crops) the spatial axes.
Tensor pad_spatial(const Tensor& x, const Pads& pads, double value) {
  if (pads.none()) return x;
  std::vector<int64_t> list;  // constant_pad_nd starts from the last axis
  for (size_t i = pads.begin.size(); i-- > 0;) {
    list.push_back(pads.begin[i]);
    list.push_back(pads.end[i]);
  }
  return torch::constant_pad_nd(x, list, value);
}

// The spatial kernel size, from the weight (O x I x k1 x ...), checked
// against the optional kernel_shape attribute.
std::vector<int64_t> conv_kernel(const Node& node, const Tensor& x, const Tensor& w) {
  if (w.dim() != x.dim()) {
    throw std::invalid_argument("weight has rank " + std::to_string(w.dim()) + ", input has rank " +
                                std::to_string(x.dim()));
  }
  std::vector<int64_t> kernel = w.sizes().slice(2).vec();
  if (node.has_attr("kernel_shape") && node.attr_ints("kernel_shape") != kernel) {
    throw std::invalid_argument("attribute 'kernel_shape' disagrees with the weight's spatial shape");
  }
  return kernel;
}

Outputs conv(const OpContext& ctx, const Inputs& in) {
  const Node& node = ctx.node;
  Tensor x = in.at(0);
  const Tensor& w = in.at(1);
  const size_t rank = spatial_rank(x);
  const auto strides = spatial_attr(node, "strides", rank, 1);
  const auto dilations = spatial_attr(node, "dilations", rank, 1);
  const auto kernel = conv_kernel(node, x, w);
  const Pads pads = window_pads(node, x.sizes().slice(2), kernel_extent(kernel, dilations), strides);
  std::vector<int64_t> padding = pads.begin;
  if (!pads.symmetric()) {
    x = pad_spatial(x, pads, 0.0);
    padding.assign(rank, 0);
  }
  return {torch::convolution(x, w, optional_input(in, 2), strides, padding, dilations, /*transposed=*/false,
                             std::vector<int64_t>(rank, 0), node.attr_int("group", 1))};
}

// How much to crop from each side of the full transposed-convolution output
// ((in - 1) * stride + extent per axis); negative amounts extend it. An
// explicit or SAME output shape overrides the pads attribute.
Pads conv_transpose_pads(const Node& node, torch::IntArrayRef in, const std::vector<int64_t>& extent,
                         const std::vector<int64_t>& strides, const std::vector<int64_t>& output_padding) {
  const size_t rank = extent.size();
  const std::string mode = auto_pad_mode(node);
  std::vector<int64_t> target = node.attr_ints("output_shape", std::vector<int64_t>{});
  if (target.size() == rank + 2) target.erase(target.begin(), target.begin() + 2);  // N and C given too
  if (!target.empty() && target.size() != rank) {
    throw std::invalid_argument("attribute 'output_shape' has " + std::to_string(target.size()) + " values for " +
                                std::to_string(rank) + " spatial axes");
  }
  if (target.empty() && (mode == "SAME_UPPER" || mode == "SAME_LOWER")) {
    for (size_t i = 0; i < rank; ++i) target.push_back(in[i] * strides[i]);
  }
  if (target.empty()) {
    return mode == "VALID" ? Pads{std::vector<int64_t>(rank, 0), std::vector<int64_t>(rank, 0)}
                           : explicit_pads(node, rank);
  }
  Pads pads{std::vector<int64_t>(rank, 0), std::vector<int64_t>(rank, 0)};
  for (size_t i = 0; i < rank; ++i) {
    const int64_t total = strides[i] * (in[i] - 1) + output_padding[i] + extent[i] - target[i];
    split_padding(total, mode == "SAME_UPPER", pads.begin[i], pads.end[i]);
  }
  return pads;
}

// Computes the full transposed convolution and then crops it, which handles
// asymmetric and negative pads alike. output_padding appends positions that
// no input reaches, so zero-extending before adding the bias is exact.
Outputs conv_transpose(const OpContext& ctx, const Inputs& in) {
  const Node& node = ctx.node;
  const Tensor& x = in.at(0);
  const Tensor& w = in.at(1);
  const size_t rank = spatial_rank(x);
  const auto strides = spatial_attr(node, "strides", rank, 1);
  const auto dilations = spatial_attr(node, "dilations", rank, 1);
  const auto output_padding = spatial_attr(node, "output_padding", rank, 0);
  const auto kernel = conv_kernel(node, x, w);
  const std::vector<int64_t> zeros(rank, 0);
  const Tensor full = torch::convolution(x, w, Tensor(), strides, zeros, dilations, /*transposed=*/true, zeros,
                                         node.attr_int("group", 1));
  const Pads pads =
      conv_transpose_pads(node, x.sizes().slice(2), kernel_extent(kernel, dilations), strides, output_padding);
  Pads crop{std::vector<int64_t>(rank), std::vector<int64_t>(rank)};
  for (size_t i = 0; i < rank; ++i) {
    crop.begin[i] = -pads.begin[i];
    crop.end[i] = output_padding[i] - pads.end[i];
  }
  Tensor y = pad_spatial(full, crop, 0.0);
  const Tensor bias = optional_input(in, 2);
  if (bias.defined()) {
    std::vector<int64_t> shape(rank + 1, 1);
    shape[0] = -1;
    y = y + bias.reshape(shape);
  }
  return {y};
}

Outputs gemm(const OpContext& ctx, const Inputs& in) {
  const Node& node = ctx.node;
  const Tensor a = node.attr_int("transA", 0) ? in.at(0).t() : in.at(0);
  const Tensor b = node.attr_int("transB", 0) ? in.at(1).t() : in.at(1);
  Tensor y = torch::mm(a, b);
  const double alpha = node.attr_float("alpha", 1.0);
  if (alpha != 1.0) y = y * alpha;
  const Tensor c = optional_input(in, 2);
  if (c.defined()) {
    const double beta = node.attr_float("beta", 1.0);
    y = y + (beta != 1.0 ? c * beta : c);
  }
  return {y};
}

Outputs matmul(const OpContext&, const Inputs& in) { return {torch::matmul(in.at(0), in.at(1))}; }

// Whether the node itself asks for batch statistics: from opset 14 the
// training_mode attribute, before that the presence of the optional
// statistics outputs (the spec's "training mode" output case).
bool batch_norm_node_trains(const OpContext& ctx) {
  if (ctx.opset >= 14) return ctx.node.attr_int("training_mode", 0) != 0;
  for (size_t i = 1; i < ctx.node.outputs.size(); ++i) {
    if (wants_output(ctx.node, i)) return true;
  }
  return false;
}

// Writes an updated running statistic back into the module, so that a later
// eval() run uses it. Only initializers are state; a statistic computed by
// another node is left alone.
void store_statistic(const OpContext& ctx, size_t input, const Tensor& value) {
  const std::string& name = ctx.node.inputs[input];
  if (!ctx.module.has_initializer(name)) return;
  torch::NoGradGuard no_grad;
  ctx.module.initializer(name).copy_(value);
}

// Inference normalizes with the running statistics. Training normalizes
// with the batch statistics and moves the running ones by
// running * momentum + batch * (1 - momentum). A node in training mode of
// its own (the spec's case) uses the population (biased) batch variance, as
// the spec and its test data do; a model being trained uses PyTorch's
// unbiased variance, like every torch BatchNorm. The two differ by a factor
// n / (n - 1), n = N x D1 x ... per channel.
Outputs batch_norm(const OpContext& ctx, const Inputs& in) {
  const Node& node = ctx.node;
  const Tensor& x = in.at(0);
  const Tensor& mean = in.at(3);
  const Tensor& var = in.at(4);
  const double epsilon = node.attr_float("epsilon", 1e-5);
  if (!ctx.training && !batch_norm_node_trains(ctx)) {
    return {torch::batch_norm(x, in.at(1), in.at(2), mean, var, /*training=*/false, 0.0, epsilon,
                              /*cudnn_enabled=*/true),
            mean, var};
  }
  const double momentum = node.attr_float("momentum", 0.9);
  if (!batch_norm_node_trains(ctx) && ctx.module.has_initializer(node.inputs[3]) &&
      ctx.module.has_initializer(node.inputs[4])) {
    // Training the model: one ATen pass normalises and moves the running
    // statistics in place, by PyTorch's rule (unbiased batch variance), as
    // the simulated-fold op of QAT does. Computing the ONNX-rule statistics
    // separately would read the activation a second time.
    Tensor running_mean = ctx.module.initializer(node.inputs[3]);
    Tensor running_var = ctx.module.initializer(node.inputs[4]);
    return {torch::batch_norm(x, in.at(1), in.at(2), running_mean, running_var, /*training=*/true, 1.0 - momentum,
                              epsilon, /*cudnn_enabled=*/true),
            running_mean, running_var};
  }
  const Tensor y = torch::batch_norm(x, in.at(1), in.at(2), Tensor(), Tensor(), /*training=*/true, 0.0, epsilon,
                                     /*cudnn_enabled=*/true);
  torch::NoGradGuard no_grad;
  std::vector<int64_t> reduce{0};
  for (int64_t d = 2; d < x.dim(); ++d) reduce.push_back(d);
  Tensor batch_var, batch_mean;
  std::tie(batch_var, batch_mean) = torch::var_mean(x, reduce, /*unbiased=*/false);
  batch_mean = batch_mean.to(mean.scalar_type());
  batch_var = batch_var.to(var.scalar_type());
  const Tensor running_mean = mean * momentum + batch_mean * (1.0 - momentum);
  const Tensor running_var = var * momentum + batch_var * (1.0 - momentum);
  if (ctx.training) {
    store_statistic(ctx, 3, running_mean);
    store_statistic(ctx, 4, running_var);
  }
  if (ctx.opset >= 14) return {y, running_mean, running_var};
  return {y, running_mean, running_var, batch_mean, batch_var};  // opset 9-13 also output saved_mean/var
}

// Pooling geometry. A 1-D pool runs as a 2-D one over a leading axis of
// size 1, so that only the 2-D and 3-D torch pools are needed.
struct Pool {
  std::vector<int64_t> kernel;
  std::vector<int64_t> strides;
  std::vector<int64_t> dilations;
  Pads pads;
  bool ceil_mode = false;
  bool lifted = false;  // a 1-D pool run as 2-D

  // Whether torch's own symmetric padding can be used: it requires
  // pad <= kernel / 2 on every axis.
  bool torch_can_pad() const {
    if (!pads.symmetric()) return false;
    for (size_t i = 0; i < kernel.size(); ++i) {
      if (pads.begin[i] > kernel[i] / 2) return false;
    }
    return true;
  }
  std::vector<int64_t> no_padding() const { return std::vector<int64_t>(kernel.size(), 0); }
};

Pool pool_geometry(const Node& node, const Tensor& x, bool has_dilations) {
  Pool pool;
  pool.kernel = node.attr_ints("kernel_shape");
  const size_t rank = pool.kernel.size();
  if (rank < 1 || rank > 3 || x.dim() != static_cast<int64_t>(rank) + 2) {
    throw std::invalid_argument("kernel_shape has " + std::to_string(rank) + " axes for an input of rank " +
                                std::to_string(x.dim()) + "; expected N x C x D1 [x D2 [x D3]]");
  }
  pool.strides = spatial_attr(node, "strides", rank, 1);
  pool.dilations = has_dilations ? spatial_attr(node, "dilations", rank, 1) : std::vector<int64_t>(rank, 1);
  pool.pads = window_pads(node, x.sizes().slice(2), kernel_extent(pool.kernel, pool.dilations), pool.strides);
  pool.ceil_mode = node.attr_int("ceil_mode", 0) != 0;
  if (rank == 1) {
    pool.lifted = true;
    pool.kernel.insert(pool.kernel.begin(), 1);
    pool.strides.insert(pool.strides.begin(), 1);
    pool.dilations.insert(pool.dilations.begin(), 1);
    pool.pads.begin.insert(pool.pads.begin.begin(), 0);
    pool.pads.end.insert(pool.pads.end.begin(), 0);
  }
  return pool;
}

// Turns torch's max-pool indices (row-major within each N x C plane of the
// tensor it pooled, which may be padded) into ONNX's: flat indices into the
// whole unpadded input, with the spatial axes row-major, or column-major
// for storage_order 1.
Tensor onnx_pool_indices(const Tensor& indices, torch::IntArrayRef pooled, const Pads& pads, torch::IntArrayRef input,
                         bool column_major) {
  const size_t rank = pooled.size();
  std::vector<int64_t> strides(rank, 1);
  if (column_major) {
    for (size_t i = 1; i < rank; ++i) strides[i] = strides[i - 1] * input[i - 1];
  } else {
    for (size_t i = rank - 1; i-- > 0;) strides[i] = strides[i + 1] * input[i + 1];
  }
  Tensor rest = indices;
  Tensor flat = torch::zeros_like(indices);
  for (size_t i = rank; i-- > 0;) {
    const Tensor coordinate = torch::remainder(rest, pooled[i]) - pads.begin[i];
    rest = torch::div(rest, pooled[i], "floor");
    flat = flat + coordinate * strides[i];
  }
  int64_t plane = 1;
  for (int64_t d : input) plane *= d;
  const int64_t planes = indices.size(0) * indices.size(1);
  std::vector<int64_t> shape(rank + 2, 1);
  shape[0] = indices.size(0);
  shape[1] = indices.size(1);
  return flat + torch::arange(planes, indices.options()).reshape(shape) * plane;
}

// In ceil mode a last window that would start in the end padding is
// dropped, as in PyTorch, onnxruntime and the ONNX spec since 1.16. torch
// applies that rule to its own padding only; after explicit padding it can
// return one window too many per axis.
Tensor drop_windows_in_end_padding(Tensor y, const Pool& pool, torch::IntArrayRef unpadded) {
  if (!pool.ceil_mode) return y;
  for (size_t i = 0; i < pool.kernel.size(); ++i) {
    const int64_t axis = static_cast<int64_t>(i) + 2;
    const int64_t out = y.size(axis);
    if (out > 1 && (out - 1) * pool.strides[i] >= unpadded[i] + pool.pads.begin[i]) y = y.narrow(axis, 0, out - 1);
  }
  return y;
}

// torch's max pool only takes floating point; the integer types ONNX allows
// (int8, uint8) are exact in float.
Outputs max_pool(const OpContext& ctx, const Inputs& in) {
  const Node& node = ctx.node;
  const Tensor& input = in.at(0);
  const Pool pool = pool_geometry(node, input, /*has_dilations=*/true);
  Tensor x = input.is_floating_point() ? input : input.to(torch::kFloat);
  if (pool.lifted) x = x.unsqueeze(2);
  const std::vector<int64_t> unpadded = x.sizes().slice(2).vec();
  // torch's own padding leaves its indices referring to the unpadded input.
  const bool torch_pads = pool.torch_can_pad();
  const Pads offsets = torch_pads ? Pads{pool.no_padding(), pool.no_padding()} : pool.pads;
  if (!torch_pads) x = pad_spatial(x, pool.pads, -std::numeric_limits<double>::infinity());
  const std::vector<int64_t> padding = torch_pads ? pool.pads.begin : pool.no_padding();
  Tensor y, indices;
  if (pool.kernel.size() == 2) {
    std::tie(y, indices) =
        torch::max_pool2d_with_indices(x, pool.kernel, pool.strides, padding, pool.dilations, pool.ceil_mode);
  } else {
    std::tie(y, indices) =
        torch::max_pool3d_with_indices(x, pool.kernel, pool.strides, padding, pool.dilations, pool.ceil_mode);
  }
  if (!torch_pads) {
    y = drop_windows_in_end_padding(y, pool, unpadded);
    indices = drop_windows_in_end_padding(indices, pool, unpadded);
  }
  y = (pool.lifted ? y.squeeze(2) : y).to(input.scalar_type());
  if (!wants_output(node, 1)) return {y};
  indices = onnx_pool_indices(indices, x.sizes().slice(2), offsets, unpadded, node.attr_int("storage_order", 0) != 0);
  return {y, pool.lifted ? indices.squeeze(2) : indices};
}

Tensor torch_avg_pool(const Tensor& x, const Pool& pool, const std::vector<int64_t>& padding, bool count_include_pad) {
  if (pool.kernel.size() == 2) {
    return torch::avg_pool2d(x, pool.kernel, pool.strides, padding, pool.ceil_mode, count_include_pad);
  }
  return torch::avg_pool3d(x, pool.kernel, pool.strides, padding, pool.ceil_mode, count_include_pad);
}

// Padding that torch cannot express is added explicitly; without
// count_include_pad the window sums are then divided by the number of real
// input elements each window covers, pooled from a padded mask of ones.
Outputs average_pool(const OpContext& ctx, const Inputs& in) {
  const Node& node = ctx.node;
  const Pool pool = pool_geometry(node, in.at(0), /*has_dilations=*/false);
  const bool count_include_pad = node.attr_int("count_include_pad", 0) != 0;
  Tensor x = pool.lifted ? in[0].unsqueeze(2) : in[0];
  Tensor y;
  if (pool.torch_can_pad()) {
    y = torch_avg_pool(x, pool, pool.pads.begin, count_include_pad);
  } else {
    y = torch_avg_pool(pad_spatial(x, pool.pads, 0.0), pool, pool.no_padding(), true);
    if (!count_include_pad) {
      std::vector<int64_t> plane(x.sizes().begin(), x.sizes().end());
      plane[0] = plane[1] = 1;
      const Tensor ones = torch::ones(plane, x.options());
      y = y / torch_avg_pool(pad_spatial(ones, pool.pads, 0.0), pool, pool.no_padding(), true);
    }
    y = drop_windows_in_end_padding(y, pool, x.sizes().slice(2));
  }
  return {pool.lifted ? y.squeeze(2) : y};
}

std::vector<int64_t> spatial_axes(const Tensor& x) {
  if (x.dim() < 3)
    throw std::invalid_argument("input has rank " + std::to_string(x.dim()) + "; expected N x C x D1 ...");
  std::vector<int64_t> axes;
  for (int64_t d = 2; d < x.dim(); ++d) axes.push_back(d);
  return axes;
}

Outputs global_average_pool(const OpContext&, const Inputs& in) {
  return {in.at(0).mean(spatial_axes(in[0]), /*keepdim=*/true)};
}

Outputs global_max_pool(const OpContext&, const Inputs& in) {
  return {torch::amax(in.at(0), spatial_axes(in[0]), /*keepdim=*/true)};
}

// Opset 12 moved ratio from an attribute to an input and added the
// training_mode input. Dropout drops when the module trains or the node
// says so; the seed attribute is ignored (torch's global generator is used).
Outputs dropout(const OpContext& ctx, const Inputs& in) {
  const Node& node = ctx.node;
  const Tensor& x = in.at(0);
  double ratio = 0.5;
  bool node_trains = false;
  if (ctx.opset >= 12) {
    const Tensor ratio_input = optional_input(in, 1);
    const Tensor training_mode = optional_input(in, 2);
    if (ratio_input.defined()) ratio = ratio_input.item<double>();
    node_trains = training_mode.defined() && training_mode.item<bool>();
  } else {
    ratio = node.attr_float("ratio", 0.5);
  }
  if (ratio < 0.0 || ratio >= 1.0) throw std::invalid_argument("ratio " + std::to_string(ratio) + " is not in [0, 1)");
  if ((!ctx.training && !node_trains) || ratio == 0.0) {
    if (!wants_output(node, 1)) return {x};
    return {x, torch::ones_like(x, torch::TensorOptions().dtype(torch::kBool))};
  }
  const Tensor mask = torch::rand_like(x) >= ratio;
  return {x * mask * (1.0 / (1.0 - ratio)), mask};
}

// Opset 13 normalizes along `axis` (default -1). Before, the input is seen
// as 2-D, [d0 * ... * d(axis-1), d(axis) * ... * dn] (default axis 1), and
// each row is normalized over all its trailing axes at once.
OpKernel softmax_kernel(bool log) {
  return [log](const OpContext& ctx, const Inputs& in) -> Outputs {
    const Tensor& x = in.at(0);
    auto apply = [log](const Tensor& t, int64_t dim) {
      return log ? torch::log_softmax(t, dim) : torch::softmax(t, dim);
    };
    if (ctx.opset >= 13) return {apply(x, normalize_axis(ctx.node.attr_int("axis", -1), x.dim()))};
    const int64_t axis = normalize_axis(ctx.node.attr_int("axis", 1), x.dim());
    return {apply(x.flatten(axis), axis).reshape(x.sizes())};
  };
}

}  // namespace

void add_nn_ops(KernelMap& kernels) {
  kernels["AveragePool"] = average_pool;
  kernels["BatchNormalization"] = batch_norm;
  kernels["Conv"] = conv;
  kernels["ConvTranspose"] = conv_transpose;
  kernels["Dropout"] = dropout;
  kernels["Gemm"] = gemm;
  kernels["GlobalAveragePool"] = global_average_pool;
  kernels["GlobalMaxPool"] = global_max_pool;
  kernels["LogSoftmax"] = softmax_kernel(/*log=*/true);
  kernels["MatMul"] = matmul;
  kernels["MaxPool"] = max_pool;
  kernels["Softmax"] = softmax_kernel(/*log=*/false);
}

}  // namespace qat::ops
