// libFuzzer target: bytes -> encodings JSON loader, into one sim of the
// small model (a file that loads replaces its encodings, as in real use).
#include "fuzz_common.h"
#include "qat/encodings.h"
#include "qat/quantsim.h"

#include <nlohmann/json.hpp>

namespace {

qat::QuantSim& sim() {
  static qat::QuantSim sim(qat::fuzz::tiny_model(), qat::QuantSimOptions{}, {1, 1, 8, 8});
  return sim;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto json = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;  // JSON syntax is nlohmann's job, tested upstream
  qat::fuzz::expect_clean_error([&] { qat::load_encodings(sim(), json, "fuzz.json"); });
  return 0;
}
