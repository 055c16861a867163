#include "qat/sim_config.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace qat {
namespace {

using nlohmann::json;
using Groups = std::vector<std::vector<std::string>>;

const std::string kSourceDir = QAT_SOURCE_DIR;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The message of the std::runtime_error that `run` throws.
std::string error_of(const std::function<void()>& run) {
  try {
    run();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no std::runtime_error thrown";
  return "";
}

std::string parse_error(const std::string& text) {
  return error_of([&] { parse_sim_config(json::parse(text), "x.json"); });
}

SimConfig parse(const std::string& text) { return parse_sim_config(json::parse(text), "x.json"); }

// A fresh directory under $TMPDIR, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "qat_sim_XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    root_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(root_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string write(const std::string& name, const std::string& text) const {
    const std::string path = root_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

const Groups kPresetSupergroups = {
    {"Conv", "BatchNormalization", "Relu"},
    {"Conv", "BatchNormalization", "Clip"},
    {"Conv", "BatchNormalization", "HardSwish"},
    {"Conv", "BatchNormalization"},
    {"Conv", "Relu"},
    {"Conv", "Clip"},
    {"Conv", "HardSwish"},
    {"ConvTranspose", "Relu"},
    {"Gemm", "Relu"},
    {"MatMul", "Relu"},
    {"Add", "Relu"},
};

TEST(SimConfigPresets, DefaultResolves) {
  const SimConfig config = load_sim_config("default");
  for (const char* op : {"Conv", "Gemm", "MatMul", "ConvTranspose"}) {
    EXPECT_TRUE(config.is_per_channel(op)) << op;
    EXPECT_TRUE(config.is_param_quantized(op, "weight")) << op;
    EXPECT_TRUE(config.is_param_symmetric(op, "weight")) << op;
    EXPECT_FALSE(config.is_param_quantized(op, "bias")) << op;
    EXPECT_FALSE(config.is_activation_symmetric(op)) << op;
    EXPECT_TRUE(config.is_output_quantized(op)) << op;
    EXPECT_FALSE(config.is_input_quantized(op)) << op;
  }
  for (const char* op : {"Reshape", "Flatten", "Transpose", "MaxPool", "Squeeze", "Unsqueeze", "Pad", "Gather"}) {
    EXPECT_FALSE(config.is_output_quantized(op)) << op;
  }
  EXPECT_FALSE(config.strict_symmetric);
  EXPECT_TRUE(config.unsigned_symmetric);
  EXPECT_EQ(config.activation_bitwidth, 8);
  EXPECT_EQ(config.param_bitwidth, 8);
  EXPECT_EQ(config.supergroups, kPresetSupergroups);
  EXPECT_TRUE(config.model_input_quantized);
  // Forced on even where the producing op type leaves its output float.
  EXPECT_TRUE(config.is_model_output_quantized("Reshape"));
}

TEST(SimConfigPresets, PerformanceIsSymmetric) {
  const SimConfig config = load_sim_config("performance");
  EXPECT_TRUE(config.is_activation_symmetric("Conv"));
  EXPECT_TRUE(config.is_activation_symmetric("Add"));
  EXPECT_TRUE(config.is_per_channel("Conv"));
  EXPECT_TRUE(config.is_param_symmetric("Conv", "weight"));
  EXPECT_FALSE(config.is_param_quantized("Conv", "bias"));
  EXPECT_FALSE(config.strict_symmetric);
  EXPECT_TRUE(config.unsigned_symmetric);
  EXPECT_EQ(config.supergroups, kPresetSupergroups);
  EXPECT_TRUE(config.model_input_quantized);
  EXPECT_TRUE(config.is_model_output_quantized("Gemm"));
}

TEST(SimConfigPresets, CompiledInTextEqualsConfigFiles) {
  for (const std::string name : {"default", "performance", "openvino"}) {
    const std::string path = kSourceDir + "/configs/" + name + ".json";
    ASSERT_TRUE(sim_config_preset(name).has_value()) << name;
    EXPECT_EQ(std::string(*sim_config_preset(name)), read_file(path)) << name;
    EXPECT_EQ(load_sim_config(path).supergroups, load_sim_config(name).supergroups) << name;
  }
  EXPECT_FALSE(sim_config_preset("Default").has_value());
  EXPECT_FALSE(sim_config_preset("configs/default.json").has_value());
}

// Written in AIMET's format with AIMET's target-specific keys (hw_version,
// supported_kernels with dtype, encoding_constraints).
TEST(SimConfigAimet, TargetConfigFileResolves) {
  const SimConfig config = load_sim_config(kSourceDir + "/tests/sim/data/aimet_target_config.json");
  EXPECT_TRUE(config.is_per_channel("Conv"));
  EXPECT_FALSE(config.is_per_channel("Gemm"));
  EXPECT_FALSE(config.is_per_channel("LayerNormalization"));
  EXPECT_TRUE(config.is_param_symmetric("Conv", "weight"));
  EXPECT_FALSE(config.is_activation_symmetric("Conv"));
  EXPECT_FALSE(config.unsigned_symmetric);
  EXPECT_FALSE(config.strict_symmetric);

  EXPECT_TRUE(config.is_param_quantized("Conv", "weight"));
  EXPECT_FALSE(config.is_param_quantized("PRelu", "weight"));
  EXPECT_FALSE(config.is_param_quantized("Conv", "bias"));
  EXPECT_TRUE(config.is_param_quantized("LayerNormalization", "bias"));
  EXPECT_FALSE(config.is_param_symmetric("LayerNormalization", "bias"));
  EXPECT_TRUE(config.is_param_symmetric("LayerNormalization", "weight"));

  EXPECT_FALSE(config.is_output_quantized("Squeeze"));
  EXPECT_TRUE(config.is_output_quantized("Softmax"));
  ASSERT_TRUE(config.op_types.at("Softmax").encoding_constraints.has_value());
  EXPECT_EQ(config.op_types.at("Softmax").encoding_constraints->min, 0.0);
  EXPECT_EQ(config.op_types.at("Softmax").encoding_constraints->max, 1.0);
  EXPECT_FALSE(config.op_types.at("Gemm").encoding_constraints.has_value());

  EXPECT_EQ(config.supergroups,
            (Groups{{"Conv", "Relu"}, {"Conv", "Clip"}, {"ConvTranspose", "Relu"}, {"Add", "Relu"}, {"Gemm", "Relu"}}));
  EXPECT_TRUE(config.model_input_quantized);
  // "model_output": {} leaves each output to its producer's rule.
  EXPECT_FALSE(config.model_output_quantized.has_value());
  EXPECT_TRUE(config.is_model_output_quantized("Conv"));
  EXPECT_FALSE(config.is_model_output_quantized("Squeeze"));
}

// AIMET's per-tensor default config leaves is_symmetric and
// per_channel_quantization out: AIMET then quantizes asymmetrically and
// per tensor, and so must qat.
TEST(SimConfigAimet, MissingKeysTakeAimetDefaults) {
  const SimConfig config = parse(R"({"defaults": {
	"ops": {"is_output_quantized": "True"},
	"params": {"is_quantized": "True"},
	"strict_symmetric": "False",
	"unsigned_symmetric": "True"
},
"params": {"bias": {"is_quantized": "False"}},
"op_type": {},
"supergroups": [{"op_list": ["Conv", "Relu"]}, {"op_list": ["Add", "Relu"]}, {"op_list": ["Gemm", "Relu"]}],
"model_input": {"is_input_quantized": "True"},
"model_output": {}})");
  EXPECT_FALSE(config.is_per_channel("Conv"));
  EXPECT_FALSE(config.is_param_symmetric("Conv", "weight"));
  EXPECT_FALSE(config.is_activation_symmetric("Conv"));
  EXPECT_TRUE(config.is_param_quantized("Conv", "weight"));
  EXPECT_FALSE(config.is_param_quantized("Conv", "bias"));
  EXPECT_EQ(config.supergroups, (Groups{{"Conv", "Relu"}, {"Add", "Relu"}, {"Gemm", "Relu"}}));
}

