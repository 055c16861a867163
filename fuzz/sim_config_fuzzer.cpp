// libFuzzer target: bytes -> quantsim config parser -> QuantSim placement.
//
// A config that parses must also be usable: placement reads every level
// (op types, supergroups, constraints), so it runs on a small model too.
#include "fuzz_common.h"
#include "qat/quantsim.h"
#include "qat/sim_config.h"

#include <nlohmann/json.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto json = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;  // JSON syntax is nlohmann's job, tested upstream
  qat::fuzz::expect_clean_error([&] {
    qat::QuantSimOptions options;
    options.config = qat::parse_sim_config(json, "fuzz.json");
    qat::QuantSim sim(qat::fuzz::tiny_model(), options, {1, 1, 8, 8});
  });
  return 0;
}
