// ONNX export: the float model, the QDQ layout, and the exported model run
// by ONNX Runtime and OpenVINO (tests/fixtures/run_exported.py with the
// venv's python) against the sim on Fashion-MNIST test images.
#include "exported_model_runner.h"

#include "qat/data.h"
#include "qat/onnx_import.h"
#include "qat/train.h"
#include "qat/zoo.h"
#include "sim_options.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <iostream>
#include <map>
#include <set>

namespace qat {
namespace {

using test::output_step;
using test::run_eval;
using test::run_exported;
using test::temp_dir;
using torch::Tensor;
using TP = onnx::TensorProto;

data::DataLoader fashion(data::Split split, int64_t n, bool shuffle) {
  data::Dataset d = data::load_fashion_mnist(split);
  d.images = d.images.slice(0, 0, n);
  d.labels = d.labels.slice(0, 0, n);
  data::LoaderOptions o;
  o.batch_size = 64;
  o.shuffle = shuffle;
  o.seed = 5;
  o.normalization = {{data::kFashionMnistMean}, {data::kFashionMnistStd}};
  return data::DataLoader(std::move(d), o);
}

// A sim of `model` calibrated on a few Fashion-MNIST training batches.
std::unique_ptr<QuantSim> calibrated_sim(std::shared_ptr<GraphModule> model, const QuantSimOptions& options) {
  auto sim = std::make_unique<QuantSim>(std::move(model), options, std::vector<int64_t>{1, 1, 28, 28});
  const auto calibration = fashion(data::Split::kTrain, 512, false);
  sim->compute_encodings([&](GraphModule& m) {
    for (const auto& batch : calibration) m.forward(batch.images);
  });
  return sim;
}

std::map<std::string, const TP*> initializers(const onnx::ModelProto& m) {
  std::map<std::string, const TP*> out;
  for (const auto& t : m.graph().initializer()) out[t.name()] = &t;
  return out;
}

std::map<std::string, const onnx::NodeProto*> producers(const onnx::ModelProto& m) {
  std::map<std::string, const onnx::NodeProto*> out;
  for (const auto& node : m.graph().node()) {
    for (const auto& o : node.output()) out[o] = &node;
  }
  return out;
}

int64_t opset_of(const onnx::ModelProto& m) {
  for (const auto& entry : m.opset_import()) {
    if (entry.domain().empty()) return entry.version();
  }
  return -1;
}

int weighted_layers(QuantSim& sim) {
  int n = 0;
  for (const auto& info : sim.quantizers()) n += info.is_param;
  return n;
}

TEST(TensorToOnnx, RoundTripsThroughTheImporter) {
  for (const Tensor& t : {torch::randn({2, 3}), torch::randn({4}, torch::kDouble), torch::arange(-5, 5).to(torch::kChar),
                          torch::arange(0, 255).to(torch::kByte), torch::arange(-300, 300).to(torch::kShort),
                          torch::arange(7).to(torch::kInt), torch::arange(7), torch::tensor({true, false}),
                          torch::tensor(2.5f)}) {
    const Tensor back = tensor_from_onnx(tensor_to_onnx(t, "t"), "test");
    EXPECT_EQ(back.scalar_type(), t.scalar_type());
    EXPECT_TRUE(torch::equal(back, t)) << t;
  }
  const Tensor codes = torch::tensor({0.0, 1.0, 65535.0});
  EXPECT_TRUE(torch::equal(tensor_from_onnx(tensor_to_onnx(codes, "u16", TP::UINT16), "test"),
                           torch::tensor({0, 1, 65535}, torch::kInt)));
  try {
    tensor_to_onnx(torch::tensor({-129.0}), "w", TP::INT8);
    FAIL() << "out-of-range codes must throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tensor_to_onnx(torch::tensor({0.5}), "w", TP::INT8), std::invalid_argument);
}

TEST(FloatExport, ReimportsToTheSameModel) {
  auto model = make_model("resnet8");
  const std::string path = temp_dir("float") + "/model.onnx";
  export_onnx_float(*model, path);
  auto reimported = import_onnx(path);  // runs libonnx's checker too
  const Tensor x = torch::randn({3, 1, 28, 28});
  EXPECT_TRUE(torch::equal(run_eval(*model, x), run_eval(*reimported, x)));
}

TEST(FloatExport, RefusesSimNodes) {
  QuantSim sim(make_model("resnet8"), sim_options(8, 8), {1, 1, 28, 28});
  EXPECT_THROW(float_model_proto(sim.model()), std::invalid_argument);
}

TEST(QdqExport, UncalibratedSimNamesTheQuantizer) {
  QuantSim sim(make_model("resnet8"), sim_options(8, 8), {1, 1, 28, 28});
  try {
    qdq_model_proto(sim);
    FAIL() << "an uncalibrated sim must not export";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("quantizer '"), std::string::npos) << e.what();
  }
}

// The layout ONNX Runtime fuses into QLinearConv / QGemm: every Conv and
// Gemm reads DequantizeLinear outputs for its input, int8 weight and int32
// bias, and the weights keep their names.
TEST(QdqExport, LayoutFeedsIntegerKernels) {
  auto sim = calibrated_sim(make_model("resnet8"), sim_options(8, 8));
  const onnx::ModelProto m = qdq_model_proto(*sim);
  EXPECT_TRUE(write_onnx_model(m, temp_dir("layout") + "/model.onnx")) << "libonnx's checker must run";
  EXPECT_EQ(opset_of(m), 17);
  const auto inits = initializers(m);
  const auto from = producers(m);
  int weighted = 0;
  for (const auto& node : m.graph().node()) {
    EXPECT_NE(node.op_type().rfind("Qat", 0), 0u) << node.name();
    EXPECT_NE(node.op_type(), "BatchNormalization");
    if (node.op_type() != "Conv" && node.op_type() != "Gemm") continue;
    ++weighted;
    ASSERT_EQ(node.input_size(), 3) << node.name();
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(from.count(node.input(i))) << node.name() << " input " << i;
      EXPECT_EQ(from.at(node.input(i))->op_type(), "DequantizeLinear") << node.name() << " input " << i;
    }
    const onnx::NodeProto& weight_dq = *from.at(node.input(1));
    EXPECT_EQ(inits.at(weight_dq.input(0))->data_type(), TP::INT8);
    EXPECT_EQ(weight_dq.attribute(0).name(), "axis");  // per-channel
    EXPECT_EQ(inits.at(from.at(node.input(2))->input(0))->data_type(), TP::INT32);
  }
  EXPECT_EQ(weighted, weighted_layers(*sim));
  EXPECT_TRUE(inits.count("stem.conv.weight"));
  EXPECT_EQ(inits.at("stem.conv.weight")->data_type(), TP::INT8);
  // Every activation quantizer is a Q -> DQ pair on the sim's tensor.
  std::set<std::string> quantized;
  for (const auto& node : m.graph().node()) {
    if (node.op_type() == "QuantizeLinear") quantized.insert(node.input(0));
  }
  for (const auto& info : sim->quantizers()) {
    if (!info.is_param) EXPECT_TRUE(quantized.count(info.tensor)) << info.tensor;
  }
}

TEST(QdqExport, FourBitGridsStayInsideTheirRange) {
  auto sim = calibrated_sim(make_model("resnet8"), sim_options(4, 4));
  const onnx::ModelProto m = qdq_model_proto(*sim);
  EXPECT_TRUE(write_onnx_model(m, temp_dir("w4a4") + "/model.onnx"));
  const auto inits = initializers(m);
  const auto from = producers(m);
  int weights = 0, clipped = 0;
  for (const auto& node : m.graph().node()) {
    if (node.op_type() == "DequantizeLinear" && inits.count(node.input(0)) &&
        inits.at(node.input(0))->data_type() == TP::INT8) {
      const Tensor codes = tensor_from_onnx(*inits.at(node.input(0)), "test");
      EXPECT_GE(codes.min().item<int>(), -8) << node.input(0);
      EXPECT_LE(codes.max().item<int>(), 7) << node.input(0);
      ++weights;
    }
    if (node.op_type() == "QuantizeLinear") {
      // Codes of a 4-bit activation stay in its 16 levels: a Clip to the
      // grid's float range comes first.
      ASSERT_TRUE(from.count(node.input(0)) && from.at(node.input(0))->op_type() == "Clip") << node.name();
      const auto& clip = *from.at(node.input(0));
      const float lo = tensor_from_onnx(*inits.at(clip.input(1)), "t").item<float>();
      const float hi = tensor_from_onnx(*inits.at(clip.input(2)), "t").item<float>();
      const float scale = tensor_from_onnx(*inits.at(node.input(1)), "t").item<float>();
      EXPECT_NEAR((hi - lo) / scale, 15.0, 1e-3) << node.name();
      ++clipped;
    }
  }
  EXPECT_EQ(weights, weighted_layers(*sim));
  EXPECT_GT(clipped, 0);
}

TEST(QdqExport, SixteenBitActivationsUseOpset21) {
  auto sim = calibrated_sim(make_model("resnet8"), sim_options(8, 16));
  const onnx::ModelProto m = qdq_model_proto(*sim);
  EXPECT_EQ(opset_of(m), 21);
  EXPECT_EQ(m.ir_version(), 10);
  const auto inits = initializers(m);
  int wide = 0;
  for (const auto& node : m.graph().node()) {
    if (node.op_type() == "QuantizeLinear") {
      const int type = inits.at(node.input(2))->data_type();
      EXPECT_TRUE(type == TP::UINT16 || type == TP::INT16) << node.name();
      ++wide;
    }
  }
  EXPECT_GT(wide, 0);
  // libonnx 1.12 does not know opset 21: the runtime test below checks it
  // with the venv's onnx instead.
  EXPECT_FALSE(write_onnx_model(m, temp_dir("a16") + "/model.onnx"));
}

// Weights dominate resnet18's file: int8 storage makes it ~4x smaller.
TEST(QdqExport, Resnet18FileIsFourTimesSmaller) {
  for (const char* name : {"resnet18", "resnet20"}) {
    auto fp32 = make_model(name);
    const size_t float_bytes = float_model_proto(*fp32).ByteSizeLong();
    auto sim = calibrated_sim(make_model(name), sim_options(8, 8));
    const size_t int8_bytes = qdq_model_proto(*sim).ByteSizeLong();
    const double ratio = static_cast<double>(float_bytes) / static_cast<double>(int8_bytes);
    std::cout << name << ": FP32 " << float_bytes << " bytes, INT8 " << int8_bytes << " bytes, " << ratio
              << "x smaller\n";
    RecordProperty(std::string(name) + "_size_ratio", std::to_string(ratio));
    if (std::string(name) == "resnet18") EXPECT_GE(ratio, 3.9);
  }
}

struct Agreement {
  double top1_agreement;  // same argmax
  // Some class is ranked first by both (ties included): 8-bit logits tie
  // exactly on ~2% of images, where a one-step difference in either tied
  // logit moves the argmax.
  double top1_tie_aware;
  double accuracy, reference_accuracy;
  double max_steps;  // max |logit difference| / step
};

Agreement compare(const Tensor& logits, const Tensor& reference, const Tensor& labels, double step) {
  const Tensor top1 = logits.argmax(1), ref_top1 = reference.argmax(1);
  auto firsts = [](const Tensor& t) { return t.eq(std::get<0>(t.max(1, /*keepdim=*/true))); };
  const Tensor ranked_first = (firsts(logits) & firsts(reference)).any(1);
  auto mean = [](const Tensor& t) { return t.to(torch::kDouble).mean().item<double>(); };
  return {mean(top1.eq(ref_top1)), mean(ranked_first), mean(top1.eq(labels)), mean(ref_top1.eq(labels)),
          (logits - reference).abs().max().item<double>() / step};
}

Tensor concat_images(const data::DataLoader& loader, Tensor* labels) {
  std::vector<Tensor> xs, ys;
  for (const auto& batch : loader) {
    xs.push_back(batch.images);
    ys.push_back(batch.labels);
  }
  *labels = torch::cat(ys);
  return torch::cat(xs);
}

void print_agreement(const std::string& what, const Agreement& a, double step) {
  std::cout << what << ": top-1 agreement " << 100 * a.top1_agreement << "% (" << 100 * a.top1_tie_aware
            << "% counting ties), accuracy " << 100 * a.accuracy << "% (reference " << 100 * a.reference_accuracy
            << "%), max logit difference " << a.max_steps << " output steps of " << step << "\n";
}

// resnet8 trained for 300 steps (FP32), quantized W8A8 with a short QAT
// with range learning, exported, and run on the first 1000 test images.
TEST(QdqExport, TrainedResnet8AgreesWithSimInOnnxRuntimeAndOpenVino) {
  QAT_SKIP_WITHOUT_RUNTIMES();
  torch::manual_seed(0);
  auto model = make_model("resnet8");
  const auto test = fashion(data::Split::kTest, 1000, false);
  TrainOptions options;
  options.epochs = 3;  // 100 steps each, so that the cosine schedule ends at a small lr
  options.lr = 0.05;
  options.progress = false;
  train(*model, fashion(data::Split::kTrain, 100 * 64, true), test, options);
  Tensor labels;
  const Tensor x = concat_images(test, &labels);
  const Tensor fp32_logits = run_eval(*model, x);
  const std::string dir = temp_dir("trained");
  export_onnx_float(*model, dir + "/model_fp32.onnx");

  auto sim = calibrated_sim(model, sim_options(8, 8));
  sim->set_range_learning(true, true);
  TrainOptions qat = options;
  qat.epochs = 1;
  qat.lr = 1e-3;
  qat.encoding_parameters = sim->encoding_parameters();
  train(sim->model(), fashion(data::Split::kTrain, 50 * 64, true), test, qat);
  const Tensor float_bias_logits = run_eval(sim->model(), x);
  const std::string exported = qdq_model_proto(*sim).SerializeAsString();
  round_biases_to_export_grid(*sim);
  EXPECT_EQ(qdq_model_proto(*sim).SerializeAsString(), exported) << "rounding the biases must not change the export";
  const Tensor sim_logits = run_eval(sim->model(), x);
  export_onnx_qdq(*sim, dir + "/model_int8.onnx");
  EXPECT_GT(compare(sim_logits, sim_logits, labels, 1.0).accuracy, 0.8) << "training did not take";

  const double step = output_step(*sim);
  // Both logits lie on the output grid, so differences are whole steps;
  // dividing by the step in float can put 3 steps at 3.0000001.
  constexpr double kStepSlack = 1e-3;
  const auto int8 = run_exported(dir + "/model_int8.onnx", x, dir, "ort,openvino", false);
  for (const auto& [backend, logits] : int8) {
    print_agreement(backend + " INT8 vs sim with float biases", compare(logits, float_bias_logits, labels, step), step);
    const Agreement a = compare(logits, sim_logits, labels, step);
    print_agreement(backend + " INT8 vs sim", a, step);
    RecordProperty(backend + "_int8_agreement", std::to_string(a.top1_agreement));
    RecordProperty(backend + "_int8_agreement_ties", std::to_string(a.top1_tie_aware));
    RecordProperty(backend + "_int8_max_steps", std::to_string(a.max_steps));
    EXPECT_GE(a.top1_tie_aware, 0.999) << backend;
    if (backend == "ort") {
      EXPECT_GE(a.top1_agreement, 0.995);
      EXPECT_LE(std::abs(a.accuracy - a.reference_accuracy), 0.001 + 1e-9);
      EXPECT_LE(a.max_steps, 2.0 + kStepSlack);
    } else {
      // OpenVINO fuses Conv + residual Add and drops the requantization of
      // the conv output in between (docs/export.md): its logits are a
      // slightly different (more precise) model's, which breaks the sim's
      // exact ties (see Agreement) its own way. The tie-aware agreement
      // above holds it to the sim; plain agreement and accuracy move with
      // the ties (98.8% and -0.5 pp on these 1000 images, 11 of the 12
      // disagreements ties, since QatConvBn divides small layers' weights
      // rather than their outputs by the fold factor).
      EXPECT_GE(a.top1_agreement, 0.985);
      EXPECT_LE(std::abs(a.accuracy - a.reference_accuracy), 0.006 + 1e-9);
      EXPECT_LE(a.max_steps, 3.0 + kStepSlack);
    }
  }
  const auto fp32 = run_exported(dir + "/model_fp32.onnx", x, dir, "ort,openvino", false);
  for (const auto& [backend, logits] : fp32) {
    const Agreement a = compare(logits, fp32_logits, labels, 1.0);
    std::cout << backend << " FP32 vs qat FP32: top-1 agreement " << 100 * a.top1_agreement << "%, max |difference| "
              << a.max_steps << "\n";
    EXPECT_GE(a.top1_agreement, 0.999) << backend;
    EXPECT_LE(a.max_steps, 1e-4 * fp32_logits.abs().max().item<double>()) << backend;
  }
}

// Sub-8-bit (Clip before QuantizeLinear) and 16-bit (opset 21) exports run
// in ONNX Runtime as the sim computes them.
class RuntimeBits : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(RuntimeBits, OnnxRuntimeMatchesSim) {
  QAT_SKIP_WITHOUT_RUNTIMES();
  const auto [w, a] = GetParam();
  auto sim = calibrated_sim(make_model("resnet8"), sim_options(w, a));
  const auto test = fashion(data::Split::kTest, 256, false);
  std::vector<Tensor> xs;
  for (const auto& batch : test) xs.push_back(batch.images);
  const Tensor x = torch::cat(xs);
  const Tensor expected = run_eval(sim->model(), x);
  const std::string dir = temp_dir("w" + std::to_string(w) + "a" + std::to_string(a));
  export_onnx_qdq(*sim, dir + "/model.onnx");
  const Tensor got = run_exported(dir + "/model.onnx", x, dir, "ort", /*python_check=*/true).at("ort");
  const double step = output_step(*sim);
  const double steps = (got - expected).abs().max().item<double>() / step;
  std::cout << "W" << w << "A" << a << ": max logit difference " << steps << " output steps\n";
  EXPECT_LE(steps, 4.0);
}

INSTANTIATE_TEST_SUITE_P(Bits, RuntimeBits,
                         ::testing::Values(std::pair{4, 4}, std::pair{8, 8}, std::pair{8, 16}),
                         [](const auto& info) {
                           return "W" + std::to_string(info.param.first) + "A" + std::to_string(info.param.second);
                         });

}  // namespace
}  // namespace qat
