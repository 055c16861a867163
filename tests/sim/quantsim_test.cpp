#include "qat/quantsim.h"

#include "qat/builder.h"
#include "qat/fake_quant.h"
#include "qat/train.h"
#include "qat/zoo.h"
#include "sim_options.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <set>

namespace qat {
namespace {

using torch::Tensor;

// BN statistics far from the identity, so folding mistakes show.
void randomize_batchnorm(GraphModule& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (const auto& name : m.initializer_names()) {
    const Tensor t = m.initializer(name);
    if (name.find("running_mean") != std::string::npos) t.copy_(torch::randn_like(t) * 0.1);
    if (name.find("running_var") != std::string::npos) t.copy_(torch::rand_like(t) + 0.5);
    if (name.find(".bn.weight") != std::string::npos) t.copy_(torch::rand_like(t) + 0.5);
    if (name.find(".bn.bias") != std::string::npos) t.copy_(torch::randn_like(t) * 0.1);
  }
}

std::shared_ptr<GraphModule> resnet8(uint64_t seed = 1) {
  ZooOptions o;
  o.seed = seed;
  auto m = make_model("resnet8", o);
  randomize_batchnorm(*m, seed);
  return m;
}

void calibrate(QuantSim& sim, const Tensor& batch) {
  sim.compute_encodings([&](GraphModule& m) { m.forward(batch); });
}

TEST(QuantSim, PlacementFollowsSupergroupsAndAgnosticOps) {
  QuantSim sim(resnet8(), sim_options(8, 8, BatchNormMode::kSimulate, "default"), {1, 1, 28, 28});
  const Graph& g = sim.model().graph();
  std::set<std::string> quantized_layers, weight_layers;
  for (const auto& q : sim.quantizers()) (q.is_param ? weight_layers : quantized_layers).insert(q.layer);
  for (const auto& node : g.nodes) {
    if (node.op_type == "QatConvBn" || node.op_type == "Gemm") {
      EXPECT_TRUE(weight_layers.count(node.name)) << node.name << " has no weight quantizer";
    }
    if (node.op_type == "Flatten") EXPECT_FALSE(quantized_layers.count(node.name)) << "agnostic op quantized";
    // A ConvBn followed by its ReLU is one supergroup: only the ReLU output
    // is quantized, by a quantizer that absorbed the ReLU.
    if (node.op_type == "QatConvBn") {
      // (With range learning the next conv reads it too: recomputing_conv.h.)
      const auto readers = g.consumers(node.outputs[0]);
      const bool feeds_relu = std::any_of(readers.begin(), readers.end(), [&](size_t r) {
        return g.nodes[r].op_type == "QatFakeQuant" && g.nodes[r].attr_string("activation", "") == "Relu";
      });
      EXPECT_EQ(quantized_layers.count(node.name) == 0, feeds_relu) << node.name;
    }
    EXPECT_NE(node.op_type, "Relu") << node.name << ": every ReLU output is quantized, so every ReLU is absorbed";
  }
  EXPECT_TRUE(quantized_layers.count("input")) << "model input is quantized in the default preset";
  // Both inputs of every residual Add are quantized values.
  for (const auto& node : g.nodes) {
    if (node.op_type != "Add") continue;
    for (const auto& in : node.inputs) {
      const Node* producer = g.producer(in);
      ASSERT_NE(producer, nullptr);
      EXPECT_EQ(producer->op_type, "QatFakeQuant") << node.name << " reads unquantized " << in;
    }
  }
}

// model_input_bits sets the input quantizer alone; a layer_bits entry for
// the input name wins over it.
TEST(QuantSim, ModelInputBitsSetTheInputQuantizerAlone) {
  const auto bits_of = [](const QuantSimOptions& options) {
    QuantSim sim(resnet8(), options, {1, 1, 28, 28});
    std::map<std::string, int> bits;
    for (const auto& q : sim.quantizers()) {
      bits[q.name] = static_cast<Quantizer&>(sim.model().attachment(q.name)).spec().grid.bitwidth;
    }
    return bits;
  };
  QuantSimOptions options = sim_options(4, 4);
  const auto plain = bits_of(options);
  options.model_input_bits = 8;
  const auto with_input_bits = bits_of(options);
  ASSERT_EQ(plain.size(), with_input_bits.size());
  for (const auto& [name, bits] : plain) {
    EXPECT_EQ(bits, 4) << name;
    EXPECT_EQ(with_input_bits.at(name), name == "input.quantizer" ? 8 : 4) << name;
  }
  options.layer_bits["input"].activation_bits = 6;
  EXPECT_EQ(bits_of(options).at("input.quantizer"), 6);
}

// The openvino preset leaves a conv's output unquantized where it feeds a
// residual Add (OpenVINO fuses the two); everything else as in default.
TEST(QuantSim, OpenVinoPresetKeepsConvIntoAddFloat) {
  QuantSim ov(resnet8(), sim_options(8, 8, BatchNormMode::kSimulate, "openvino"), {1, 1, 28, 28});
  QuantSim def(resnet8(), sim_options(8, 8, BatchNormMode::kSimulate, "default"), {1, 1, 28, 28});
  const Graph& g = ov.model().graph();
  int conv_into_add = 0;
  for (const auto& node : g.nodes) {
    if (node.op_type != "Add") continue;
    for (const auto& in : node.inputs) {
      const Node* producer = g.producer(in);
      ASSERT_NE(producer, nullptr);
      if (producer->op_type == "QatConvBn") ++conv_into_add;
      else EXPECT_EQ(producer->op_type, "QatFakeQuant") << node.name << " reads unquantized " << in;
    }
  }
  EXPECT_EQ(conv_into_add, 5);  // 3 blocks' second convs and 2 projections
  EXPECT_EQ(def.quantizers().size(), ov.quantizers().size() + 5);
}

TEST(QuantSim, DisabledQuantizersReproduceTheFloatModel) {
  const Tensor x = torch::randn({4, 1, 28, 28});
  auto reference = resnet8();
  reference->eval();
  const Tensor expected = reference->forward(x);
  for (auto bn : {BatchNormMode::kFold, BatchNormMode::kSimulate}) {
    QuantSim sim(resnet8(), sim_options(8, 8, bn, "default"), {1, 1, 28, 28});
    calibrate(sim, x);
    sim.set_quantization_enabled(false);
    sim.model().eval();
    EXPECT_TRUE(torch::allclose(sim.model().forward(x), expected, 1e-4, 1e-5));
  }
}

// Training mode, quantizers off: QatConvBn (conv with the folded weight,
// the fold undone on its output or its weight, then BN on batch
// statistics) trains as Conv + BatchNormalization do: same logits,
// gradients and running statistics. The stem's asymmetric padding makes it
// take the plain Conv kernel; the other convs take the recomputing conv,
// the 16-channel ones dividing the weight, the 64-channel ones the output
// (batchnorm.cpp's divides_weight at batch 4).
TEST(QuantSim, SimulatedFoldTrainsLikeTheFloatModel) {
  torch::manual_seed(4);
  const Tensor x = torch::randn({4, 1, 28, 28});
  const Tensor loss_weights = torch::randn({4, 10});
  const auto model = [] {
    auto m = resnet8();
    m->mutable_graph().nodes[0].attributes["pads"] = std::vector<int64_t>{0, 0, 2, 2};
    return m;
  };
  auto reference = model();
  QuantSim sim(model(), sim_options(8, 8, BatchNormMode::kSimulate, "default"), {1, 1, 28, 28});
  calibrate(sim, x);
  sim.set_quantization_enabled(false);
  const Node& stem = reference->graph().nodes[0];
  ASSERT_EQ(stem.op_type, "Conv");
  const Graph& g = sim.model().graph();
  ASSERT_EQ(g.nodes[g.node_index(stem.name)].op_type, "QatConvBn");
  std::vector<Tensor> logits;
  for (GraphModule* m : {reference.get(), &sim.model()}) {
    m->train();
    logits.push_back(m->forward(x));
    (logits.back() * loss_weights).sum().backward();
  }
  EXPECT_TRUE(torch::allclose(logits[1], logits[0], 1e-4, 1e-5));
  size_t compared = 0;
  for (const auto& name : reference->initializer_names()) {
    const Tensor want = reference->initializer(name);
    const Tensor got = sim.model().initializer(name);
    EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-6)) << name;  // running statistics moved alike
    if (!want.grad().defined()) continue;
    ASSERT_TRUE(got.grad().defined()) << name;
    EXPECT_TRUE(torch::allclose(got.grad(), want.grad(), 1e-3, 1e-5))
        << name << " differs by " << (got.grad() - want.grad()).abs().max().item<double>();
    ++compared;
  }
  EXPECT_GT(compared, 20u);
}

