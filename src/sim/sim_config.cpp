// The AIMET quantsim-config reader. Configs are written by hand, and a
// misspelt key, silently skipped, would change which tensors get quantized
// with no other symptom; so every key is checked against the schema and
// every error names the file and the key path.
#include "qat/sim_config.h"

#include "sim_presets.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <system_error>

namespace qat {
namespace {

using nlohmann::json;
using Keys = std::initializer_list<std::string_view>;

// The bitwidths the fake-quant kernels support (QuantGrid::validate).
constexpr int64_t kMinBitwidth = 2;
constexpr int64_t kMaxBitwidth = 16;

std::string child(const std::string& path, const std::string& key) { return path.empty() ? key : path + "." + key; }

std::string element(const std::string& path, size_t index) { return path + "[" + std::to_string(index) + "]"; }

// "'defaults.ops'", or "the top level" for the root object.
std::string quoted(const std::string& path) { return path.empty() ? "the top level" : "'" + path + "'"; }

// What a rejected value was: "number 3", "string \"true\"", "array".
std::string describe(const json& value) {
  if (value.is_structured() || value.is_null()) return value.type_name();
  return std::string(value.type_name()) + " " + value.dump();
}

bool contains(Keys keys, const std::string& key) {
  for (std::string_view k : keys) {
    if (k == key) return true;
  }
  return false;
}

// The member `key` of `object`, or nullptr when absent.
const json* member(const json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

class Parser {
 public:
  explicit Parser(const std::string& source) : source_(source) {}

  SimConfig parse(const json& root) const {
    // AIMET requires all six sections; qat lets a file name only what it changes.
    check_keys(root, "", {"defaults", "params", "op_type", "supergroups", "model_input", "model_output"});
    SimConfig config;
    if (const json* defaults = member(root, "defaults")) parse_defaults(*defaults, "defaults", config);
    if (const json* params = member(root, "params")) config.params = parse_params(*params, "params");
    if (const json* op_types = member(root, "op_type")) config.op_types = parse_op_types(*op_types);
    if (const json* groups = member(root, "supergroups")) config.supergroups = parse_supergroups(*groups);
    if (const json* input = member(root, "model_input")) {
      check_keys(*input, "model_input", {"is_input_quantized"});
      config.model_input_quantized =
          boolean(*input, "model_input", "is_input_quantized").value_or(config.model_input_quantized);
    }
    if (const json* output = member(root, "model_output")) {
      check_keys(*output, "model_output", {"is_output_quantized"});
      config.model_output_quantized = boolean(*output, "model_output", "is_output_quantized");
    }
    return config;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(source_ + ": " + what); }

  void expect(bool ok, const json& value, const std::string& path, const char* type) const {
    if (!ok) fail(quoted(path) + " must be " + type + ", got " + describe(value));
  }

  // `object` must be an object whose keys are all `known` or `ignored`.
  void check_keys(const json& object, const std::string& path, Keys known, Keys ignored = {}) const {
    expect(object.is_object(), object, path, "an object");
    for (const auto& item : object.items()) {
      if (!contains(known, item.key()) && !contains(ignored, item.key())) {
        fail("unknown key '" + child(path, item.key()) + "'");
      }
    }
  }

  // AIMET writes booleans as the strings "True" and "False"; JSON's true and
  // false are accepted too. "true" or 1 is an error rather than a guess.
  std::optional<bool> boolean(const json& object, const std::string& path, const char* key) const {
    const json* value = member(object, key);
    if (value == nullptr) return std::nullopt;
    if (value->is_boolean()) return value->get<bool>();
    if (*value == "True") return true;
    if (*value == "False") return false;
    fail("'" + child(path, key) + "' must be a boolean (\"True\", \"False\", true or false), got " +
         describe(*value));
  }

  std::optional<int> bitwidth(const json& object, const std::string& path, const char* key) const {
    const json* value = member(object, key);
    if (value == nullptr) return std::nullopt;
    const std::string at = child(path, key);
    expect(value->is_number_integer(), *value, at, "an integer");
    // An unsigned value above INT64_MAX wraps to a negative one: still rejected.
    const auto bits = value->get<int64_t>();
    if (bits < kMinBitwidth || bits > kMaxBitwidth) {
      fail("'" + at + "' must be between " + std::to_string(kMinBitwidth) + " and " + std::to_string(kMaxBitwidth) +
           ", got " + value->dump());
    }
    return static_cast<int>(bits);
  }

  double number(const json& object, const std::string& path, const char* key) const {
    const json* value = member(object, key);
    if (value == nullptr) fail("missing key '" + child(path, key) + "'");
    expect(value->is_number(), *value, child(path, key), "a number");
    return value->get<double>();
  }

  void parse_defaults(const json& node, const std::string& path, SimConfig& config) const {
    // hw_version picks AIMET's per-target behaviour; supported_kernels only
    // acts behind AIMET's ENFORCE_TARGET_DTYPE_BITWIDTH_CONFIG switch (off
    // by default). Neither changes what qat simulates.
    check_keys(node, path,
               {"ops", "params", "strict_symmetric", "unsigned_symmetric", "per_channel_quantization",
                "activation_bitwidth", "param_bitwidth"},
               {"hw_version", "supported_kernels"});
    if (const json* ops = member(node, "ops")) {
      const std::string at = child(path, "ops");
      check_keys(*ops, at, {"is_input_quantized", "is_output_quantized", "is_symmetric"});
      config.input_quantized = boolean(*ops, at, "is_input_quantized").value_or(config.input_quantized);
      config.output_quantized = boolean(*ops, at, "is_output_quantized").value_or(config.output_quantized);
      config.activation_symmetric = boolean(*ops, at, "is_symmetric").value_or(config.activation_symmetric);
    }
    if (const json* params = member(node, "params")) {
      const ParamQuantConfig param = parse_param(*params, child(path, "params"));
      config.param_quantized = param.is_quantized.value_or(config.param_quantized);
      config.param_symmetric = param.is_symmetric.value_or(config.param_symmetric);
    }
    config.strict_symmetric = boolean(node, path, "strict_symmetric").value_or(config.strict_symmetric);
    config.unsigned_symmetric = boolean(node, path, "unsigned_symmetric").value_or(config.unsigned_symmetric);
    config.per_channel = boolean(node, path, "per_channel_quantization").value_or(config.per_channel);
    config.activation_bitwidth = bitwidth(node, path, "activation_bitwidth").value_or(config.activation_bitwidth);
    config.param_bitwidth = bitwidth(node, path, "param_bitwidth").value_or(config.param_bitwidth);
  }

  ParamQuantConfig parse_param(const json& node, const std::string& path) const {
    check_keys(node, path, {"is_quantized", "is_symmetric"});
    return {boolean(node, path, "is_quantized"), boolean(node, path, "is_symmetric")};
  }

  // {"<param name>": {...}, ...}
  std::map<std::string, ParamQuantConfig> parse_params(const json& node, const std::string& path) const {
    expect(node.is_object(), node, path, "an object");
    std::map<std::string, ParamQuantConfig> params;
    for (const auto& item : node.items()) params[item.key()] = parse_param(item.value(), child(path, item.key()));
    return params;
  }

  // {"<ONNX op type>": {...}, ...}
  std::map<std::string, OpTypeQuantConfig> parse_op_types(const json& node) const {
    expect(node.is_object(), node, "op_type", "an object");
    std::map<std::string, OpTypeQuantConfig> op_types;
    for (const auto& item : node.items()) {
      op_types[item.key()] = parse_op_type(item.value(), child("op_type", item.key()));
    }
    return op_types;
  }

  OpTypeQuantConfig parse_op_type(const json& node, const std::string& path) const {
    // supported_kernels: see parse_defaults.
    check_keys(node, path,
               {"is_input_quantized", "is_output_quantized", "is_symmetric", "per_channel_quantization", "params",
                "encoding_constraints"},
               {"supported_kernels"});
    OpTypeQuantConfig op;
    op.is_input_quantized = boolean(node, path, "is_input_quantized");
    op.is_output_quantized = boolean(node, path, "is_output_quantized");
    op.is_symmetric = boolean(node, path, "is_symmetric");
    op.per_channel_quantization = boolean(node, path, "per_channel_quantization");
    if (const json* params = member(node, "params")) op.params = parse_params(*params, child(path, "params"));
    if (const json* range = member(node, "encoding_constraints")) {
      op.encoding_constraints = parse_constraints(*range, child(path, "encoding_constraints"));
    }
    return op;
  }

  EncodingConstraints parse_constraints(const json& node, const std::string& path) const {
    check_keys(node, path, {"min", "max"});
    const EncodingConstraints range{number(node, path, "min"), number(node, path, "max")};
    if (!(range.min < range.max)) {
      fail("'" + path + "' needs min < max, got min " + node["min"].dump() + " and max " + node["max"].dump());
    }
    return range;
  }

  // [{"op_list": ["Conv", "Relu"]}, ...]; AIMET requires two ops at least.
  std::vector<std::vector<std::string>> parse_supergroups(const json& node) const {
    expect(node.is_array(), node, "supergroups", "an array");
    std::vector<std::vector<std::string>> groups;
    for (size_t i = 0; i < node.size(); ++i) {
      const std::string at = element("supergroups", i);
      check_keys(node[i], at, {"op_list"});
      const json* ops = member(node[i], "op_list");
      const std::string list = child(at, "op_list");
      if (ops == nullptr) fail("missing key '" + list + "'");
      expect(ops->is_array(), *ops, list, "an array");
      if (ops->size() < 2) fail("'" + list + "' must name at least 2 op types, got " + std::to_string(ops->size()));
      std::vector<std::string>& group = groups.emplace_back();
      for (size_t j = 0; j < ops->size(); ++j) {
        expect((*ops)[j].is_string(), (*ops)[j], element(list, j), "a string");
        group.push_back((*ops)[j].get<std::string>());
      }
    }
    return groups;
  }

  std::string source_;
};

// nlohmann's messages start with "[json.exception.parse_error.101] ".
std::string without_exception_id(const std::string& message) {
  const size_t end = message.find("] ");
  return end == std::string::npos ? message : message.substr(end + 2);
}

SimConfig parse_text(std::string_view text, const std::string& source) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    throw std::runtime_error(source + ": malformed JSON: " + without_exception_id(e.what()));
  }
  return parse_sim_config(root, source);
}

std::string read_text(const std::string& path) {
  // An ifstream opens a directory and then reads nothing from it.
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) throw std::runtime_error(path + ": cannot open: is a directory");
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open: " + (errno != 0 ? std::strerror(errno) : "unknown error"));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The op type's own setting `field`, else `fallback`.
bool resolve(const SimConfig& config, const std::string& op_type, std::optional<bool> OpTypeQuantConfig::*field,
             bool fallback) {
  const auto op = config.op_types.find(op_type);
  return op == config.op_types.end() ? fallback : (op->second.*field).value_or(fallback);
}

std::optional<bool> param_setting(const std::map<std::string, ParamQuantConfig>& params, const std::string& param,
                                  std::optional<bool> ParamQuantConfig::*field) {
  const auto it = params.find(param);
  return it == params.end() ? std::nullopt : it->second.*field;
}

bool resolve_param(const SimConfig& config, const std::string& op_type, const std::string& param,
                   std::optional<bool> ParamQuantConfig::*field, bool fallback) {
  const auto op = config.op_types.find(op_type);
  if (op != config.op_types.end()) {
    if (const std::optional<bool> value = param_setting(op->second.params, param, field)) return *value;
  }
  return param_setting(config.params, param, field).value_or(fallback);
}

}  // namespace

