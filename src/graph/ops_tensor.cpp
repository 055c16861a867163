// Shape and layout ops. Shape-like inputs (starts, pads, axes, ...) are
// small int64 tensors whose values are read on the CPU; the data tensors go
// through views and differentiable torch ops only.
#include "graph/ops.h"

#include <torch/torch.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

namespace qat::ops {
namespace {

using torch::Tensor;
using Tensors = std::vector<Tensor>;


bool has(const Tensors& in, size_t i) { return i < in.size() && in[i].defined(); }

std::vector<int64_t> int_values(const Tensor& t, const std::string& what) {
  if (t.is_floating_point() || t.scalar_type() == torch::kBool) {
    throw std::invalid_argument(what + " must be an integer tensor, got " + std::string(c10::toString(t.scalar_type())));
  }
  const Tensor flat = t.to(torch::kCPU, torch::kLong).contiguous().reshape({-1});
  return {flat.data_ptr<int64_t>(), flat.data_ptr<int64_t>() + flat.numel()};
}

// Opset 13 (Split, Squeeze, Unsqueeze, ReduceSum) and 18 (the other
// reductions) moved list attributes to inputs; a kernel accepts either, so
// it needs no per-opset branches.
std::optional<std::vector<int64_t>> ints_from_input_or_attr(const OpContext& ctx, const Tensors& in, size_t input,
                                                            const std::string& key) {
  if (has(in, input)) return int_values(in[input], key);
  if (ctx.node.has_attr(key)) return ctx.node.attr_ints(key);
  return std::nullopt;
}

int64_t axis_index(int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank) {
    throw std::invalid_argument("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  }
  return axis < 0 ? axis + rank : axis;
}

std::vector<int64_t> axis_indices(const std::vector<int64_t>& axes, int64_t rank) {
  std::vector<int64_t> result;
  for (int64_t axis : axes) result.push_back(axis_index(axis, rank));
  std::sort(result.begin(), result.end());
  if (std::adjacent_find(result.begin(), result.end()) != result.end()) {
    throw std::invalid_argument("axes name an axis twice");
  }
  return result;
}

int64_t product(c10::IntArrayRef dims) {
  int64_t p = 1;
  for (int64_t d : dims) p *= d;
  return p;
}

Tensors concat(const OpContext& ctx, const Tensors& in) {
  require_inputs(in, in.empty() ? 1 : in.size());
  return {torch::cat(in, ctx.node.attr_int("axis"))};
}

// Without explicit sizes the axis is split into as many equal parts as the
// node has outputs.
Tensors split(const OpContext& ctx, const Tensors& in) {
  require_inputs(in, 1);
  const int64_t axis = axis_index(ctx.node.attr_int("axis", 0), in[0].dim());
  const int64_t dim = in[0].size(axis);
  const auto parts = static_cast<int64_t>(ctx.node.outputs.size());
  std::vector<int64_t> sizes;
  if (auto explicit_sizes = ints_from_input_or_attr(ctx, in, 1, "split")) {
    sizes = *explicit_sizes;
  } else if (parts > 0 && dim % parts == 0) {
    sizes.assign(static_cast<size_t>(parts), dim / parts);
  } else {
    throw std::invalid_argument("cannot split axis of size " + std::to_string(dim) + " into " +
                                std::to_string(parts) + " equal parts");
  }
  if (static_cast<int64_t>(sizes.size()) != parts || std::accumulate(sizes.begin(), sizes.end(), int64_t{0}) != dim) {
    throw std::invalid_argument("split sizes do not match " + std::to_string(parts) + " outputs and axis size " +
                                std::to_string(dim));
  }
  return torch::split_with_sizes(in[0], sizes, axis);
}

// One axis of Slice. ONNX clamps starts and ends into the axis (so
// INT64_MAX means "to the end"); torch slicing has no negative steps, so a
// negative-step slice is taken forwards over the same elements and flipped.
Tensor slice_axis(const Tensor& x, int64_t axis, int64_t start, int64_t end, int64_t step) {
  if (step == 0) throw std::invalid_argument("slice step must not be 0");
  const int64_t dim = x.size(axis);
  if (dim == 0) return x;
  if (start < 0) start += dim;
  if (end < 0) end += dim;
  if (step > 0) {
    start = std::clamp<int64_t>(start, 0, dim);
    end = std::clamp<int64_t>(end, 0, dim);
    return x.slice(axis, start, std::max(start, end), step);
  }
  start = std::clamp<int64_t>(start, 0, dim - 1);
  end = std::clamp<int64_t>(end, -1, dim - 1);
  const int64_t count = start > end ? (start - end - 1) / -step + 1 : 0;
  if (count == 0) return x.slice(axis, 0, 0);
  const int64_t last = start + (count - 1) * step;
  return x.slice(axis, last, start + 1, -step).flip({axis});
}

Tensors slice(const OpContext&, const Tensors& in) {
  require_inputs(in, 3);
  const auto starts = int_values(in[1], "starts");
  const auto ends = int_values(in[2], "ends");
  const int64_t rank = in[0].dim();
  std::vector<int64_t> axes;
  if (has(in, 3)) {
    axes = int_values(in[3], "axes");
  } else {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  const auto steps = has(in, 4) ? int_values(in[4], "steps") : std::vector<int64_t>(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size()) {
    throw std::invalid_argument("starts, ends, axes and steps differ in length");
  }
  axis_indices(axes, rank);  // rejects repeated axes
  Tensor result = in[0];
  for (size_t i = 0; i < starts.size(); ++i) {
    result = slice_axis(result, axis_index(axes[i], rank), starts[i], ends[i], steps[i]);
  }
  return {result};
}

// index_select takes 1-D indices; any other index shape is flattened and
// the result reshaped to data[:axis] + indices.shape + data[axis+1:].
Tensors gather(const OpContext& ctx, const Tensors& in) {
  require_inputs(in, 2);
  const Tensor& data = in[0];
  const int64_t axis = axis_index(ctx.node.attr_int("axis", 0), data.dim());
  if (in[1].is_floating_point()) throw std::invalid_argument("indices must be an integer tensor");
  Tensor indices = in[1].to(torch::kLong);
  indices = torch::where(indices < 0, indices + data.size(axis), indices);
  std::vector<int64_t> shape(data.sizes().begin(), data.sizes().begin() + axis);
  for (int64_t d : indices.sizes()) shape.push_back(d);
  for (int64_t i = axis + 1; i < data.dim(); ++i) shape.push_back(data.size(i));
  return {data.index_select(axis, indices.reshape({-1})).reshape(shape)};
}

Tensors shape(const OpContext& ctx, const Tensors& in) {
  require_inputs(in, 1);
  const int64_t rank = in[0].dim();
  auto clamp_index = [rank](int64_t i) { return std::clamp<int64_t>(i < 0 ? i + rank : i, 0, rank); };
  const int64_t start = clamp_index(ctx.node.attr_int("start", 0));
  const int64_t end = clamp_index(ctx.node.attr_int("end", rank));
  const auto sizes = in[0].sizes();
  return {torch::tensor(std::vector<int64_t>(sizes.begin() + start, sizes.begin() + std::max(start, end)),
                        torch::TensorOptions().dtype(torch::kLong).device(in[0].device()))};
}

// A 0 in the target shape copies the input's size at that index, unless
// allowzero (opset 14) asks for a literal 0.
Tensors reshape(const OpContext& ctx, const Tensors& in) {
  require_inputs(in, 2);
  auto shape = int_values(in[1], "shape");
  if (ctx.node.attr_int("allowzero", 0) == 0) {
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] != 0) continue;
      if (static_cast<int64_t>(i) >= in[0].dim()) {
        throw std::invalid_argument("shape has 0 at index " + std::to_string(i) + " beyond the input's rank");
      }
      shape[i] = in[0].size(static_cast<int64_t>(i));
    }
  }
  return {in[0].reshape(shape)};
}

Tensors flatten(const OpContext& ctx, const Tensors& in) {
  require_inputs(in, 1);
  const int64_t rank = in[0].dim();
  int64_t axis = ctx.node.attr_int("axis", 1);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis > rank) throw std::invalid_argument("axis is out of range for rank " + std::to_string(rank));
  const auto sizes = in[0].sizes();
  return {in[0].reshape({product(sizes.slice(0, axis)), product(sizes.slice(axis))})};
}

