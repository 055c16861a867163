// Shared by the libFuzzer targets: what counts as a finding.
//
// Bad input must end in one of qat's documented errors (std::runtime_error
// or std::invalid_argument/out_of_range, whose message names the file, key
// or node). A crash, a sanitizer report, or any other exception escaping
// (a raw c10::Error or nlohmann::json exception, whose message names
// nothing the user wrote) aborts, so libFuzzer saves the input.
#pragma once

#include "qat/builder.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <typeinfo>

namespace qat::fuzz {

template <typename F>
void expect_clean_error(F&& body) {
  try {
    body();
  } catch (const std::runtime_error&) {
  } catch (const std::logic_error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: undocumented exception %s escaped: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
}

// Conv+BN+ReLU, pooling and a linear head: every kind of quantizer and
// checkpoint tensor the zoo models have, small enough for thousands of
// executions a second.
inline std::shared_ptr<GraphModule> tiny_model() {
  GraphBuilder b;
  auto x = b.input("image", {-1, 1, 8, 8});
  x = b.relu(b.batch_norm(b.conv(x, "conv", 4, 3), "bn"));
  b.output(b.linear(b.flatten(b.global_avg_pool(x)), "fc", 3));
  return b.build();
}

}  // namespace qat::fuzz
