// Internal: pieces of an onnx::ModelProto shared by the float and the QDQ
// exporters.
#pragma once

#include "qat/graph.h"

#include <onnx/onnx_pb.h>

#include <string>
#include <vector>

namespace qat::onnx_proto {

// An empty model importing the default domain at `opset`, with the IR
// version that opset requires.
onnx::ModelProto new_model(int64_t opset, const std::string& graph_name);

onnx::NodeProto* add_node(onnx::GraphProto* graph, const std::string& op_type, const std::string& name,
                          const std::vector<std::string>& inputs, const std::vector<std::string>& outputs);

// AttributeValue -> AttributeProto (tensors as tensor_to_onnx writes them).
void set_attribute(onnx::NodeProto* node, const std::string& key, const AttributeValue& value);

// Copies a graph node (ONNX op type, inputs, outputs, attributes).
onnx::NodeProto* add_graph_node(onnx::GraphProto* graph, const Node& node);

// Graph inputs and outputs with types and shapes. Input dimensions of -1
// become the symbolic "batch"; output shapes and types come from running
// `model` on zeros at batch sizes 1 and 2, and dimensions that change with
// the batch are "batch" too.
void add_graph_io(onnx::GraphProto* graph, GraphModule& model);

}  // namespace qat::onnx_proto