TEST(SimConfigParse, EmptyObjectGivesDefaults) {
  const SimConfig config = parse("{}");
  EXPECT_TRUE(config.is_output_quantized("Conv"));
  EXPECT_FALSE(config.is_input_quantized("Conv"));
  EXPECT_TRUE(config.is_param_quantized("Conv", "weight"));
  EXPECT_TRUE(config.is_param_quantized("Conv", "bias"));
  EXPECT_FALSE(config.is_param_symmetric("Conv", "weight"));
  EXPECT_FALSE(config.is_activation_symmetric("Conv"));
  EXPECT_FALSE(config.is_per_channel("Conv"));
  EXPECT_FALSE(config.model_input_quantized);
  EXPECT_TRUE(config.is_model_output_quantized("Conv"));
  EXPECT_TRUE(config.supergroups.empty());
}

TEST(SimConfigParse, OpTypeBeatsParamsBeatsDefaults) {
  const SimConfig config = parse(R"({
    "defaults": {"ops": {"is_output_quantized": "True", "is_symmetric": "False"},
                 "params": {"is_quantized": "True", "is_symmetric": "False"},
                 "per_channel_quantization": "True"},
    "params": {"weight": {"is_symmetric": "True"}, "bias": {"is_quantized": "False"}},
    "op_type": {
      "Gemm": {"per_channel_quantization": "False", "is_symmetric": "True", "is_input_quantized": "True",
               "params": {"weight": {"is_symmetric": "False"}, "bias": {"is_quantized": "True"}}},
      "Reshape": {"is_output_quantized": "False"}
    }})");
  // defaults.params < params.weight < op_type.Gemm.params.weight
  EXPECT_TRUE(config.is_param_symmetric("Conv", "weight"));
  EXPECT_FALSE(config.is_param_symmetric("Gemm", "weight"));
  EXPECT_FALSE(config.is_param_symmetric("Conv", "scale"));
  EXPECT_FALSE(config.is_param_quantized("Conv", "bias"));
  EXPECT_TRUE(config.is_param_quantized("Gemm", "bias"));
  // An op_type entry that does not set a field falls back to defaults.
  EXPECT_TRUE(config.is_param_quantized("Reshape", "weight"));
  EXPECT_TRUE(config.is_per_channel("Conv"));
  EXPECT_FALSE(config.is_per_channel("Gemm"));
  EXPECT_TRUE(config.is_per_channel("Reshape"));
  EXPECT_FALSE(config.is_activation_symmetric("Conv"));
  EXPECT_TRUE(config.is_activation_symmetric("Gemm"));
  EXPECT_FALSE(config.is_input_quantized("Conv"));
  EXPECT_TRUE(config.is_input_quantized("Gemm"));
  EXPECT_TRUE(config.is_output_quantized("Conv"));
  EXPECT_FALSE(config.is_output_quantized("Reshape"));
}