Tensors transpose(const OpContext& ctx, const Tensors& in) {
  require_inputs(in, 1);
  std::vector<int64_t> reversed;
  for (int64_t i = in[0].dim() - 1; i >= 0; --i) reversed.push_back(i);
  return {in[0].permute(ctx.node.attr_ints("perm", reversed))};
}

// Without axes (or with an empty list, as ONNX Runtime reads it) every
// size-1 axis goes.
Tensors squeeze(const OpContext& ctx, const Tensors& in) {
  require_inputs(in, 1);
  const Tensor& x = in[0];
  std::vector<int64_t> drop;
  const auto axes = ints_from_input_or_attr(ctx, in, 1, "axes");
  if (axes && !axes->empty()) {
    drop = axis_indices(*axes, x.dim());
    for (int64_t axis : drop) {
      if (x.size(axis) != 1) {
        throw std::invalid_argument("cannot squeeze axis " + std::to_string(axis) + " of size " +
                                    std::to_string(x.size(axis)));
      }
    }
  } else {
    for (int64_t i = 0; i < x.dim(); ++i) {
      if (x.size(i) == 1) drop.push_back(i);
    }
  }
  std::vector<int64_t> shape;
  for (int64_t i = 0; i < x.dim(); ++i) {
    if (!std::binary_search(drop.begin(), drop.end(), i)) shape.push_back(x.size(i));
  }
  return {x.reshape(shape)};
}

