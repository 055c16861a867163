#include "qat/encodings.h"

#include "qat/zoo.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

namespace qat {
namespace {

using nlohmann::json;
using torch::Tensor;

QuantSimOptions options_for(int param_bits, int act_bits) {
  QuantSimOptions o;
  o.config = load_sim_config("default");
  o.config.param_bitwidth = param_bits;
  o.config.activation_bitwidth = act_bits;
  return o;
}

std::unique_ptr<QuantSim> sim_of(const std::string& model, int param_bits = 8, int act_bits = 8) {
  ZooOptions z;
  z.seed = 4;
  return std::make_unique<QuantSim>(make_model(model, z), options_for(param_bits, act_bits),
                                    std::vector<int64_t>{1, 1, 28, 28});
}

std::unique_ptr<QuantSim> calibrated(const std::string& model, int param_bits = 8, int act_bits = 8) {
  auto sim = sim_of(model, param_bits, act_bits);
  torch::manual_seed(2);
  const Tensor x = torch::randn({8, 1, 28, 28});
  sim->compute_encodings([&](GraphModule& m) { m.forward(x); });
  return sim;
}

Tensor eval_forward(QuantSim& sim, const Tensor& x) {
  torch::NoGradGuard no_grad;
  sim.model().eval();
  return sim.model().forward(x);
}

std::string temp_path(const std::string& name) {
  std::filesystem::create_directories(::testing::TempDir());
  return ::testing::TempDir() + "/qat_encodings_" + name + ".json";
}

// Expects load_encodings(file) to throw one error naming file and tensor.
void expect_load_error(QuantSim& sim, const json& file, const std::string& tensor, const std::string& why) {
  try {
    load_encodings(sim, file, "enc.json");
    FAIL() << "expected an error about " << tensor;
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind("enc.json: tensor '" + tensor + "'", 0), 0u) << message;
    EXPECT_NE(message.find(why), std::string::npos) << message;
  }
}

const json& entry_named(const json& list, const std::string& name) {
  for (const json& e : list) {
    if (e.at("name") == name) return e;
  }
  throw std::logic_error("no entry " + name);
}

TEST(Encodings, RoundTripReproducesTheSimExactly) {
  for (auto version : {EncodingsVersion::k1_0_0, EncodingsVersion::k0_6_1}) {
    for (const auto& [w, a] : {std::pair{8, 8}, {4, 4}, {8, 16}}) {
      auto sim = calibrated("resnet8", w, a);
      const std::string path = temp_path("round_trip");
      save_encodings(*sim, path, version);
      auto fresh = sim_of("resnet8", 8, 8);  // other bitwidths: the file sets them
      load_encodings(*fresh, path);
      const Tensor x = torch::randn({4, 1, 28, 28});
      EXPECT_TRUE(torch::equal(eval_forward(*sim, x), eval_forward(*fresh, x))) << "W" << w << "A" << a;
    }
  }
}

TEST(Encodings, AimetOffsetConvention) {
  auto sim = calibrated("resnet8");
  const json file = encodings_to_json(*sim);
  EXPECT_EQ(file.at("version"), "1.0.0");
  // Weights: signed symmetric 8-bit, per-channel.
  const json& weight = entry_named(file.at("param_encodings"), "stem.conv.weight");
  EXPECT_EQ(weight.at("enc_type"), "PER_CHANNEL");
  EXPECT_EQ(weight.at("is_sym"), true);
  EXPECT_EQ(weight.at("bw"), 8);
  EXPECT_EQ(weight.at("scale").size(), 16u);
  for (const auto& offset : weight.at("offset")) EXPECT_EQ(offset, -128);
  // The model input: unsigned asymmetric, offset = -zero point.
  const json& input = entry_named(file.at("activation_encodings"), "input");
  EXPECT_EQ(input.at("is_sym"), false);
  const Encoding enc = applied_encoding(*sim, "input.quantizer");
  EXPECT_EQ(input.at("offset")[0].get<int64_t>(), -static_cast<int64_t>(enc.zero_point.item<float>()));
  EXPECT_EQ(input.at("scale")[0].get<double>(), static_cast<double>(enc.scale.item<float>()));

  const json legacy = encodings_to_json(*sim, EncodingsVersion::k0_6_1);
  const json& channels = legacy.at("param_encodings").at("stem.conv.weight");
  ASSERT_EQ(channels.size(), 16u);
  EXPECT_EQ(channels[0].at("is_symmetric"), "True");
  EXPECT_EQ(channels[0].at("offset"), -128);
  EXPECT_DOUBLE_EQ(channels[0].at("min").get<double>(), -128 * channels[0].at("scale").get<double>());
}

TEST(Encodings, FileOfAnotherModelIsRefused) {
  auto resnet20 = calibrated("resnet20");
  auto resnet8 = sim_of("resnet8");
  // resnet20's layer1.1 does not exist in resnet8.
  const json file = encodings_to_json(*resnet20);
  expect_load_error(*resnet8, file, "layer1.1.1.bn.out", "another model");
  json params_only = file;
  params_only["activation_encodings"] = json::array();
  params_only["param_encodings"] = json::array({entry_named(file.at("param_encodings"), "layer1.1.0.conv.weight")});
  expect_load_error(*resnet8, params_only, "layer1.1.0.conv.weight", "no param quantizer");

  // Same names, different width: channel counts differ.
  auto resnet8_file = encodings_to_json(*calibrated("resnet8"));
  for (auto& entry : resnet8_file["param_encodings"]) {
    if (entry.at("name") == "layer2.0.0.conv.weight") {
      entry["scale"].erase(entry["scale"].size() - 1);
      entry["offset"].erase(entry["offset"].size() - 1);
    }
  }
  expect_load_error(*resnet8, resnet8_file, "layer2.0.0.conv.weight", "31 scale(s)");
}

TEST(Encodings, IncompleteOrInvalidFilesChangeNothing) {
  auto source = calibrated("resnet8");
  auto sim = sim_of("resnet8");
  json file = encodings_to_json(*source);
  json missing = file;
  missing["activation_encodings"].erase(0);
  expect_load_error(*sim, missing, "input", "no encoding for it");
  EXPECT_FALSE(sim->quantizer("stem.conv.weight_quantizer").has_encoding()) << "a failed load must change nothing";

  json off_grid = file;
  off_grid["activation_encodings"][0]["offset"][0] = 7;  // positive: z = -7 is below an unsigned grid
  expect_load_error(*sim, off_grid, "input", "off the 8-bit grid");

  json legacy = encodings_to_json(*source, EncodingsVersion::k0_6_1);
  legacy["param_encodings"]["stem.conv.weight"][0]["is_symmetric"] = "Maybe";
  expect_load_error(*sim, legacy, "stem.conv.weight", "not True or False");
}

// Found by fuzz/encodings_fuzzer: nlohmann casts 8e79 to int unchecked
// (undefined behaviour); such numbers must be named errors.
TEST(Encodings, NumbersOutOfTheFieldsRangeAreNamedErrors) {
  auto source = calibrated("resnet8");
  auto sim = sim_of("resnet8");
  const json file = encodings_to_json(*source);
  json huge_bitwidth = file;
  huge_bitwidth["activation_encodings"][0]["bw"] = 8e79;
  expect_load_error(*sim, huge_bitwidth, "input", "'bw' must be an integer");
  json fractional_offset = file;
  fractional_offset["activation_encodings"][0]["offset"][0] = 1e30;
  expect_load_error(*sim, fractional_offset, "input", "'offset' must be a list of 64-bit integers");
  json legacy = encodings_to_json(*source, EncodingsVersion::k0_6_1);
  legacy["param_encodings"]["stem.conv.weight"][0]["bitwidth"] = 18446744073709551615u;
  expect_load_error(*sim, legacy, "stem.conv.weight", "'bitwidth' must be an integer");
  EXPECT_FALSE(sim->quantizer("stem.conv.weight_quantizer").has_encoding()) << "a failed load must change nothing";
}

}  // namespace
}  // namespace qat
