// AIMET encodings files (1.0.0 and the legacy 0.6.1) for a QuantSim.
#include "qat/encodings.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <type_traits>

namespace qat {
namespace {

using nlohmann::json;

// One tensor's entry, whichever version it came from.
struct FileEncoding {
  std::string name;
  bool is_param = false;
  int bitwidth = 8;
  bool symmetric = false;
  std::optional<bool> per_channel;  // 1.0.0 says; 0.6.1 does not
  std::vector<double> scale;
  std::vector<int64_t> offset;
  std::string context;  // "<file>: tensor 'x'" for errors
};

[[noreturn]] void fail(const std::string& context, const std::string& what) {
  throw std::runtime_error(context + ": " + what);
}

// nlohmann converts any number to any arithmetic type with a plain cast,
// undefined behaviour for 8e79 -> int: integers are range-checked first.
template <typename I>
bool integer_fits(const json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<I>::max());
  return value.is_number_integer() && value.get<int64_t>() >= std::numeric_limits<I>::min() &&
         value.get<int64_t>() <= std::numeric_limits<I>::max();
}

template <typename T>
T get(const json& object, const std::string& key, const std::string& context) {
  if (!object.is_object() || !object.contains(key)) fail(context, "missing key '" + key + "'");
  const json& value = object.at(key);
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (!integer_fits<T>(value)) {
      fail(context, "key '" + key + "' must be an integer between " + std::to_string(std::numeric_limits<T>::min()) +
                        " and " + std::to_string(std::numeric_limits<T>::max()) + ", got " + value.dump());
    }
  }
  if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    if (!value.is_array() || !std::all_of(value.begin(), value.end(), integer_fits<int64_t>)) {
      fail(context, "key '" + key + "' must be a list of 64-bit integers, got " + value.dump());
    }
  }
  try {
    return value.get<T>();
  } catch (const json::exception&) {
    fail(context, "key '" + key + "' has the wrong type: " + value.dump());
  }
}

// 0.6.1 writes booleans as the strings "True" / "False".
bool get_bool(const json& object, const std::string& key, const std::string& context) {
  if (object.contains(key) && object.at(key).is_string()) {
    const std::string text = object.at(key).get<std::string>();
    if (text == "True" || text == "False") return text == "True";
    fail(context, "key '" + key + "' is '" + text + "', not True or False");
  }
  return get<bool>(object, key, context);
}

std::string version_name(EncodingsVersion version) { return version == EncodingsVersion::k1_0_0 ? "1.0.0" : "0.6.1"; }

// ---- writing ----

struct Columns {
  std::vector<double> scale, min, max;
  std::vector<int64_t> offset;
};

Columns columns_of(const Encoding& e) {
  Columns c;
  const torch::Tensor scale = e.scale.reshape({-1}).to(torch::kDouble);
  const torch::Tensor zero_point = e.zero_point.reshape({-1}).to(torch::kDouble);
  const torch::Tensor lo = e.min().reshape({-1}).to(torch::kDouble), hi = e.max().reshape({-1}).to(torch::kDouble);
  for (int64_t i = 0; i < scale.numel(); ++i) {
    c.scale.push_back(scale[i].item<double>());
    c.offset.push_back(aimet_offset(e.spec.grid, static_cast<int64_t>(zero_point[i].item<double>())));
    c.min.push_back(lo[i].item<double>());
    c.max.push_back(hi[i].item<double>());
  }
  return c;
}

json entry_1_0_0(const std::string& tensor, const Encoding& e) {
  const Columns c = columns_of(e);
  return {{"name", tensor},
          {"dtype", "INT"},
          {"enc_type", e.spec.channel_axis ? "PER_CHANNEL" : "PER_TENSOR"},
          {"bw", e.spec.grid.bitwidth},
          {"is_sym", e.spec.symmetric},
          {"scale", c.scale},
          {"offset", c.offset}};
}

json entry_0_6_1(const Encoding& e) {
  const Columns c = columns_of(e);
  json list = json::array();
  for (size_t i = 0; i < c.scale.size(); ++i) {
    list.push_back({{"bitwidth", e.spec.grid.bitwidth},
                    {"dtype", "int"},
                    {"is_symmetric", e.spec.symmetric ? "True" : "False"},
                    {"max", c.max[i]},
                    {"min", c.min[i]},
                    {"offset", c.offset[i]},
                    {"scale", c.scale[i]}});
  }
  return list;
}

// The bitwidth most quantizers of a kind use, for quantizer_args.
int common_bitwidth(QuantSim& sim, bool params) {
  std::map<int, int> counts;
  for (const auto& info : sim.quantizers()) {
    if (info.is_param == params) ++counts[sim.quantizer(info.name).spec().grid.bitwidth];
  }
  int best = 8;
  for (const auto& [bits, n] : counts) {
    if (n > counts[best]) best = bits;
  }
  return best;
}

