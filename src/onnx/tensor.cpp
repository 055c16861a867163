// ONNX TensorProto -> torch::Tensor.
#include "qat/onnx_import.h"

#include <onnx/onnx_pb.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace qat {
namespace {

struct TypeInfo {
  torch::ScalarType stored;  // layout of raw_data
  torch::ScalarType result;  // what qat hands out
};

// uint16/32/64 have no LibTorch 1.13 dtype; they are read as the same-width
// signed type and widened (values stay exact for uint16/uint32).
TypeInfo type_info(int32_t data_type, const std::string& context) {
  using TP = onnx::TensorProto;
  switch (data_type) {
    case TP::FLOAT: return {torch::kFloat, torch::kFloat};
    case TP::DOUBLE: return {torch::kDouble, torch::kDouble};
    case TP::FLOAT16: return {torch::kHalf, torch::kHalf};
    case TP::BFLOAT16: return {torch::kBFloat16, torch::kBFloat16};
    case TP::UINT8: return {torch::kByte, torch::kByte};
    case TP::INT8: return {torch::kChar, torch::kChar};
    case TP::INT16: return {torch::kShort, torch::kShort};
    case TP::UINT16: return {torch::kShort, torch::kInt};
    case TP::INT32: return {torch::kInt, torch::kInt};
    case TP::UINT32: return {torch::kInt, torch::kLong};
    case TP::INT64: return {torch::kLong, torch::kLong};
    case TP::UINT64: return {torch::kLong, torch::kLong};
    case TP::BOOL: return {torch::kBool, torch::kBool};
    default:
      throw std::invalid_argument(context + ": unsupported tensor data type " + std::to_string(data_type) + " (" +
                                  TP::DataType_Name(static_cast<TP::DataType>(data_type)) + ")");
  }
}

torch::Tensor widen_unsigned(torch::Tensor t, int32_t data_type) {
  using TP = onnx::TensorProto;
  if (data_type == TP::UINT16) return t.to(torch::kInt).bitwise_and(0xFFFF);
  if (data_type == TP::UINT32) return t.to(torch::kLong).bitwise_and(static_cast<int64_t>(0xFFFFFFFF));
  return t;
}

// Typed repeated fields: which one holds the data depends on the type.
torch::Tensor from_typed_fields(const onnx::TensorProto& p, const TypeInfo& info, std::vector<int64_t> shape,
                                const std::string& context) {
  using TP = onnx::TensorProto;
  const auto opts = torch::TensorOptions();
  torch::Tensor flat;
  switch (p.data_type()) {
    case TP::FLOAT:
      flat = torch::tensor(std::vector<float>(p.float_data().begin(), p.float_data().end()), opts.dtype(torch::kFloat));
      break;
    case TP::DOUBLE:
      flat = torch::tensor(std::vector<double>(p.double_data().begin(), p.double_data().end()),
                           opts.dtype(torch::kDouble));
      break;
    case TP::INT64:
      flat = torch::tensor(std::vector<int64_t>(p.int64_data().begin(), p.int64_data().end()), opts.dtype(torch::kLong));
      break;
    case TP::UINT32:
    case TP::UINT64:
      flat = torch::tensor(std::vector<int64_t>(p.uint64_data().begin(), p.uint64_data().end()),
                           opts.dtype(torch::kLong));
      break;
    case TP::FLOAT16:
    case TP::BFLOAT16: {
      // Stored as raw 16-bit patterns in int32_data.
      std::vector<int16_t> bits(p.int32_data().begin(), p.int32_data().end());
      flat = torch::tensor(std::vector<int64_t>(bits.begin(), bits.end()), opts.dtype(torch::kLong))
                 .to(torch::kShort)
                 .view(info.stored);
      break;
    }
    default:  // int8/16/32, uint8/16, bool live in int32_data
      flat = torch::tensor(std::vector<int64_t>(p.int32_data().begin(), p.int32_data().end()), opts.dtype(torch::kLong))
                 .to(info.result);
  }
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (flat.numel() != numel) {
    throw std::invalid_argument(context + ": holds " + std::to_string(flat.numel()) + " values, its shape needs " +
                                std::to_string(numel));
  }
  return flat.to(info.result).reshape(shape);
}

}  // namespace

torch::Tensor tensor_from_onnx(const onnx::TensorProto& p, const std::string& context_prefix) {
  const std::string context = context_prefix + ": tensor '" + p.name() + "'";
  if (p.data_location() == onnx::TensorProto::EXTERNAL) {
    throw std::invalid_argument(context + ": external data is not supported");
  }
  const TypeInfo info = type_info(p.data_type(), context);
  std::vector<int64_t> shape(p.dims().begin(), p.dims().end());
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument(context + ": negative dimension " + std::to_string(d));
  }
  if (!p.has_raw_data()) return from_typed_fields(p, info, shape, context);
  const std::string& raw = p.raw_data();
  torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(info.stored));
  const size_t expected = static_cast<size_t>(t.numel()) * t.element_size();
  if (raw.size() != expected) {
    throw std::invalid_argument(context + ": raw data has " + std::to_string(raw.size()) + " bytes, shape needs " +
                                std::to_string(expected));
  }
  if (expected) std::memcpy(t.data_ptr(), raw.data(), expected);  // ONNX raw data is little-endian, as is x86
  return widen_unsigned(t, p.data_type()).to(info.result);
}

torch::Tensor load_onnx_tensor(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::stringstream buffer;
  buffer << in.rdbuf();
  onnx::TensorProto proto;
  if (!proto.ParseFromString(buffer.str())) throw std::runtime_error(path + ": not a serialized ONNX TensorProto");
  return tensor_from_onnx(proto, path);
}

}  // namespace qat