TEST(QuantSim, SimulatedFoldEqualsStaticFoldInEval) {
  torch::manual_seed(3);
  const Tensor x = torch::randn({8, 1, 28, 28});
  QuantSim folded(resnet8(), sim_options(4, 8, BatchNormMode::kFold, "default"), {1, 1, 28, 28});
  QuantSim simulated(resnet8(), sim_options(4, 8, BatchNormMode::kSimulate, "default"), {1, 1, 28, 28});
  calibrate(folded, x);
  calibrate(simulated, x);
  folded.model().eval();
  simulated.model().eval();
  const Tensor a = folded.model().forward(x), b = simulated.model().forward(x);
  // Same quantized weights; only float rounding of the fold differs.
  EXPECT_LT((a - b).abs().max().item<float>(), 1e-3 * a.abs().max().item<float>());
  EXPECT_TRUE(torch::equal(a.argmax(1), b.argmax(1)));
}

TEST(QuantSim, QuantizedForwardMatchesHandWrittenReference) {
  GraphBuilder b(7);
  auto x = b.input("input", {-1, 2, 6, 6});
  b.output(b.relu(b.conv(x, "conv", 3, 3, 1, 1, true)));
  auto m = b.build();
  const Tensor w = m->initializer("conv.weight").detach().clone();
  const Tensor bias = m->initializer("conv.bias").detach().clone();
  QuantSim sim(m, sim_options(8, 8, BatchNormMode::kFold, "default"), {1, 2, 6, 6});
  const Tensor input = torch::randn({2, 2, 6, 6});
  calibrate(sim, input);
  sim.model().eval();
  const Tensor got = sim.model().forward(input);

  // Reference with ATen ops: asymmetric uint8 input, per-channel symmetric
  // int8 weight (absmax / 127), asymmetric uint8 output after ReLU.
  auto fq = [](const Tensor& t, const Encoding& e) { return fake_quantize(t, e); };
  QuantSpec act;
  act.grid = {8, false, false};
  const Encoding in_enc = encoding_from_range(input.min().item<double>(), input.max().item<double>(), act);
  QuantSpec wspec;
  wspec.grid = {8, true, false};
  wspec.symmetric = true;
  wspec.channel_axis = 0;
  const Tensor absmax = w.abs().amax({1, 2, 3});
  const Encoding w_enc = encoding_from_range(-absmax, absmax, wspec);
  const Tensor wq = at::fake_quantize_per_channel_affine(w, w_enc.scale, w_enc.zero_point.to(torch::kInt), 0, -128, 127);
  const Tensor y = torch::relu(torch::conv2d(fq(input, in_enc), wq, bias, 1, 1));
  // Calibration observes the float model (quantizers pass data through),
  // as AIMET's compute_encodings does.
  const Tensor y_float = torch::relu(torch::conv2d(input, w, bias, 1, 1));
  const Encoding out_enc = encoding_from_range(y_float.min().item<double>(), y_float.max().item<double>(), act);
  EXPECT_TRUE(torch::allclose(got, fq(y, out_enc), 1e-5, 1e-6)) << (got - fq(y, out_enc)).abs().max();
}

