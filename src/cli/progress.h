// Progress for long work (model load, synth, benchmarks): a redrawn bar on a terminal, plain
// lines at every 10% otherwise, so logs stay readable.
//
// Thread ownership: the thread that does the work.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace gantry::cli {

class Progress {
public:
  // `bytes`: totals are byte counts (shown in MiB, and work under 64 MiB is too quick to need
  // a progress display); otherwise totals are plain steps.
  Progress(std::string label, bool bytes = true, FILE *out = stderr);
  void update(uint64_t done, uint64_t total);
  void finish();

private:
  std::string label_;
  FILE *out_;
  bool bytes_;
  bool tty_;
  int last_decile_ = -1;
  int last_width_ = -1;
  bool finished_ = false;
};

} // namespace gantry::cli