TEST(SimConfigParse, ModelOutputSetting) {
  EXPECT_FALSE(parse(R"({"model_output": {"is_output_quantized": "False"}})").is_model_output_quantized("Conv"));
  EXPECT_TRUE(parse(R"({"model_output": {"is_output_quantized": "True"},
                        "op_type": {"Reshape": {"is_output_quantized": "False"}}})")
                  .is_model_output_quantized("Reshape"));
}

TEST(SimConfigParse, StringAndJsonBooleansAgree) {
  const char* strings = R"({
    "defaults": {"ops": {"is_output_quantized": "False", "is_symmetric": "True"},
                 "params": {"is_quantized": "False", "is_symmetric": "True"},
                 "strict_symmetric": "True", "unsigned_symmetric": "False", "per_channel_quantization": "True"},
    "params": {"bias": {"is_quantized": "True"}},
    "op_type": {"Conv": {"is_input_quantized": "True", "per_channel_quantization": "False"}},
    "model_input": {"is_input_quantized": "True"}})";
  const char* booleans = R"({
    "defaults": {"ops": {"is_output_quantized": false, "is_symmetric": true},
                 "params": {"is_quantized": false, "is_symmetric": true},
                 "strict_symmetric": true, "unsigned_symmetric": false, "per_channel_quantization": true},
    "params": {"bias": {"is_quantized": true}},
    "op_type": {"Conv": {"is_input_quantized": true, "per_channel_quantization": false}},
    "model_input": {"is_input_quantized": true}})";
  for (const char* text : {strings, booleans}) {
    const SimConfig config = parse(text);
    EXPECT_FALSE(config.is_output_quantized("Add")) << text;
    EXPECT_TRUE(config.is_activation_symmetric("Add")) << text;
    EXPECT_FALSE(config.is_param_quantized("Gemm", "weight")) << text;
    EXPECT_TRUE(config.is_param_quantized("Gemm", "bias")) << text;
    EXPECT_TRUE(config.is_param_symmetric("Gemm", "weight")) << text;
    EXPECT_TRUE(config.strict_symmetric) << text;
    EXPECT_FALSE(config.unsigned_symmetric) << text;
    EXPECT_TRUE(config.is_per_channel("Gemm")) << text;
    EXPECT_FALSE(config.is_per_channel("Conv")) << text;
    EXPECT_TRUE(config.is_input_quantized("Conv")) << text;
    EXPECT_TRUE(config.model_input_quantized) << text;
  }
}