// ---- reading ----

FileEncoding read_1_0_0(const json& entry, bool is_param, const std::string& source) {
  FileEncoding f;
  f.is_param = is_param;
  f.name = get<std::string>(entry, "name", source + ": an entry of " + (is_param ? "param" : "activation") +
                                               "_encodings");
  f.context = source + ": tensor '" + f.name + "'";
  if (get<std::string>(entry, "dtype", f.context) != "INT") fail(f.context, "only dtype INT is supported");
  const std::string type = get<std::string>(entry, "enc_type", f.context);
  if (type != "PER_TENSOR" && type != "PER_CHANNEL") fail(f.context, "enc_type '" + type + "' is not supported");
  f.per_channel = type == "PER_CHANNEL";
  f.bitwidth = get<int>(entry, "bw", f.context);
  f.symmetric = get_bool(entry, "is_sym", f.context);
  f.scale = get<std::vector<double>>(entry, "scale", f.context);
  f.offset = get<std::vector<int64_t>>(entry, "offset", f.context);
  return f;
}

FileEncoding read_0_6_1(const std::string& name, const json& channels, bool is_param, const std::string& source) {
  FileEncoding f;
  f.name = name;
  f.is_param = is_param;
  f.context = source + ": tensor '" + name + "'";
  if (!channels.is_array() || channels.empty()) fail(f.context, "expected a list of encodings, one per channel");
  for (const json& c : channels) {
    if (c.is_object() && c.contains("dtype") && get<std::string>(c, "dtype", f.context) != "int") {
      fail(f.context, "only dtype int is supported");
    }
    f.bitwidth = get<int>(c, "bitwidth", f.context);
    f.symmetric = get_bool(c, "is_symmetric", f.context);
    f.scale.push_back(get<double>(c, "scale", f.context));
    f.offset.push_back(get<int64_t>(c, "offset", f.context));
  }
  return f;
}

std::vector<FileEncoding> read_entries(const json& file, const std::string& source) {
  if (!file.is_object()) fail(source, "not a JSON object");
  const std::string version = get<std::string>(file, "version", source);
  std::vector<FileEncoding> entries;
  for (const auto& [key, is_param] : {std::pair<std::string, bool>{"activation_encodings", false},
                                      {"param_encodings", true}}) {
    if (!file.contains(key)) continue;
    const json& section = file.at(key);
    if (version == "1.0.0") {
      if (!section.is_array()) fail(source, "'" + key + "' must be a list in version 1.0.0");
      for (const json& entry : section) entries.push_back(read_1_0_0(entry, is_param, source));
    } else if (version == "0.6.1") {
      if (!section.is_object()) fail(source, "'" + key + "' must be an object in version 0.6.1");
      for (const auto& [name, channels] : section.items()) entries.push_back(read_0_6_1(name, channels, is_param, source));
    } else {
      fail(source, "encodings version '" + version + "' is not supported (1.0.0, 0.6.1)");
    }
  }
  return entries;
}

int64_t quantizer_channels(Quantizer& q) { return q.named_parameters(false)["scale"].numel(); }

// The grid a file entry describes, given the sim quantizer it replaces.
// AIMET's offsets say nothing about signedness for asymmetric grids (the
// represented values are the same either way), so those keep the sim's;
// symmetric ones are signed (offset -2^(b-1), or -2^(b-1)+1 for a narrow
// grid) or unsigned (offset 0).
QuantSpec spec_for(const FileEncoding& f, const QuantSpec& current) {
  QuantSpec spec = current;
  spec.symmetric = f.symmetric;
  spec.grid.bitwidth = f.bitwidth;
  try {
    spec.grid.validate();
  } catch (const std::invalid_argument& e) {
    fail(f.context, e.what());
  }
  if (!f.symmetric) return spec;
  const int64_t half = int64_t{1} << (f.bitwidth - 1);
  const int64_t offset = f.offset.front();
  if (offset == 0) spec.grid = {f.bitwidth, false, false};
  else if (offset == -half) spec.grid = {f.bitwidth, true, false};
  else if (offset == -half + 1) spec.grid = {f.bitwidth, true, true};
  else fail(f.context, "symmetric offset " + std::to_string(offset) + " is neither 0 nor -2^(bw-1) (+1 for narrow)");
  return spec;
}

