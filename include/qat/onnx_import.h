// ONNX frontend: turns an ONNX model into a GraphModule.
//
// Initializers become module parameters under their ONNX names (float ones
// trainable, except BatchNorm running mean/variance); Constant nodes become
// non-trainable initializers. Supported: the default domain at opset 11-17
// (see docs/onnx.md for the op list).
#pragma once

#include "qat/graph.h"

#include <memory>
#include <string>

namespace onnx {
class ModelProto;
class TensorProto;
}  // namespace onnx

namespace qat {

// Loads and checks `path`; every error names the file (and node or tensor).
std::shared_ptr<GraphModule> import_onnx(const std::string& path);
// The same for a serialized ModelProto already in memory; `source` names
// it in error messages.
std::shared_ptr<GraphModule> import_onnx_bytes(const std::string& bytes, const std::string& source);
// `source` names the model in error messages.
std::shared_ptr<GraphModule> import_onnx(const onnx::ModelProto& model, const std::string& source);

// ONNX tensor <-> torch tensor. uint16/uint32/uint64 widen to the next
// signed type LibTorch has. `context` prefixes error messages.
torch::Tensor tensor_from_onnx(const onnx::TensorProto& proto, const std::string& context);

// Reads a serialized TensorProto (.pb) file, as in ONNX's test data.
torch::Tensor load_onnx_tensor(const std::string& path);

}  // namespace qat
