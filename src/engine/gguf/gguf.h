// GGUF reader (format versions 2 and 3): the file is memory-mapped and tensors are views into
// the mapping, never copies. Every read is bounds-checked, so a truncated or hostile file gives
// an Error naming the offset, key or tensor at fault rather than a crash.
//
// Thread safety: a GgufFile is immutable after open() and may be read from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "engine/gguf/tensor_type.h"

namespace gantry::gguf {

enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
std::string_view value_type_name(ValueType t);

// One metadata value. Scalars are widened into the matching field; strings point into the
// mapping; numeric arrays keep a pointer to their (possibly unaligned) bytes and are read with
// the typed accessors on GgufFile, which copy.
struct Value {
  ValueType type = ValueType::kUint8;
  uint64_t u64 = 0; // unsigned integers and bool
  int64_t i64 = 0;  // signed integers (also set for unsigned values that fit)
  double f64 = 0;   // floats (also set for every integer)
  std::string_view str;
  // Arrays.
  ValueType elem_type = ValueType::kUint8;
  uint64_t count = 0;
  const uint8_t *elems = nullptr;     // numeric arrays: raw little-endian elements
  std::vector<std::string_view> strs; // string arrays

  bool is_integer() const;
  bool is_float() const { return type == ValueType::kFloat32 || type == ValueType::kFloat64; }
};

struct TensorInfo {
  std::string name;
  TensorType type = TensorType::kF32;
  std::vector<uint64_t> dims; // ggml order: dims[0] is the contiguous (row) dimension
  uint64_t offset = 0;        // relative to the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const uint8_t *data = nullptr; // view into the mapping

  uint64_t rows() const; // product of dims[1..]
  uint64_t row_bytes() const;
};

class GgufFile {
public:
  // Maps the file read-only. The mapping lives as long as the GgufFile.
  static Result<std::unique_ptr<GgufFile>> open(const std::string &path);
  // Parses bytes the caller keeps alive (tests, fuzzing). No copy is made.
  static Result<std::unique_ptr<GgufFile>> parse(std::span<const uint8_t> bytes);

  ~GgufFile();
  GgufFile(const GgufFile &) = delete;
  GgufFile &operator=(const GgufFile &) = delete;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }
  uint64_t data_offset() const { return data_offset_; }
  const std::string &path() const { return path_; }
  // The whole file as mapped (header, metadata, tensor table and data).
  std::span<const uint8_t> bytes() const { return {base_, static_cast<size_t>(size_)}; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>> &metadata() const { return kv_; }
  const Value *find(std::string_view key) const;

  // Typed lookups: nullopt when absent; an Error-free "wrong type" also yields nullopt so that
  // callers decide whether a missing or mistyped key is fatal (they name the key in the error).
  std::optional<uint64_t> get_uint(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string_view> get_string(std::string_view key) const;
  // Arrays: Error when present with the wrong element type; empty optional when absent.
  Result<std::optional<std::vector<float>>> get_f32_array(std::string_view key) const;
  Result<std::optional<std::vector<int64_t>>> get_int_array(std::string_view key) const;
  const std::vector<std::string_view> *get_string_array(std::string_view key) const;

  // Tells the kernel this process no longer needs the mapped pages wholly inside [p, p + n)
  // (a tensor copied elsewhere at load): they leave the process's resident memory and stay in
  // the page cache. Reading them again is valid (they fault back in). No-op for parse()d bytes.
  void release_pages(const void *p, size_t n) const;

  const std::vector<TensorInfo> &tensors() const { return tensors_; }
  const TensorInfo *tensor(std::string_view name) const;

private:
  GgufFile() = default;
  Status parse_all();

  std::string path_;
  const uint8_t *base_ = nullptr;
  uint64_t size_ = 0;
  void *mapping_ = nullptr; // non-null when we own an mmap
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

} // namespace gantry::gguf
