// torch::Tensor -> ONNX TensorProto (the reverse of tensor.cpp).
#include "qat/onnx_export.h"

#include <onnx/onnx_pb.h>

#include <cstring>
#include <fstream>
#include <stdexcept>

namespace qat {
namespace {

using TP = onnx::TensorProto;

int32_t natural_type(torch::ScalarType dtype, const std::string& name) {
  switch (dtype) {
    case torch::kFloat: return TP::FLOAT;
    case torch::kDouble: return TP::DOUBLE;
    case torch::kHalf: return TP::FLOAT16;
    case torch::kBFloat16: return TP::BFLOAT16;
    case torch::kByte: return TP::UINT8;
    case torch::kChar: return TP::INT8;
    case torch::kShort: return TP::INT16;
    case torch::kInt: return TP::INT32;
    case torch::kLong: return TP::INT64;
    case torch::kBool: return TP::BOOL;
    default:
      throw std::invalid_argument("tensor '" + name + "': dtype " + std::string(c10::toString(dtype)) +
                                  " has no ONNX equivalent");
  }
}

struct IntegerRange {
  int64_t lo, hi;
  torch::ScalarType stored;  // same-width LibTorch type holding the bits
};

IntegerRange integer_range(int32_t data_type, const std::string& name) {
  switch (data_type) {
    case TP::INT8: return {-128, 127, torch::kChar};
    case TP::UINT8: return {0, 255, torch::kByte};
    case TP::INT16: return {-32768, 32767, torch::kShort};
    case TP::UINT16: return {0, 65535, torch::kShort};
    case TP::INT32: return {INT32_MIN, INT32_MAX, torch::kInt};
    case TP::INT64: return {INT64_MIN, INT64_MAX, torch::kLong};
    default:
      throw std::invalid_argument("tensor '" + name + "': conversion to ONNX type " + std::to_string(data_type) +
                                  " is not supported (integer types only)");
  }
}

void set_raw(TP* proto, const torch::Tensor& stored) {
  const torch::Tensor t = stored.contiguous();
  // ONNX raw data is little-endian, as is every platform LibTorch targets.
  proto->set_raw_data(std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size()));
}

void set_header(TP* proto, const torch::Tensor& value, const std::string& name, int32_t data_type) {
  proto->set_name(name);
  proto->set_data_type(data_type);
  for (int64_t d : value.sizes()) proto->add_dims(d);
}

}  // namespace

TP tensor_to_onnx(const torch::Tensor& value, const std::string& name) {
  TP proto;
  set_header(&proto, value, name, natural_type(value.scalar_type(), name));
  set_raw(&proto, value.detach().cpu());
  return proto;
}

TP tensor_to_onnx(const torch::Tensor& value, const std::string& name, int32_t data_type) {
  const IntegerRange range = integer_range(data_type, name);
  const torch::Tensor v = value.detach().cpu();
  if (v.numel() > 0) {
    if (v.is_floating_point() && !torch::equal(v, v.round())) {
      throw std::invalid_argument("tensor '" + name + "': holds non-integer values, cannot store as integers");
    }
    const double lo = v.min().item<double>(), hi = v.max().item<double>();
    if (lo < static_cast<double>(range.lo) || hi > static_cast<double>(range.hi)) {
      throw std::invalid_argument("tensor '" + name + "': values [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                  "] do not fit ONNX type " + TP::DataType_Name(static_cast<TP::DataType>(data_type)));
    }
  }
  TP proto;
  set_header(&proto, v, name, data_type);
  if (data_type == TP::UINT16) {
    // No uint16 in LibTorch 1.13: keep the low half of each int32.
    set_raw(&proto, v.to(torch::kInt).reshape({-1}).contiguous().view(torch::kShort).reshape({-1, 2}).select(1, 0));
  } else {
    set_raw(&proto, v.to(range.stored));
  }
  return proto;
}

void save_onnx_tensor(const torch::Tensor& value, const std::string& name, const std::string& path) {
  std::ofstream out(path, std::ios::binary);
  if (!out || !tensor_to_onnx(value, name).SerializeToOstream(&out)) {
    throw std::runtime_error(path + ": cannot write tensor '" + name + "'");
  }
}

}  // namespace qat
