// Writes GGUF v3 files: used by `gantry model synth` (random-weight models of real shapes) and by
// tests that build well-formed and deliberately malformed files.
//
// Thread ownership: single-threaded builder.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "engine/gguf/gguf.h"

namespace gantry::gguf {

class GgufWriter {
public:
  // Fills a tensor's bytes when the file is written, so that a multi-gigabyte model never has
  // to exist in memory all at once.
  using Fill = std::function<void(uint8_t *dst, uint64_t n_bytes)>;
  using Progress = std::function<void(uint64_t done_bytes, uint64_t total_bytes)>;

  void set_u32(std::string key, uint32_t v);
  void set_i32(std::string key, int32_t v);
  void set_u64(std::string key, uint64_t v);
  void set_f32(std::string key, float v);
  void set_bool(std::string key, bool v);
  void set_string(std::string key, std::string_view v);
  void set_string_array(std::string key, const std::vector<std::string_view> &v);
  void set_f32_array(std::string key, const std::vector<float> &v);
  void set_i32_array(std::string key, const std::vector<int32_t> &v);
  // Copies a metadata value (of any type) from another file, e.g. a vocabulary.
  void copy_value(const std::string &key, const Value &v);

  void add_tensor(std::string name, TensorType type, std::vector<uint64_t> dims, Fill fill);

  // Header + metadata + tensor infos, padded to the alignment (the data section follows).
  std::vector<uint8_t> header_bytes() const;
  uint64_t total_data_bytes() const;
  // Writes to path.tmp then renames, so a crash never leaves a half-written model behind.
  Status write(const std::string &path, const Progress &progress = nullptr) const;
  // Whole file in memory; for tests only.
  std::vector<uint8_t> to_bytes() const;

private:
  struct Tensor {
    std::string name;
    TensorType type;
    std::vector<uint64_t> dims;
    uint64_t n_bytes;
    uint64_t offset;
    Fill fill;
  };
  void put_key(const std::string &key, ValueType t);

  std::vector<uint8_t> kv_bytes_;
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
  uint64_t data_size_ = 0;
  uint64_t alignment_ = 32;
};

} // namespace gantry::gguf
