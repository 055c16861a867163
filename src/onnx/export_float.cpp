// GraphModule -> plain ONNX: the FP32 model, for comparison with the QDQ
// export and for deployment without quantization.
#include "qat/onnx_export.h"

#include "onnx/proto_builder.h"

#include <set>
#include <stdexcept>

namespace qat {

onnx::ModelProto float_model_proto(GraphModule& model) {
  const Graph& g = model.graph();
  onnx::ModelProto proto = onnx_proto::new_model(g.opset, "qat_fp32");
  onnx::GraphProto* graph = proto.mutable_graph();
  std::set<std::string> read(g.outputs.begin(), g.outputs.end());
  for (const Node& node : g.nodes) {
    // qat's own ops (quantsim nodes) have no ONNX meaning.
    if (node.op_type.rfind("Qat", 0) == 0) {
      throw std::invalid_argument(node.describe() + " is not an ONNX op: export a quantsim with export_onnx_qdq");
    }
    onnx_proto::add_graph_node(graph, node);
    read.insert(node.inputs.begin(), node.inputs.end());
  }
  for (const auto& name : model.initializer_names()) {
    if (read.count(name)) *graph->add_initializer() = tensor_to_onnx(model.initializer(name), name);
  }
  onnx_proto::add_graph_io(graph, model);
  return proto;
}

void export_onnx_float(GraphModule& model, const std::string& path) {
  write_onnx_model(float_model_proto(model), path);
}

}  // namespace qat
