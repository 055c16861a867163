// Per-layer weight bitwidths as a file: what `qat analyze --mp-budget`
// chooses and every sim command reads back with --layer-bits, so that a
// mixed-precision choice carries into ptq, qat and export (encodings.json
// records each weight's bitwidth).
#include "cli/pipeline.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <stdexcept>

namespace qat::cli {

std::map<std::string, int> read_layer_bits(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("--layer-bits " + path + ": cannot open");
  nlohmann::json doc;
  try {
    in >> doc;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument("--layer-bits " + path + ": not JSON (" + e.what() + ")");
  }
  if (!doc.is_object()) throw std::invalid_argument("--layer-bits " + path + ": expected {\"layer\": bits, ...}");
  std::map<std::string, int> bits;
  for (const auto& [layer, value] : doc.items()) {
    if (!value.is_number_integer() || value.get<int>() < 2 || value.get<int>() > 16) {
      throw std::invalid_argument("--layer-bits " + path + ": layer '" + layer + "' has bitwidth " + value.dump() +
                                  " (an integer 2-16 is needed)");
    }
    bits[layer] = value.get<int>();
  }
  return bits;
}

void write_layer_bits(const std::string& path, const std::map<std::string, int>& bits) {
  std::ofstream out(path);
  if (!(out << nlohmann::json(bits).dump(2) << "\n")) throw std::runtime_error("--mp-out: cannot write '" + path + "'");
}

void check_layer_bits(const QuantSim& sim, const SimArgs& args) {
  if (args.layer_bits_file.empty()) return;
  for (const auto& [layer, bits] : read_layer_bits(args.layer_bits_file)) {
    bool weighted = false;
    for (const auto& info : sim.quantizers()) weighted = weighted || (info.is_param && info.layer == layer);
    if (!weighted) {
      throw std::invalid_argument("--layer-bits " + args.layer_bits_file + ": no weighted layer named '" + layer + "'");
    }
  }
}

}  // namespace qat::cli