TEST(SimConfigParse, Bitwidths) {
  const SimConfig config = parse(R"({"defaults": {"activation_bitwidth": 16, "param_bitwidth": 4}})");
  EXPECT_EQ(config.activation_bitwidth, 16);
  EXPECT_EQ(config.param_bitwidth, 4);
  EXPECT_EQ(parse(R"({"defaults": {"param_bitwidth": 2}})").param_bitwidth, 2);
}

TEST(SimConfigErrors, BitwidthOutOfRangeNamesKey) {
  for (const char* bits : {"0", "1", "17", "33", "-8", "18446744073709551615"}) {
    EXPECT_EQ(parse_error(std::string(R"({"defaults": {"activation_bitwidth": )") + bits + "}}"),
              std::string("x.json: 'defaults.activation_bitwidth' must be between 2 and 16, got ") + bits);
    EXPECT_EQ(parse_error(std::string(R"({"defaults": {"param_bitwidth": )") + bits + "}}"),
              std::string("x.json: 'defaults.param_bitwidth' must be between 2 and 16, got ") + bits);
  }
  EXPECT_EQ(parse_error(R"({"defaults": {"param_bitwidth": "8"}})"),
            "x.json: 'defaults.param_bitwidth' must be an integer, got string \"8\"");
  EXPECT_EQ(parse_error(R"({"defaults": {"param_bitwidth": 8.5}})"),
            "x.json: 'defaults.param_bitwidth' must be an integer, got number 8.5");
}

TEST(SimConfigErrors, UnknownKeyNamesPath) {
  EXPECT_EQ(parse_error(R"({"defaults": {"ops": {"is_outptu_quantized": "True"}}})"),
            "x.json: unknown key 'defaults.ops.is_outptu_quantized'");
  EXPECT_EQ(parse_error(R"({"default": {}})"), "x.json: unknown key 'default'");
  EXPECT_EQ(parse_error(R"({"defaults": {"bitwidth": 8}})"), "x.json: unknown key 'defaults.bitwidth'");
  EXPECT_EQ(parse_error(R"({"params": {"weight": {"is_quantised": "True"}}})"),
            "x.json: unknown key 'params.weight.is_quantised'");
  EXPECT_EQ(parse_error(R"({"op_type": {"Conv": {"params": {"weight": {"symmetric": "True"}}}}})"),
            "x.json: unknown key 'op_type.Conv.params.weight.symmetric'");
  EXPECT_EQ(parse_error(R"({"op_type": {"Conv": {"is_quantized": "True"}}})"),
            "x.json: unknown key 'op_type.Conv.is_quantized'");
  EXPECT_EQ(parse_error(R"({"supergroups": [{"op_list": ["Conv", "Relu"]}, {"ops": ["Add", "Relu"]}]})"),
            "x.json: unknown key 'supergroups[1].ops'");
  EXPECT_EQ(parse_error(R"({"model_input": {"is_output_quantized": "True"}})"),
            "x.json: unknown key 'model_input.is_output_quantized'");
  EXPECT_EQ(parse_error(R"({"op_type": {"Softmax": {"encoding_constraints": {"min": 0, "max": 1, "step": 2}}}})"),
            "x.json: unknown key 'op_type.Softmax.encoding_constraints.step'");
}

TEST(SimConfigErrors, KnownAimetKeysAreIgnored) {
  const SimConfig config = parse(R"({
    "defaults": {"hw_version": "V79", "supported_kernels": [{"activation": {"bitwidth": 16, "dtype": "float"}}]},
    "op_type": {"Conv": {"supported_kernels": [{"activation": {"bitwidth": 8, "dtype": "int"}}]}}})");
  EXPECT_EQ(config.activation_bitwidth, 8);
  EXPECT_TRUE(config.is_output_quantized("Conv"));
}