TEST(QuantSim, SqnrDropsWithBitwidth) {
  const Tensor x = torch::randn({8, 1, 28, 28});
  double mean_db[2];
  int i = 0;
  for (int bits : {8, 4}) {
    QuantSim sim(resnet8(), sim_options(bits, bits, BatchNormMode::kSimulate, "default"), {1, 1, 28, 28});
    calibrate(sim, x);
    const auto report = sim.sqnr_report(x);
    ASSERT_FALSE(report.empty());
    double sum = 0;
    for (const auto& layer : report) sum += layer.sqnr_db;
    mean_db[i++] = sum / static_cast<double>(report.size());
  }
  EXPECT_GT(mean_db[0], 20.0);
  EXPECT_GT(mean_db[0], mean_db[1] + 10.0) << "8 bit should beat 4 bit by ~6 dB per bit";
}

TEST(QuantSim, RangeLearningTrainsTheRightEncodings) {
  const Tensor x = torch::randn({4, 1, 28, 28});
  QuantSim sim(resnet8(), sim_options(8, 8, BatchNormMode::kSimulate, "default"), {1, 1, 28, 28});
  calibrate(sim, x);
  sim.set_range_learning(true, false);
  const size_t weights_only = sim.encoding_parameters().size();
  sim.set_range_learning(true, true);
  const auto all = sim.encoding_parameters();
  EXPECT_GT(all.size(), weights_only);
  sim.model().train();
  sim.model().forward(x).pow(2).mean().backward();
  for (const auto& p : all) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>());
  }
  EXPECT_GT(all[0].grad().abs().sum().item<float>(), 0.0f);
}