// Unsqueeze's axes index the output, whose rank is input rank + len(axes).
Tensors unsqueeze(const OpContext& ctx, const Tensors& in) {
  require_inputs(in, 1);
  const Tensor& x = in[0];
  const auto axes = ints_from_input_or_attr(ctx, in, 1, "axes");
  if (!axes) throw std::invalid_argument("needs axes (an input from opset 13, an attribute before)");
  const int64_t rank = x.dim() + static_cast<int64_t>(axes->size());
  const auto inserted = axis_indices(*axes, rank);
  std::vector<int64_t> shape;
  int64_t next = 0;
  for (int64_t i = 0; i < rank; ++i) {
    shape.push_back(std::binary_search(inserted.begin(), inserted.end(), i) ? 1 : x.size(next++));
  }
  return {x.reshape(shape)};
}

// Indices into an axis of size `dim` for positions -begin .. dim+end-1 of the
// padded axis: "edge" repeats the border element, "reflect" mirrors about it.
// Negative pads crop, which these ranges express as well.
Tensor pad_indices(int64_t dim, int64_t begin, int64_t end, const std::string& mode, torch::Device device) {
  const Tensor positions = torch::arange(-begin, dim + end, torch::TensorOptions().dtype(torch::kLong).device(device));
  if (dim == 0) throw std::invalid_argument("cannot " + mode + "-pad an empty axis");
  if (mode == "edge" || dim == 1) return positions.clamp(0, dim - 1);
  const int64_t period = 2 * (dim - 1);
  const Tensor folded = positions.remainder(period);
  return torch::where(folded >= dim, period - folded, folded);
}

Tensors pad(const OpContext& ctx, const Tensors& in) {
  require_inputs(in, 2);
  const Tensor& x = in[0];
  const auto pads = int_values(in[1], "pads");
  const int64_t rank = x.dim();
  if (static_cast<int64_t>(pads.size()) != 2 * rank) {
    throw std::invalid_argument("pads has " + std::to_string(pads.size()) + " values, rank " + std::to_string(rank) +
                                " needs " + std::to_string(2 * rank));
  }
  const std::string mode = ctx.node.attr_string("mode", "constant");
  if (mode == "constant") {
    // constant_pad_nd lists (begin, end) pairs from the last axis backwards.
    std::vector<int64_t> torch_pads;
    for (int64_t axis = rank - 1; axis >= 0; --axis) {
      torch_pads.push_back(pads[static_cast<size_t>(axis)]);
      torch_pads.push_back(pads[static_cast<size_t>(axis + rank)]);
    }
    const double value = has(in, 2) ? in[2].item<double>() : 0.0;
    return {torch::constant_pad_nd(x, torch_pads, value)};
  }
  if (mode != "edge" && mode != "reflect") throw std::invalid_argument("unsupported pad mode '" + mode + "'");
  Tensor result = x;
  for (int64_t axis = 0; axis < rank; ++axis) {
    const int64_t begin = pads[static_cast<size_t>(axis)], end = pads[static_cast<size_t>(axis + rank)];
    if (begin == 0 && end == 0) continue;
    result = result.index_select(axis, pad_indices(x.size(axis), begin, end, mode, x.device()));
  }
  return {result};
}