Encoding encoding_for(const FileEncoding& f, Quantizer& q) {
  const int64_t channels = q.spec().channel_axis ? quantizer_channels(q) : 1;
  if (f.per_channel && *f.per_channel != q.spec().channel_axis.has_value()) {
    fail(f.context, std::string("the file's encoding is ") + (*f.per_channel ? "per-channel" : "per-tensor") +
                        ", the sim quantizes it " + (q.spec().channel_axis ? "per-channel" : "per-tensor"));
  }
  if (static_cast<int64_t>(f.scale.size()) != channels || f.offset.size() != f.scale.size()) {
    fail(f.context, std::to_string(f.scale.size()) + " scale(s) and " + std::to_string(f.offset.size()) +
                        " offset(s) in the file, the sim's quantizer has " + std::to_string(channels) + " channel(s)");
  }
  Encoding e;
  e.spec = spec_for(f, q.spec());
  std::vector<float> scale, zero_point;
  for (size_t i = 0; i < f.scale.size(); ++i) {
    if (!(f.scale[i] > 0.0) || !std::isfinite(f.scale[i])) fail(f.context, "scale must be positive and finite");
    const int64_t z = e.spec.grid.qmin() - f.offset[i];
    if (z < e.spec.grid.qmin() || z > e.spec.grid.qmax() || (f.symmetric && f.offset[i] != f.offset.front())) {
      fail(f.context, "offset " + std::to_string(f.offset[i]) + " is off the " + std::to_string(f.bitwidth) +
                          "-bit grid");
    }
    scale.push_back(static_cast<float>(f.scale[i]));
    zero_point.push_back(static_cast<float>(z));
  }
  e.scale = torch::tensor(scale);
  e.zero_point = torch::tensor(zero_point);
  return e;
}

}  // namespace

EncodingsVersion parse_encodings_version(const std::string& text) {
  if (text == "1.0.0") return EncodingsVersion::k1_0_0;
  if (text == "0.6.1") return EncodingsVersion::k0_6_1;
  throw std::invalid_argument("unknown encodings version '" + text + "' (1.0.0, 0.6.1)");
}

json encodings_to_json(QuantSim& sim, EncodingsVersion version) {
  const bool current = version == EncodingsVersion::k1_0_0;
  json activations = current ? json::array() : json::object();
  json params = current ? json::array() : json::object();
  bool per_channel = false;
  for (const auto& info : sim.quantizers()) {
    const Encoding e = applied_encoding(sim, info.name);
    per_channel = per_channel || (info.is_param && e.spec.channel_axis);
    json& section = info.is_param ? params : activations;
    if (current) section.push_back(entry_1_0_0(info.tensor, e));
    else section[info.tensor] = entry_0_6_1(e);
  }
  return {{"version", version_name(version)},
          {"activation_encodings", activations},
          {"param_encodings", params},
          {"excluded_layers", json::array()},
          {"quantizer_args",
           {{"activation_bitwidth", common_bitwidth(sim, false)},
            {"param_bitwidth", common_bitwidth(sim, true)},
            {"dtype", "int"},
            {"per_channel_quantization", per_channel}}}};
}

void save_encodings(QuantSim& sim, const std::string& path, EncodingsVersion version) {
  std::ofstream out(path, std::ios::trunc);
  out << encodings_to_json(sim, version).dump(2) << "\n";
  if (!out) throw std::runtime_error(path + ": cannot write encodings");
}

void load_encodings(QuantSim& sim, const json& file, const std::string& source) {
  std::map<std::string, const QuantizerInfo*> by_tensor;
  for (const auto& info : sim.quantizers()) by_tensor[info.tensor] = &info;
  std::map<std::string, std::pair<Encoding, std::string>> chosen;  // quantizer -> encoding, tensor
  std::set<std::string> covered;
  for (const FileEncoding& f : read_entries(file, source)) {
    const auto it = by_tensor.find(f.name);
    if (it == by_tensor.end() || it->second->is_param != f.is_param) {
      fail(f.context, std::string("this sim has no ") + (f.is_param ? "param" : "activation") +
                          " quantizer for it (an encodings file for another model?)");
    }
    const QuantizerInfo& info = *it->second;
    Encoding e = encoding_for(f, sim.quantizer(info.name));
    const auto previous = chosen.find(info.name);
    if (previous != chosen.end() && !(torch::equal(previous->second.first.scale, e.scale) &&
                                      torch::equal(previous->second.first.zero_point, e.zero_point))) {
      fail(f.context, "shares quantizer '" + info.name + "' with tensor '" + previous->second.second +
                          "', but the file gives them different encodings");
    }
    chosen[info.name] = {e, f.name};
    covered.insert(f.name);
  }
  for (const auto& info : sim.quantizers()) {
    if (!covered.count(info.tensor)) fail(source + ": tensor '" + info.tensor + "'", "the file has no encoding for it");
  }
  for (const auto& [name, entry] : chosen) sim.quantizer(name).set_encoding(entry.first);
}

void load_encodings(QuantSim& sim, const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open encodings file");
  json file;
  try {
    file = json::parse(in);
  } catch (const json::parse_error& e) {
    throw std::runtime_error(path + ": not valid JSON: " + e.what());
  }
  load_encodings(sim, file, path);
}

}  // namespace qat
