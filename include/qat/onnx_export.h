// ONNX backend: writes a GraphModule as plain ONNX (the FP32 model) and a
// QuantSim as a QDQ model that ONNX Runtime and OpenVINO run with integer
// kernels. docs/export.md describes the exported layout.
#pragma once

#include "qat/graph.h"
#include "qat/quantsim.h"

#include <cstdint>
#include <string>

namespace onnx {
class ModelProto;
class TensorProto;
}  // namespace onnx

namespace qat {

// torch tensor -> TensorProto with raw little-endian data: the reverse of
// tensor_from_onnx. The first form keeps the tensor's type; the second
// converts integer values to `data_type` (an onnx::TensorProto::DataType,
// uint16 included), and throws std::invalid_argument naming the tensor if
// a value does not fit.
onnx::TensorProto tensor_to_onnx(const torch::Tensor& value, const std::string& name);
onnx::TensorProto tensor_to_onnx(const torch::Tensor& value, const std::string& name, int32_t data_type);

// Writes a serialized TensorProto (.pb): the reverse of load_onnx_tensor.
void save_onnx_tensor(const torch::Tensor& value, const std::string& name, const std::string& path);

// The model's nodes as they are (ONNX op types and attributes), every
// initializer they read, at the graph's opset. Throws std::invalid_argument
// for a node that is not an ONNX op (a quantsim's QatFakeQuant, QatConvBn):
// export a sim with export_onnx_qdq.
onnx::ModelProto float_model_proto(GraphModule& model);
void export_onnx_float(GraphModule& model, const std::string& path);

// A calibrated or trained sim as a QDQ model: int8 (or 16-bit) weight
// initializers feeding DequantizeLinear, int32 biases, a QuantizeLinear ->
// DequantizeLinear pair on every quantized activation, BatchNorm folded.
// At the model's opset (13 or later: older models are refused), or 21
// when a quantizer needs a 16-bit container. Throws std::invalid_argument
// naming the quantizer when one has no encoding or is disabled.
onnx::ModelProto qdq_model_proto(QuantSim& sim);
void export_onnx_qdq(QuantSim& sim, const std::string& path);

// Moves every bias that the QDQ export stores as int32 (a Conv or Gemm
// whose input and weight are quantized) onto that grid, the multiples of
// s_in * s_w, so that the sim computes what integer runtimes compute: a
// float bias is the one thing the sim and the exported model otherwise
// disagree on (docs/export.md). Each bias moves by at most half a step and
// the export is unchanged. Call it after training, which moves biases off
// the grid again.
void round_biases_to_export_grid(QuantSim& sim);

// Serializes `model` to `path` after running onnx::checker::check_model on
// it when the linked libonnx knows the model's opset and IR version (ONNX
// 1.12: up to opset 17, IR 8); returns whether the checker ran. Checker and
// I/O errors throw std::runtime_error naming the path.
bool write_onnx_model(const onnx::ModelProto& model, const std::string& path);

}  // namespace qat