TEST(QuantSim, FrozenBatchNormKeepsRunningStatistics) {
  const Tensor x = torch::randn({4, 1, 28, 28});
  QuantSim sim(resnet8(), sim_options(8, 8, BatchNormMode::kSimulate, "default"), {1, 1, 28, 28});
  calibrate(sim, x);
  const Tensor before = sim.model().initializer("stem.bn.running_mean").clone();
  sim.model().train();
  sim.freeze_batchnorm_stats(true);
  sim.model().forward(x);
  EXPECT_TRUE(torch::equal(before, sim.model().initializer("stem.bn.running_mean")));
  sim.freeze_batchnorm_stats(false);
  sim.model().forward(x);
  EXPECT_FALSE(torch::equal(before, sim.model().initializer("stem.bn.running_mean")));
}

TEST(QuantSim, CheckpointRestoresEncodings) {
  const Tensor x = torch::randn({4, 1, 28, 28});
  QuantSim sim(resnet8(), sim_options(4, 4, BatchNormMode::kSimulate, "default"), {1, 1, 28, 28});
  calibrate(sim, x);
  sim.set_range_learning(true, true);
  torch::optim::SGD sgd(sim.model().parameters(), 0.01);
  const std::string path = ::testing::TempDir() + "/quantsim_checkpoint.pt";
  save_checkpoint(path, sim.model(), sgd, TrainState{});
  QuantSim restored(resnet8(2), sim_options(4, 4, BatchNormMode::kSimulate, "default"), {1, 1, 28, 28});
  restored.set_range_learning(true, true);
  torch::optim::SGD sgd2(restored.model().parameters(), 0.01);
  load_checkpoint(path, restored.model(), sgd2);
  sim.model().eval();
  restored.model().eval();
  EXPECT_TRUE(torch::equal(sim.model().forward(x), restored.model().forward(x)));
}

