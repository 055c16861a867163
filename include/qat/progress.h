// A one-line progress bar with ETA for long loops (training epochs,
// calibration). On a terminal it redraws in place; in a log (CI, pipes) it
// prints a line at each quarter so logs stay short.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace qat {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled = true);
  // `done` steps finished; `status` is appended (e.g. "loss 0.31 acc 88.2%").
  void update(int64_t done, const std::string& status = "");
  // Prints the final state and a newline.
  void finish(const std::string& status = "");

 private:
  void draw(int64_t done, const std::string& status, bool final_line);

  std::string label_;
  int64_t total_;
  bool enabled_;
  bool interactive_;
  int next_quarter_ = 1;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// Process-wide switch (the CLI's --no-progress): when off, no bar draws,
// whatever its own `enabled` says.
void set_progress_bars_enabled(bool enabled);

// "1m05s", "42s", "1h02m".
std::string format_duration(double seconds);

// 0.9123 -> "91.23%"; fixed(0.5, 3) -> "0.500": the numbers reports print.
std::string percent(double fraction);
std::string fixed(double value, int digits);

}  // namespace qat