// ReduceMean/Sum/Max/Min. No axes reduces everything, unless
// noop_with_empty_axes asks for the input unchanged.
template <typename F>
OpKernel reduction(F reduce) {
  return [reduce](const OpContext& ctx, const Tensors& in) {
    require_inputs(in, 1);
    const Tensor& x = in[0];
    const bool keepdims = ctx.node.attr_int("keepdims", 1) != 0;
    auto axes = ints_from_input_or_attr(ctx, in, 1, "axes").value_or(std::vector<int64_t>{});
    if (axes.empty()) {
      if (ctx.node.attr_int("noop_with_empty_axes", 0) != 0) return Tensors{x};
      for (int64_t i = 0; i < x.dim(); ++i) axes.push_back(i);
    }
    if (axes.empty()) return Tensors{x};  // a scalar reduces to itself
    return Tensors{reduce(x, axis_indices(axes, x.dim()), keepdims)};
  };
}

// Integer means truncate, as ONNX Runtime's do.
Tensor reduce_mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdims) {
  if (x.is_floating_point()) return x.mean(axes, keepdims);
  return x.to(torch::kDouble).mean(axes, keepdims).trunc().to(x.scalar_type());
}

// Expand broadcasts both ways: the target shape may have 1s where the input
// is larger, so the output shape is the numpy broadcast of the two.
Tensors expand(const OpContext&, const Tensors& in) {
  require_inputs(in, 2);
  const auto target = int_values(in[1], "shape");
  const auto sizes = in[0].sizes();
  const size_t rank = std::max(sizes.size(), target.size());
  std::vector<int64_t> shape(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t a = i < rank - sizes.size() ? 1 : sizes[i - (rank - sizes.size())];
    const int64_t b = i < rank - target.size() ? 1 : target[i - (rank - target.size())];
    if (a != b && a != 1 && b != 1) {
      throw std::invalid_argument("cannot broadcast input shape " + c10::str(sizes) + " to " + c10::str(target));
    }
    shape[i] = a == 1 ? b : a;
  }
  return {in[0].expand(shape)};
}

Tensors constant_of_shape(const OpContext& ctx, const Tensors& in) {
  require_inputs(in, 1);
  const auto shape = int_values(in[0], "shape");
  const Tensor value = ctx.node.has_attr("value") ? ctx.node.attr_tensor("value") : torch::zeros({1});
  if (value.numel() != 1) throw std::invalid_argument("value must hold one element");
  return {torch::full(shape, value.reshape({}).item(), value.options())};
}

Tensors range(const OpContext&, const Tensors& in) {
  require_inputs(in, 3);
  return {torch::arange(in[0].item(), in[1].item(), in[2].item(), in[0].options())};
}

Tensors tile(const OpContext&, const Tensors& in) {
  require_inputs(in, 2);
  const auto repeats = int_values(in[1], "repeats");
  if (static_cast<int64_t>(repeats.size()) != in[0].dim()) {
    throw std::invalid_argument("repeats has " + std::to_string(repeats.size()) + " values for rank " +
                                std::to_string(in[0].dim()));
  }
  return {in[0].repeat(repeats)};
}

}  // namespace

void add_tensor_ops(KernelMap& kernels) {
  kernels["Concat"] = concat;
  kernels["Split"] = split;
  kernels["Slice"] = slice;
  kernels["Gather"] = gather;
  kernels["Shape"] = shape;
  kernels["Reshape"] = reshape;
  kernels["Flatten"] = flatten;
  kernels["Transpose"] = transpose;
  kernels["Squeeze"] = squeeze;
  kernels["Unsqueeze"] = unsqueeze;
  kernels["Pad"] = pad;
  kernels["ReduceMean"] = reduction(reduce_mean);
  kernels["ReduceSum"] = reduction([](const Tensor& x, const std::vector<int64_t>& axes, bool keepdims) {
    return x.sum(axes, keepdims, x.scalar_type());
  });
  kernels["ReduceMax"] = reduction([](const Tensor& x, const std::vector<int64_t>& axes, bool keepdims) {
    return x.amax(axes, keepdims);
  });
  kernels["ReduceMin"] = reduction([](const Tensor& x, const std::vector<int64_t>& axes, bool keepdims) {
    return x.amin(axes, keepdims);
  });
  kernels["Expand"] = expand;
  kernels["ConstantOfShape"] = constant_of_shape;
  kernels["Range"] = range;
  kernels["Tile"] = tile;
}

}  // namespace qat::ops
