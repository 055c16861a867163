#include "qat/threads.h"

#include <ATen/Parallel.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

namespace qat {

int configure_threads(std::optional<int> requested) {
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  if (requested) {
    threads = *requested;
  } else if (const char* env = std::getenv("QAT_NUM_THREADS")) {
    try {
      threads = std::stoi(env);
    } catch (const std::exception&) {
      throw std::invalid_argument(std::string("QAT_NUM_THREADS is not a number: '") + env + "'");
    }
  }
  if (threads < 1) throw std::invalid_argument("thread count must be at least 1, got " + std::to_string(threads));
  at::set_num_threads(threads);
  return at::get_num_threads();
}

}  // namespace qat
