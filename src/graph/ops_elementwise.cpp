// Activations, arithmetic, comparisons and casts. Every kernel is built from
// differentiable torch ops (Clip with constant bounds from its own autograd
// function, clip.cpp), so gradients reach the initializers. Binary ops
// broadcast as numpy does, which is what ONNX specifies.
#include "graph/ops.h"

#include "graph/clip.h"

#include <torch/torch.h>

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>

namespace qat::ops {
namespace {

using torch::Tensor;
using Tensors = std::vector<Tensor>;


template <typename F>
OpKernel unary(F fn) {
  return [fn](const OpContext&, const Tensors& in) {
    require_inputs(in, 1);
    return Tensors{fn(in[0])};
  };
}

template <typename F>
OpKernel binary(F fn) {
  return [fn](const OpContext&, const Tensors& in) {
    require_inputs(in, 2);
    return Tensors{fn(in[0], in[1])};
  };
}

// Min, Max, Sum, Mean: a left fold over one or more inputs.
template <typename F>
Tensor fold(const Tensors& in, F fn) {
  require_inputs(in, in.empty() ? 1 : in.size());
  Tensor result = in[0];
  for (size_t i = 1; i < in.size(); ++i) result = fn(result, in[i]);
  return result;
}

template <typename F>
OpKernel variadic(F fn) {
  return [fn](const OpContext&, const Tensors& in) { return Tensors{fold(in, fn)}; };
}

Tensor add(const Tensor& a, const Tensor& b) { return a + b; }

// A bound given as a constant: absent (infinite), or a one-element tensor
// of x's type that needs no gradient. Nullopt when the bound needs ATen's
// clamp (and its type promotion).
std::optional<double> constant_bound(const Tensors& in, size_t i, double absent) {
  if (i >= in.size() || !in[i].defined()) return absent;
  const Tensor& bound = in[i];
  if (bound.numel() != 1 || bound.requires_grad() || bound.scalar_type() != in[0].scalar_type()) return std::nullopt;
  const double value = bound.item<double>();
  if (std::isnan(value)) return std::nullopt;
  return value;
}

bool float_on_cpu(const Tensor& x) {
  return x.device().is_cpu() && (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble);
}

// Opset 11 moved Clip's bounds from attributes to optional inputs; both are
// accepted so that hand-built graphs may use either.
Tensors clip(const OpContext& ctx, const Tensors& in) {
  require_inputs(in, 1);
  const Node& node = ctx.node;
  if (node.has_attr("min") || node.has_attr("max")) {
    const double lo = node.attr_float("min", -INFINITY), hi = node.attr_float("max", INFINITY);
    return {float_on_cpu(in[0]) ? clamp_constant(in[0], lo, hi) : torch::clamp(in[0], lo, hi)};
  }
  auto bound = [&](size_t i) { return i < in.size() && in[i].defined() ? c10::optional<Tensor>(in[i]) : c10::nullopt; };
  const auto lo = bound(1), hi = bound(2);
  if (!lo && !hi) return {in[0]};
  const auto lo_value = constant_bound(in, 1, -INFINITY), hi_value = constant_bound(in, 2, INFINITY);
  if (float_on_cpu(in[0]) && lo_value && hi_value) return {clamp_constant(in[0], *lo_value, *hi_value)};
  return {torch::clamp(in[0], lo, hi)};
}

Tensor hard_sigmoid(const Tensor& x, double alpha, double beta) { return torch::clamp(x * alpha + beta, 0.0, 1.0); }

// ONNX integer division truncates toward zero (as C does), not toward
// negative infinity as numpy's // does.
Tensor divide(const Tensor& a, const Tensor& b) {
  if (a.is_floating_point() || b.is_floating_point()) return a / b;
  return torch::div(a, b, "trunc");
}

// Pow's output has the base's type even when the exponent's type differs
// (int base ^ float exponent truncates the float result back to int).
Tensor power(const Tensor& base, const Tensor& exponent) {
  const Tensor result = torch::pow(base, exponent);
  return result.scalar_type() == base.scalar_type() ? result : result.to(base.scalar_type());
}

// The ONNX TensorProto.DataType codes (onnx.proto), kept here so that the
// graph library needs no ONNX headers. Unsigned types LibTorch lacks widen as
// in tensor_from_onnx.
torch::ScalarType dtype_of_onnx_code(int64_t code) {
  switch (code) {
    case 1: return torch::kFloat;
    case 2: return torch::kByte;
    case 3: return torch::kChar;
    case 4: return torch::kInt;   // uint16
    case 5: return torch::kShort;
    case 6: return torch::kInt;
    case 7: return torch::kLong;
    case 9: return torch::kBool;
    case 10: return torch::kHalf;
    case 11: return torch::kDouble;
    case 12: return torch::kLong;  // uint32
    case 13: return torch::kLong;  // uint64
    case 16: return torch::kBFloat16;
    default: throw std::invalid_argument("cannot cast to ONNX data type " + std::to_string(code));
  }
}

// Constant nodes holding `value` become initializers at import; the scalar
// and list forms stay nodes.
Tensors constant(const OpContext& ctx, const Tensors&) {
  const Node& node = ctx.node;
  if (node.has_attr("value")) return {node.attr_tensor("value")};
  if (node.has_attr("value_float")) return {torch::tensor(static_cast<float>(node.attr_float("value_float")))};
  if (node.has_attr("value_int")) return {torch::tensor(node.attr_int("value_int"), torch::kLong)};
  if (node.has_attr("value_floats")) {
    const auto values = node.attr_floats("value_floats");
    return {torch::tensor(std::vector<float>(values.begin(), values.end()))};
  }
  if (node.has_attr("value_ints")) return {torch::tensor(node.attr_ints("value_ints"), torch::kLong)};
  throw std::invalid_argument("needs one of the attributes value, value_float(s), value_int(s)");
}

}  // namespace

void add_elementwise_ops(KernelMap& kernels) {
  kernels["Relu"] = unary([](const Tensor& x) { return torch::relu(x); });
  kernels["Clip"] = clip;
  kernels["LeakyRelu"] = [](const OpContext& ctx, const Tensors& in) {
    require_inputs(in, 1);
    return Tensors{torch::leaky_relu(in[0], ctx.node.attr_float("alpha", 0.01))};
  };
  kernels["Sigmoid"] = unary([](const Tensor& x) { return torch::sigmoid(x); });
  kernels["HardSigmoid"] = [](const OpContext& ctx, const Tensors& in) {
    require_inputs(in, 1);
    return Tensors{hard_sigmoid(in[0], ctx.node.attr_float("alpha", 0.2), ctx.node.attr_float("beta", 0.5))};
  };
  kernels["HardSwish"] = unary([](const Tensor& x) { return x * hard_sigmoid(x, 1.0 / 6, 0.5); });
  kernels["Tanh"] = unary([](const Tensor& x) { return torch::tanh(x); });
  kernels["Erf"] = unary([](const Tensor& x) { return torch::erf(x); });
  kernels["Sqrt"] = unary([](const Tensor& x) { return torch::sqrt(x); });
  kernels["Neg"] = unary([](const Tensor& x) { return torch::neg(x); });
  kernels["Abs"] = unary([](const Tensor& x) { return torch::abs(x); });
  kernels["Exp"] = unary([](const Tensor& x) { return torch::exp(x); });
  kernels["Log"] = unary([](const Tensor& x) { return torch::log(x); });
  kernels["Reciprocal"] = unary([](const Tensor& x) { return torch::reciprocal(x); });
  kernels["Floor"] = unary([](const Tensor& x) { return torch::floor(x); });
  kernels["Ceil"] = unary([](const Tensor& x) { return torch::ceil(x); });
  kernels["Not"] = unary([](const Tensor& x) { return torch::logical_not(x); });
  kernels["Identity"] = unary([](const Tensor& x) { return x; });

  kernels["Add"] = binary(add);
  kernels["Sub"] = binary([](const Tensor& a, const Tensor& b) { return a - b; });
  kernels["Mul"] = binary([](const Tensor& a, const Tensor& b) { return a * b; });
  kernels["Div"] = binary(divide);
  kernels["Pow"] = binary(power);
  kernels["Equal"] = binary([](const Tensor& a, const Tensor& b) { return torch::eq(a, b); });
  kernels["Greater"] = binary([](const Tensor& a, const Tensor& b) { return torch::gt(a, b); });
  kernels["GreaterOrEqual"] = binary([](const Tensor& a, const Tensor& b) { return torch::ge(a, b); });
  kernels["Less"] = binary([](const Tensor& a, const Tensor& b) { return torch::lt(a, b); });
  kernels["LessOrEqual"] = binary([](const Tensor& a, const Tensor& b) { return torch::le(a, b); });
  kernels["And"] = binary([](const Tensor& a, const Tensor& b) { return torch::logical_and(a, b); });
  kernels["Or"] = binary([](const Tensor& a, const Tensor& b) { return torch::logical_or(a, b); });
  kernels["Xor"] = binary([](const Tensor& a, const Tensor& b) { return torch::logical_xor(a, b); });

  kernels["Min"] = variadic([](const Tensor& a, const Tensor& b) { return torch::minimum(a, b); });
  kernels["Max"] = variadic([](const Tensor& a, const Tensor& b) { return torch::maximum(a, b); });
  kernels["Sum"] = variadic(add);
  kernels["Mean"] = [](const OpContext&, const Tensors& in) {
    return Tensors{fold(in, add) / static_cast<double>(in.size())};
  };

  kernels["Where"] = [](const OpContext&, const Tensors& in) {
    require_inputs(in, 3);
    if (in[0].scalar_type() != torch::kBool) throw std::invalid_argument("condition must be a bool tensor");
    return Tensors{torch::where(in[0], in[1], in[2])};
  };
  kernels["Cast"] = [](const OpContext& ctx, const Tensors& in) {
    require_inputs(in, 1);
    return Tensors{in[0].to(dtype_of_onnx_code(ctx.node.attr_int("to")))};
  };
  kernels["CastLike"] = binary([](const Tensor& x, const Tensor& like) { return x.to(like.scalar_type()); });
  kernels["Constant"] = constant;
}

}  // namespace qat::ops
