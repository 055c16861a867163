#include "qat/progress.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>

namespace qat {

std::string format_duration(double seconds) {
  const auto total = static_cast<int64_t>(seconds + 0.5);
  char buffer[32];
  if (total >= 3600) {
    std::snprintf(buffer, sizeof buffer, "%ldh%02ldm", static_cast<long>(total / 3600), static_cast<long>(total % 3600 / 60));
  } else if (total >= 60) {
    std::snprintf(buffer, sizeof buffer, "%ldm%02lds", static_cast<long>(total / 60), static_cast<long>(total % 60));
  } else {
    std::snprintf(buffer, sizeof buffer, "%lds", static_cast<long>(total));
  }
  return buffer;
}

namespace {
bool bars_enabled = true;
}  // namespace

void set_progress_bars_enabled(bool enabled) { bars_enabled = enabled; }

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)),
      total_(total),
      enabled_(enabled && bars_enabled),
      interactive_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

void ProgressBar::update(int64_t done, const std::string& status) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (interactive_) {
    if (now - last_draw_ < std::chrono::milliseconds(200)) return;
    last_draw_ = now;
    draw(done, status, false);
  } else if (total_ > 0 && done * 4 >= total_ * next_quarter_ && next_quarter_ < 4) {
    while (done * 4 >= total_ * next_quarter_) ++next_quarter_;
    draw(done, status, true);
  }
}

void ProgressBar::finish(const std::string& status) {
  if (enabled_) draw(total_, status, true);
}

void ProgressBar::draw(int64_t done, const std::string& status, bool final_line) {
  constexpr int kWidth = 24;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double fraction = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
  const int filled = static_cast<int>(fraction * kWidth);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::string timing = format_duration(elapsed);
  if (done < total_ && done > 0) timing += " ETA " + format_duration(elapsed / fraction - elapsed);
  std::cerr << (interactive_ ? "\r\033[K" : "") << label_ << " [" << bar << "] " << done << "/" << total_ << " "
            << timing << (status.empty() ? "" : "  " + status) << (final_line ? "\n" : "") << std::flush;
}

std::string percent(double fraction) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.2f%%", 100.0 * fraction);
  return buffer;
}

std::string fixed(double value, int digits) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", digits, value);
  return buffer;
}

}  // namespace qat