bool SimConfig::is_input_quantized(const std::string& op_type) const {
  return resolve(*this, op_type, &OpTypeQuantConfig::is_input_quantized, input_quantized);
}

bool SimConfig::is_output_quantized(const std::string& op_type) const {
  return resolve(*this, op_type, &OpTypeQuantConfig::is_output_quantized, output_quantized);
}

bool SimConfig::is_activation_symmetric(const std::string& op_type) const {
  return resolve(*this, op_type, &OpTypeQuantConfig::is_symmetric, activation_symmetric);
}

bool SimConfig::is_per_channel(const std::string& op_type) const {
  return resolve(*this, op_type, &OpTypeQuantConfig::per_channel_quantization, per_channel);
}

bool SimConfig::is_param_quantized(const std::string& op_type, const std::string& param) const {
  return resolve_param(*this, op_type, param, &ParamQuantConfig::is_quantized, param_quantized);
}

bool SimConfig::is_param_symmetric(const std::string& op_type, const std::string& param) const {
  return resolve_param(*this, op_type, param, &ParamQuantConfig::is_symmetric, param_symmetric);
}

bool SimConfig::is_model_output_quantized(const std::string& producer_op_type) const {
  return model_output_quantized.value_or(is_output_quantized(producer_op_type));
}

SimConfig parse_sim_config(const nlohmann::json& json, const std::string& source) {
  return Parser(source).parse(json);
}

SimConfig load_sim_config(const std::string& path) {
  if (const std::optional<std::string_view> preset = sim_config_preset(path)) {
    return parse_text(*preset, "configs/" + path + ".json (compiled in)");
  }
  return parse_text(read_text(path), path);
}

std::optional<std::string_view> sim_config_preset(const std::string& name) {
  if (name == "default") return sim_presets::kDefault;
  if (name == "performance") return sim_presets::kPerformance;
  if (name == "openvino") return sim_presets::kOpenVino;
  return std::nullopt;
}

}  // namespace qat
