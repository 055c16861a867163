// Quantsim configuration: which tensors get a quantizer and what kind, read
// from AIMET's JSON config format (docs/sim_config.md has the schema).
//
// A config has levels of increasing specificity: "defaults", then "params"
// (by parameter name), then "op_type" (by ONNX op type, with its own
// "params"). The parsed structs keep each level as written, unset fields
// included; the is_*() queries fold the levels together, the most specific
// setting winning, so the quantsim pass never looks at the levels itself.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qat {

// Settings for one parameter name ("weight", "bias"). Unset fields fall
// through to the next less specific level.
struct ParamQuantConfig {
  std::optional<bool> is_quantized;
  std::optional<bool> is_symmetric;
};

// A fixed output range that replaces calibration (AIMET's
// "encoding_constraints", e.g. [0, 1] for Softmax). min < max.
struct EncodingConstraints {
  double min = 0;
  double max = 0;
};

// Settings for one ONNX op type ("Conv", "Gemm", ...).
struct OpTypeQuantConfig {
  std::optional<bool> is_input_quantized;
  std::optional<bool> is_output_quantized;
  std::optional<bool> is_symmetric;  // its activations: inputs and output
  std::optional<bool> per_channel_quantization;
  std::map<std::string, ParamQuantConfig> params;
  std::optional<EncodingConstraints> encoding_constraints;
};

// Field defaults are AIMET's behaviour for a key the file leaves out.
struct SimConfig {
  // "defaults"
  bool input_quantized = false;       // ops.is_input_quantized
  bool output_quantized = true;       // ops.is_output_quantized
  bool activation_symmetric = false;  // ops.is_symmetric
  bool param_quantized = true;        // params.is_quantized
  bool param_symmetric = false;       // params.is_symmetric
  bool strict_symmetric = false;
  bool unsigned_symmetric = true;
  bool per_channel = false;  // per_channel_quantization
  // A qat extension: AIMET takes bitwidths as QuantSim arguments instead.
  int activation_bitwidth = 8;
  int param_bitwidth = 8;

  std::map<std::string, ParamQuantConfig> params;     // "params"
  std::map<std::string, OpTypeQuantConfig> op_types;  // "op_type"
  // "supergroups": op-type sequences quantized as one fused op (no quantizer
  // between members), in file order.
  std::vector<std::vector<std::string>> supergroups;
  bool model_input_quantized = false;          // model_input.is_input_quantized
  std::optional<bool> model_output_quantized;  // model_output.is_output_quantized

  bool is_input_quantized(const std::string& op_type) const;
  bool is_output_quantized(const std::string& op_type) const;
  bool is_activation_symmetric(const std::string& op_type) const;
  bool is_per_channel(const std::string& op_type) const;
  // op_type.<op>.params.<param>, then params.<param>, then defaults.params.
  bool is_param_quantized(const std::string& op_type, const std::string& param) const;
  bool is_param_symmetric(const std::string& op_type, const std::string& param) const;
  // Whether a model output produced by an op of this type gets a quantizer:
  // model_output.is_output_quantized when the file sets it, otherwise the
  // producing op's own rule.
  bool is_model_output_quantized(const std::string& producer_op_type) const;
};

// Reads a config from parsed JSON; every error message starts with
// `source` (the file's path). Throws std::runtime_error naming the key
// path for an unknown key, a value of the wrong type, a bitwidth outside
// 2..16 or a malformed supergroup.
SimConfig parse_sim_config(const nlohmann::json& json, const std::string& source);

// Reads a config file, or the preset compiled into qat when `path` is
// exactly "default", "performance" or "openvino" (write "./default" for a file of that
// name). Throws std::runtime_error starting with the path when the file
// cannot be read or is not valid JSON, as well as parse_sim_config's errors.
SimConfig load_sim_config(const std::string& path);

// The JSON text of a compiled-in preset (configs/<name>.json at build
// time); nullopt for any other name.
std::optional<std::string_view> sim_config_preset(const std::string& name);

}  // namespace qat
