// The encoding a quantizer applies, as exporters must write it.
#include "qat/encodings.h"

#include <stdexcept>

namespace qat {

Encoding applied_encoding(QuantSim& sim, const std::string& name) {
  Quantizer& q = sim.quantizer(name);
  if (!q.has_encoding()) {
    throw std::invalid_argument("quantizer '" + name + "' has no encoding: calibrate the sim or load encodings first");
  }
  if (!q.enabled()) throw std::invalid_argument("quantizer '" + name + "' is disabled: its tensor would stay float");
  Encoding e = q.encoding();
  if (!e.spec.channel_axis) {
    e.scale = e.scale.reshape({});
    e.zero_point = e.zero_point.reshape({});
  }
  const auto& grid = e.spec.grid;
  e.zero_point = e.zero_point.round().clamp(static_cast<double>(grid.qmin()), static_cast<double>(grid.qmax()));
  return e;
}

int64_t aimet_offset(const QuantGrid& grid, int64_t zero_point) { return grid.qmin() - zero_point; }

}  // namespace qat
