// Encodings files: a sim's quantizer encodings in AIMET's JSON format,
// keyed by the quantized tensors' names (the ONNX names, which the QDQ
// export keeps), and the loader that puts such a file back into a sim.
// docs/export.md has the format and the offset convention.
#pragma once

#include "qat/quantsim.h"

#include <nlohmann/json_fwd.hpp>

#include <string>

namespace qat {

enum class EncodingsVersion {
  k1_0_0,  // AIMET's current format: lists of entries with scale/offset lists
  k0_6_1,  // the legacy one: dicts keyed by tensor name
};

// "1.0.0" or "0.6.1"; anything else throws std::invalid_argument.
EncodingsVersion parse_encodings_version(const std::string& text);

// The encoding a quantizer applies in eval mode: per-tensor scale and zero
// point as 0-d tensors, the zero point rounded half to even and clamped to
// the grid, as the fake-quant kernels use it (range learning leaves it
// fractional). Throws std::invalid_argument naming the quantizer when it
// has no encoding or is disabled.
Encoding applied_encoding(QuantSim& sim, const std::string& quantizer);

// AIMET's offset for zero point z: the grid is (u + offset) * s with u in
// [0, 2^b - 1], so offset = qmin - z (-128 for signed symmetric 8-bit, 0
// for unsigned symmetric, -z for unsigned asymmetric).
int64_t aimet_offset(const QuantGrid& grid, int64_t zero_point);

// activation_encodings (activation quantizers) and param_encodings
// (weights, biases), one entry per quantized tensor.
nlohmann::json encodings_to_json(QuantSim& sim, EncodingsVersion version = EncodingsVersion::k1_0_0);
void save_encodings(QuantSim& sim, const std::string& path, EncodingsVersion version = EncodingsVersion::k1_0_0);

// Sets every quantizer's encoding (bitwidth, symmetry and grid included)
// from a file of either version. The file must cover exactly the sim's
// quantized tensors; nothing changes unless all entries are valid. Errors
// (std::runtime_error) start with `source` and name the tensor: a name this
// sim does not quantize, a missing one, a channel count or per-channel
// layout that differs, an offset off the grid.
void load_encodings(QuantSim& sim, const nlohmann::json& file, const std::string& source);
void load_encodings(QuantSim& sim, const std::string& path);

}  // namespace qat