// QAT with range learning, BN freezing from epoch 1, and a resume after
// epoch 1 must give the uninterrupted run's weights and encodings exactly.
TEST(QuantSim, QatResumeReproducesUninterruptedRunBitForBit) {
  data::Dataset d = data::load_fashion_mnist(data::Split::kTrain);
  d.images = d.images.slice(0, 0, 384);
  d.labels = d.labels.slice(0, 0, 384);
  data::LoaderOptions lo;
  lo.batch_size = 64;
  lo.shuffle = true;
  lo.augmentation.crop_padding = 2;
  lo.normalization = {{data::kFashionMnistMean}, {data::kFashionMnistStd}};
  const data::DataLoader loader(d, lo);
  const std::string root = ::testing::TempDir() + "/qat_resume";
  std::filesystem::remove_all(root);

  auto run = [&](const std::string& dir, int64_t epochs) {
    QuantSim sim(resnet8(), sim_options(4, 4, BatchNormMode::kSimulate, "default"), {1, 1, 28, 28});
    calibrate(sim, loader.batch(0, 0).images);
    sim.set_range_learning(true, true);
    TrainOptions o;
    o.epochs = epochs;
    o.lr = 1e-2;
    o.encoding_lr = 1e-3;
    o.schedule = "step";
    o.progress = false;
    o.out_dir = root + "/" + dir;
    o.resume = true;
    o.encoding_parameters = sim.encoding_parameters();
    o.checkpoint_tag = sim.describe();
    o.on_epoch_start = [&](int64_t epoch) { sim.freeze_batchnorm_stats(epoch >= 1); };
    train(sim.model(), loader, loader, o);
    return sim.model().named_parameters();
  };
  const auto straight = run("straight", 2);
  run("interrupted", 1);
  torch::manual_seed(99);
  const auto resumed = run("interrupted", 2);
  ASSERT_EQ(straight.size(), resumed.size());
  for (const auto& p : straight) {
    EXPECT_TRUE(torch::equal(p.value(), resumed[p.key()])) << p.key();
  }
}

TEST(QuantSim, ConcatInputsShareOneQuantizer) {
  register_op("TestConcatChannels", [](const OpContext&, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{torch::cat({in[0], in[1]}, 1)};
  });
  GraphBuilder b(3);
  auto x = b.input("input", {-1, 2, 6, 6});
  auto left = b.relu(b.conv(x, "left", 3, 3));
  auto right = b.relu(b.conv(x, "right", 3, 3));
  auto m = b.build();
  Node concat;
  concat.name = "concat";
  concat.op_type = "Concat";
  concat.inputs = {left, right};
  concat.outputs = {"joined"};
  concat.attributes["axis"] = int64_t{1};
  m->mutable_graph().nodes.push_back(concat);
  m->mutable_graph().outputs = {"joined"};
  QuantSim sim(m, sim_options(8, 8, BatchNormMode::kFold, "default"), {1, 2, 6, 6});
  std::string left_q, right_q;
  for (const auto& q : sim.quantizers()) {
    if (q.tensor == left) left_q = q.name;
    if (q.tensor == right) right_q = q.name;
  }
  ASSERT_FALSE(left_q.empty());
  EXPECT_EQ(left_q, right_q);
  calibrate(sim, torch::randn({2, 2, 6, 6}));
  EXPECT_TRUE(sim.quantizer(left_q).has_encoding());
}

}  // namespace
}  // namespace qat

namespace qat {
namespace {

// A learning step can push a scale through zero; the quantizer must keep
// working with |scale| rather than fail or produce NaN mid-training.
TEST(Quantizer, ScalePushedNegativeByTrainingStaysUsable) {
  QuantSpec spec;
  spec.grid = {8, true, false};
  spec.symmetric = true;
  Quantizer q(spec, "minmax");
  q.set_encoding(Encoding{spec, torch::tensor({0.01f}), torch::tensor({0.0f})});
  q.set_trainable(true);
  const Tensor x = torch::randn({64});
  const Tensor expected = q.forward(x).detach();
  {
    torch::NoGradGuard no_grad;
    q.encoding_parameters()[0].neg_();
  }
  EXPECT_TRUE(torch::equal(q.forward(x).detach(), expected));
  EXPECT_GT(q.encoding().scale.item<float>(), 0.0f);
  q.encoding_parameters()[0].detach().zero_();
  EXPECT_TRUE(torch::isfinite(q.forward(x)).all().item<bool>());
}

}  // namespace
}  // namespace qat
