// `qat analyze` (per-layer sensitivity table and ranking, and with
// --mp-budget the mixed-precision choice) and the layer choice of
// `qat qat --top-k`.
#include "cli/pipeline.h"
#include "qat/mixed_precision.h"
#include "qat/sensitivity.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace qat::cli {
namespace {

// Batches that follow the calibration batches: the ranking is measured on
// data the encodings were not fitted to, and never on the test split,
// since it chooses what to train.
std::vector<data::Batch> analysis_batches(const data::DataLoader& loader, const SimArgs& args, int64_t count) {
  if (count < 1) throw std::invalid_argument("--analysis-batches " + std::to_string(count) + ": must be >= 1");
  const int64_t first = std::min(args.calibration_batches, loader.num_batches() - count);
  if (first < 0) throw std::invalid_argument("--analysis-batches " + std::to_string(count) + ": data has fewer batches");
  std::vector<data::Batch> batches;
  for (int64_t i = first; i < first + count; ++i) batches.push_back(loader.batch(0, i));
  return batches;
}

std::string cell(const std::optional<QuantEffect>& effect) {
  if (!effect) return "       -        -";
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%6.1f dB %+6.2f", effect->sqnr_db, 100.0 * effect->accuracy_drop);
  return buffer;
}

void print_report(const SensitivityReport& report, const std::vector<LayerSensitivity>& ranking) {
  std::printf("FP32 %.2f%%, all quantized %.2f%% on the analysis batches\n", 100.0 * report.fp32_accuracy,
              100.0 * report.quantized_accuracy);
  std::printf("one layer quantized at a time: output SQNR and accuracy drop (pp)\n");
  std::printf("%-36s %17s %17s\n", "layer", "weights", "activations");
  for (const auto& row : report.layers) {
    std::printf("%-36s %s %s\n", row.layer.c_str(), cell(row.weights).c_str(), cell(row.activations).c_str());
  }
  std::printf("\nranking (most sensitive first):\n");
  for (size_t i = 0; i < ranking.size(); ++i) {
    std::printf("%3zu. %-36s drop %+6.2f pp  SQNR %6.1f dB\n", i + 1, ranking[i].layer.c_str(),
                100.0 * ranking[i].accuracy_drop(), ranking[i].sqnr_db());
  }
}

nlohmann::json effect_json(const std::optional<QuantEffect>& effect) {
  if (!effect) return nullptr;
  return {{"sqnr_db", effect->sqnr_db}, {"accuracy_drop", effect->accuracy_drop}};
}

void write_json(const std::string& path, const SensitivityReport& report,
                const std::vector<LayerSensitivity>& ranking) {
  nlohmann::json layers = nlohmann::json::array(), order = nlohmann::json::array();
  for (const auto& row : report.layers) {
    layers.push_back({{"layer", row.layer}, {"weights", effect_json(row.weights)},
                      {"activations", effect_json(row.activations)}});
  }
  for (const auto& row : ranking) order.push_back(row.layer);
  const nlohmann::json doc{{"fp32_accuracy", report.fp32_accuracy},
                           {"quantized_accuracy", report.quantized_accuracy},
                           {"layers", layers},
                           {"ranking", order}};
  std::ofstream out(path);
  if (!(out << doc.dump(2) << "\n")) throw std::runtime_error("--json: cannot write '" + path + "'");
}

MixedPrecisionOptions mixed_precision_options(const AnalyzeArgs& args) {
  MixedPrecisionOptions options;
  options.candidates = args.mp_candidates;
  options.mean_weight_bits = args.mp_budget;
  return options;
}

// Chooses the weight bits for the budget, prints the choice and its test
// accuracy, and writes it for --layer-bits.
void mixed_precision(QuantSim& sim, const std::vector<data::Batch>& batches, const DataArgs& data_args,
                     const SimArgs& sim_args, const AnalyzeArgs& args) {
  const MixedPrecisionOptions options = mixed_precision_options(args);
  const MixedPrecisionResult result = choose_weight_bits(sim, batches, options);
  std::printf("\nmixed precision for %.2f mean weight bits (one layer's weights quantized: SQNR per candidate):\n",
              args.mp_budget);
  for (const auto& layer : result.layers) {
    std::printf("%-36s %8ld params ", layer.layer.c_str(), static_cast<long>(layer.params));
    for (const auto& [bits, noise] : layer.noise) std::printf(" W%d %5.1f dB", bits, -10.0 * std::log10(noise));
    std::printf("  -> W%d\n", result.bits.at(layer.layer));
  }
  const data::DataLoader test_loader = make_loader(data_args, data::Split::kTest, false);
  const double accuracy = evaluate(sim.model(), test_loader, "mixed precision").accuracy;
  std::printf("mean weight bits %.2f, A%d: test accuracy %.2f%%\n", result.mean_bits, sim_args.activation_bits,
              100.0 * accuracy);
  if (!args.mp_out.empty()) write_layer_bits(args.mp_out, result.bits);
}

}  // namespace

std::vector<std::string> most_sensitive_layers(QuantSim& sim, const SimArgs& args,
                                               const data::DataLoader& calibration, int64_t batches, int64_t k) {
  const SensitivityReport report = analyze_sensitivity(sim, analysis_batches(calibration, args, batches));
  return top_weighted_layers(rank_by_sensitivity(report.layers), k);
}

int run_analyze_command(const ModelArgs& model_args, const DataArgs& data_args, const SimArgs& sim_args,
                        const AnalyzeArgs& args) {
  if (args.mp_budget != 0.0) check_mixed_precision_options(mixed_precision_options(args));  // before the work
  const data::DataLoader calibration = make_loader(data_args, data::Split::kTrain, false);
  auto sim = make_calibrated_sim(load_model(model_args, calibration.dataset(), data_args.seed), sim_args, calibration);
  const auto batches = analysis_batches(calibration, sim_args, args.batches);
  const SensitivityReport report = analyze_sensitivity(*sim, batches);
  const auto ranking = rank_by_sensitivity(report.layers);
  print_report(report, ranking);
  if (!args.json.empty()) write_json(args.json, report, ranking);
  if (args.mp_budget != 0.0) mixed_precision(*sim, batches, data_args, sim_args, args);
  return 0;
}

}  // namespace qat::cli
