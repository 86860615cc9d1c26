#include "cli/progress.h"

#include <unistd.h>

namespace gantry::cli {

Progress::Progress(std::string label, bool bytes, FILE *out)
    : label_(std::move(label)), out_(out), bytes_(bytes), tty_(isatty(fileno(out)) != 0) {}

void Progress::update(uint64_t done, uint64_t total) {
  if (total == 0 || finished_)
    return;
  if (bytes_ && total < (uint64_t{64} << 20))
    return;
  const double frac = static_cast<double>(done) / static_cast<double>(total);
  if (tty_) {
    constexpr int kWidth = 40;
    int filled = static_cast<int>(frac * kWidth);
    if (filled == last_width_ && done != total)
      return;
    last_width_ = filled;
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    if (bytes_) {
      std::fprintf(out_, "\r%s [%s] %3d%% (%.1f/%.1f MiB)", label_.c_str(), bar.c_str(),
                   static_cast<int>(frac * 100), done / 1048576.0, total / 1048576.0);
    } else {
      std::fprintf(out_, "\r%s [%s] %3d%% (%llu/%llu)", label_.c_str(), bar.c_str(),
                   static_cast<int>(frac * 100), static_cast<unsigned long long>(done),
                   static_cast<unsigned long long>(total));
    }
    std::fflush(out_);
  } else {
    int decile = static_cast<int>(frac * 10);
    if (decile == last_decile_)
      return;
    last_decile_ = decile;
    std::fprintf(out_, "%s: %d%%\n", label_.c_str(), decile * 10);
  }
  if (done >= total)
    finish();
}

void Progress::finish() {
  if (finished_)
    return;
  finished_ = true;
  if (tty_ && last_width_ >= 0)
    std::fprintf(out_, "\n");
}

} // namespace gantry::cli