TEST(SimConfigErrors, WrongTypeNamesPathAndType) {
  const std::string boolean = "must be a boolean (\"True\", \"False\", true or false), got ";
  EXPECT_EQ(parse_error(R"({"defaults": {"ops": {"is_symmetric": 3}}})"),
            "x.json: 'defaults.ops.is_symmetric' " + boolean + "number 3");
  EXPECT_EQ(parse_error(R"({"defaults": {"per_channel_quantization": "true"}})"),
            "x.json: 'defaults.per_channel_quantization' " + boolean + "string \"true\"");
  EXPECT_EQ(parse_error(R"({"op_type": {"Conv": {"params": {"bias": {"is_quantized": null}}}}})"),
            "x.json: 'op_type.Conv.params.bias.is_quantized' " + boolean + "null");
  EXPECT_EQ(parse_error(R"({"model_output": {"is_output_quantized": ["True"]}})"),
            "x.json: 'model_output.is_output_quantized' " + boolean + "array");
  EXPECT_EQ(parse_error(R"({"defaults": {"ops": []}})"), "x.json: 'defaults.ops' must be an object, got array");
  EXPECT_EQ(parse_error(R"({"op_type": {"Conv": "True"}})"),
            "x.json: 'op_type.Conv' must be an object, got string \"True\"");
  EXPECT_EQ(parse_error(R"({"op_type": []})"), "x.json: 'op_type' must be an object, got array");
  EXPECT_EQ(parse_error(R"({"params": {"bias": false}})"),
            "x.json: 'params.bias' must be an object, got boolean false");
  EXPECT_EQ(parse_error("[]"), "x.json: the top level must be an object, got array");
  EXPECT_EQ(parse_error(R"({"op_type": {"Softmax": {"encoding_constraints": {"min": "0", "max": 1}}}})"),
            "x.json: 'op_type.Softmax.encoding_constraints.min' must be a number, got string \"0\"");
}

TEST(SimConfigErrors, EncodingConstraintsNeedAnInterval) {
  EXPECT_EQ(parse_error(R"({"op_type": {"Softmax": {"encoding_constraints": {"min": 0}}}})"),
            "x.json: missing key 'op_type.Softmax.encoding_constraints.max'");
  EXPECT_EQ(parse_error(R"({"op_type": {"Softmax": {"encoding_constraints": {"min": 1, "max": 1}}}})"),
            "x.json: 'op_type.Softmax.encoding_constraints' needs min < max, got min 1 and max 1");
}

TEST(SimConfigErrors, MalformedSupergroups) {
  EXPECT_EQ(parse_error(R"({"supergroups": {"op_list": ["Conv", "Relu"]}})"),
            "x.json: 'supergroups' must be an array, got object");
  EXPECT_EQ(parse_error(R"({"supergroups": [{"op_list": ["Conv", "Relu"]}, {}]})"),
            "x.json: missing key 'supergroups[1].op_list'");
  EXPECT_EQ(parse_error(R"({"supergroups": [{"op_list": ["Conv"]}]})"),
            "x.json: 'supergroups[0].op_list' must name at least 2 op types, got 1");
  EXPECT_EQ(parse_error(R"({"supergroups": [{"op_list": "Conv,Relu"}]})"),
            "x.json: 'supergroups[0].op_list' must be an array, got string \"Conv,Relu\"");
  EXPECT_EQ(parse_error(R"({"supergroups": [{"op_list": ["Conv", 7]}]})"),
            "x.json: 'supergroups[0].op_list[1]' must be a string, got number 7");
  EXPECT_EQ(parse_error(R"({"supergroups": ["Conv"]})"),
            "x.json: 'supergroups[0]' must be an object, got string \"Conv\"");
}

TEST(SimConfigFiles, MalformedJsonNamesFileAndPosition) {
  const TempDir dir;
  const std::string path = dir.write("broken.json", "{\n  \"defaults\": {\n    \"ops\": {,}\n  }\n}\n");
  const std::string message = error_of([&] { load_sim_config(path); });
  EXPECT_EQ(message.rfind(path + ": malformed JSON: parse error at line 3, column 13: ", 0), 0u) << message;

  const std::string empty = dir.write("empty.json", "");
  EXPECT_EQ(error_of([&] { load_sim_config(empty); }).rfind(empty + ": malformed JSON: ", 0), 0u);
}

TEST(SimConfigFiles, ErrorsInAFileNameIt) {
  const TempDir dir;
  const std::string path = dir.write("typo.json", R"({"defaults": {"ops": {"is_outptu_quantized": "True"}}})");
  EXPECT_EQ(error_of([&] { load_sim_config(path); }), path + ": unknown key 'defaults.ops.is_outptu_quantized'");
}

TEST(SimConfigFiles, MissingFileNamesIt) {
  const TempDir dir;
  const std::string path = dir.root() + "/absent.json";
  EXPECT_EQ(error_of([&] { load_sim_config(path); }), path + ": cannot open: No such file or directory");
  EXPECT_EQ(error_of([&] { load_sim_config(dir.root()); }), dir.root() + ": cannot open: is a directory");
  // A near-miss of a preset name is a path, not a preset.
  EXPECT_EQ(error_of([&] { load_sim_config("Default"); }), "Default: cannot open: No such file or directory");
}

}  // namespace
}  // namespace qat
