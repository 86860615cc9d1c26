#include "engine/gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

namespace gantry::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747; // "GGUF" little-endian
// Bounds that no real model comes near; they stop a hostile header from making us allocate
// gigabytes before the bounds checks on the data notice the file is too short.
constexpr uint64_t kMaxStringLen = 1ull << 30;
constexpr uint32_t kMaxDims = 4;

std::string at(uint64_t off) { return " at offset " + std::to_string(off); }

// Bounds-checked little-endian reader over the mapping.
class Cursor {
public:
  Cursor(const uint8_t *base, uint64_t size) : base_(base), size_(size) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  template <typename T> Result<T> read(const char *what) {
    if (remaining() < sizeof(T)) {
      return Err(Error::corrupt(std::string("truncated file reading ") + what + at(pos_)));
    }
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  Result<std::string_view> read_string(const char *what) {
    uint64_t start = pos_;
    GANTRY_ASSIGN_OR_RETURN(uint64_t len, read<uint64_t>(what));
    if (len > kMaxStringLen || len > remaining()) {
      return Err(Error::corrupt(std::string("string length ") + std::to_string(len) + " of " +
                                what + at(start) + " exceeds the file"));
    }
    std::string_view s(reinterpret_cast<const char *>(base_ + pos_), len);
    pos_ += len;
    return s;
  }

  Status skip(uint64_t n, const char *what) {
    if (n > remaining()) {
      return Err(Error::corrupt(std::string("truncated file in ") + what + at(pos_)));
    }
    pos_ += n;
    return Ok();
  }
  const uint8_t *here() const { return base_ + pos_; }

private:
  const uint8_t *base_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

int scalar_size(ValueType t) {
  switch (t) {
  case ValueType::kUint8:
  case ValueType::kInt8:
  case ValueType::kBool: return 1;
  case ValueType::kUint16:
  case ValueType::kInt16: return 2;
  case ValueType::kUint32:
  case ValueType::kInt32:
  case ValueType::kFloat32: return 4;
  case ValueType::kUint64:
  case ValueType::kInt64:
  case ValueType::kFloat64: return 8;
  case ValueType::kString:
  case ValueType::kArray: return 0;
  }
  return -1;
}

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::kFloat64); }

// Decodes one little-endian scalar of type t at p into v's numeric fields.
void decode_scalar(ValueType t, const uint8_t *p, Value &v) {
  auto load = [p](auto dummy) {
    decltype(dummy) x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  };
  switch (t) {
  case ValueType::kUint8: v.u64 = load(uint8_t{}); break;
  case ValueType::kUint16: v.u64 = load(uint16_t{}); break;
  case ValueType::kUint32: v.u64 = load(uint32_t{}); break;
  case ValueType::kUint64: v.u64 = load(uint64_t{}); break;
  case ValueType::kBool: v.u64 = load(uint8_t{}) != 0; break;
  case ValueType::kInt8: v.i64 = load(int8_t{}); break;
  case ValueType::kInt16: v.i64 = load(int16_t{}); break;
  case ValueType::kInt32: v.i64 = load(int32_t{}); break;
  case ValueType::kInt64: v.i64 = load(int64_t{}); break;
  case ValueType::kFloat32: v.f64 = load(float{}); break;
  case ValueType::kFloat64: v.f64 = load(double{}); break;
  default: return;
  }
  switch (t) {
  case ValueType::kUint8:
  case ValueType::kUint16:
  case ValueType::kUint32:
  case ValueType::kUint64:
  case ValueType::kBool:
    v.i64 = v.u64 <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                ? static_cast<int64_t>(v.u64)
                : -1;
    v.f64 = static_cast<double>(v.u64);
    break;
  case ValueType::kInt8:
  case ValueType::kInt16:
  case ValueType::kInt32:
  case ValueType::kInt64:
    v.u64 = v.i64 >= 0 ? static_cast<uint64_t>(v.i64) : 0;
    v.f64 = static_cast<double>(v.i64);
    break;
  default: break;
  }
}

Result<Value> read_value(Cursor &c, ValueType type, const std::string &key, int depth) {
  Value v;
  v.type = type;
  if (type == ValueType::kString) {
    GANTRY_ASSIGN_OR_RETURN(v.str, c.read_string(("value of key '" + key + "'").c_str()));
    return v;
  }
  if (type == ValueType::kArray) {
    uint64_t start = c.pos();
    GANTRY_ASSIGN_OR_RETURN(uint32_t et, c.read<uint32_t>("array element type"));
    if (!valid_type(et)) {
      return Err(Error::corrupt("key '" + key + "': unknown array element type " +
                                std::to_string(et) + at(start)));
    }
    v.elem_type = static_cast<ValueType>(et);
    GANTRY_ASSIGN_OR_RETURN(v.count, c.read<uint64_t>("array length"));
    int es = scalar_size(v.elem_type);
    if (es > 0) {
      if (v.count > c.remaining() / static_cast<uint64_t>(es)) {
        return Err(Error::corrupt("key '" + key + "': array of " + std::to_string(v.count) +
                                  " elements" + at(start) + " exceeds the file"));
      }
      v.elems = c.here();
      GANTRY_TRY(c.skip(v.count * es, "array"));
      return v;
    }
    // Each string or nested array takes at least 8 bytes, which bounds the count.
    if (v.count > c.remaining() / 8) {
      return Err(Error::corrupt("key '" + key + "': array of " + std::to_string(v.count) +
                                " elements" + at(start) + " exceeds the file"));
    }
    if (v.elem_type == ValueType::kString) {
      v.strs.reserve(v.count);
      for (uint64_t i = 0; i < v.count; ++i) {
        GANTRY_ASSIGN_OR_RETURN(auto s, c.read_string(("element of key '" + key + "'").c_str()));
        v.strs.push_back(s);
      }
      return v;
    }
    // Nested arrays are legal in the format but no model uses them: parse to skip them.
    if (depth > 4)
      return Err(Error::corrupt("key '" + key + "': arrays nested too deeply"));
    for (uint64_t i = 0; i < v.count; ++i) {
      GANTRY_TRY(read_value(c, ValueType::kArray, key, depth + 1));
    }
    return v;
  }
  int sz = scalar_size(type);
  if (c.remaining() < static_cast<uint64_t>(sz)) {
    return Err(Error::corrupt("truncated file in value of key '" + key + "'" + at(c.pos())));
  }
  decode_scalar(type, c.here(), v);
  GANTRY_TRY(c.skip(sz, "value"));
  return v;
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t &out) {
  return __builtin_mul_overflow(a, b, &out);
}

} // namespace

std::string_view value_type_name(ValueType t) {
  switch (t) {
  case ValueType::kUint8: return "u8";
  case ValueType::kInt8: return "i8";
  case ValueType::kUint16: return "u16";
  case ValueType::kInt16: return "i16";
  case ValueType::kUint32: return "u32";
  case ValueType::kInt32: return "i32";
  case ValueType::kFloat32: return "f32";
  case ValueType::kBool: return "bool";
  case ValueType::kString: return "string";
  case ValueType::kArray: return "array";
  case ValueType::kUint64: return "u64";
  case ValueType::kInt64: return "i64";
  case ValueType::kFloat64: return "f64";
  }
  return "?";
}

bool Value::is_integer() const {
  switch (type) {
  case ValueType::kUint8:
  case ValueType::kInt8:
  case ValueType::kUint16:
  case ValueType::kInt16:
  case ValueType::kUint32:
  case ValueType::kInt32:
  case ValueType::kUint64:
  case ValueType::kInt64: return true;
  default: return false;
  }
}

uint64_t TensorInfo::rows() const {
  uint64_t r = 1;
  for (size_t i = 1; i < dims.size(); ++i)
    r *= dims[i];
  return r;
}

uint64_t TensorInfo::row_bytes() const {
  auto tt = type_traits(type);
  if (dims.empty() || tt.block_elems == 0)
    return 0;
  return dims[0] / tt.block_elems * tt.block_bytes;
}

Result<std::unique_ptr<GgufFile>> GgufFile::open(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return Err(Error::io("cannot open " + path + ": " + std::strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Err(Error::io(path + " is not a regular file"));
  }
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ > 0) {
    void *m = mmap(nullptr, f->size_, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      return Err(Error::io("cannot map " + path + ": " + std::strerror(errno)));
    }
    f->mapping_ = m;
    f->base_ = static_cast<const uint8_t *>(m);
  }
  ::close(fd);
  auto st2 = f->parse_all();
  if (!st2.ok()) {
    Error e = st2.take_error();
    e.message = path + ": " + e.message;
    return Err(std::move(e));
  }
  return f;
}

void GgufFile::release_pages(const void *p, size_t n) const {
  if (mapping_ == nullptr || n == 0)
    return;
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t first = (begin + page - 1) / page * page, last = (begin + n) / page * page;
  if (first < last) // advice only: a failure leaves the pages resident, nothing else
    (void)madvise(reinterpret_cast<void *>(first), last - first, MADV_DONTNEED);
}

Result<std::unique_ptr<GgufFile>> GgufFile::parse(std::span<const uint8_t> bytes) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->base_ = bytes.data();
  f->size_ = bytes.size();
  GANTRY_TRY(f->parse_all());
  return f;
}

GgufFile::~GgufFile() {
  if (mapping_)
    munmap(mapping_, size_);
}

Status GgufFile::parse_all() {
  Cursor c(base_, size_);
  GANTRY_ASSIGN_OR_RETURN(uint32_t magic, c.read<uint32_t>("magic"));
  if (magic != kMagic)
    return Err(Error::corrupt("not a GGUF file (bad magic at offset 0)"));
  GANTRY_ASSIGN_OR_RETURN(version_, c.read<uint32_t>("version"));
  if (version_ == 1) {
    return Err(Error::unsupported("GGUF version 1 is not supported (only versions 2 and 3)"));
  }
  if (version_ != 2 && version_ != 3) {
    return Err(Error::unsupported("unknown GGUF version " + std::to_string(version_)));
  }
  GANTRY_ASSIGN_OR_RETURN(uint64_t n_tensors, c.read<uint64_t>("tensor count"));
  GANTRY_ASSIGN_OR_RETURN(uint64_t n_kv, c.read<uint64_t>("metadata count"));
  // A key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at
  // least 8 + 4 + 4 + 8. Counts beyond that cannot be honest.
  if (n_kv > c.remaining() / 13) {
    return Err(Error::corrupt("metadata count " + std::to_string(n_kv) + " at offset 16" +
                              " exceeds what the file can hold"));
  }
  if (n_tensors > c.remaining() / 24) {
    return Err(Error::corrupt("tensor count " + std::to_string(n_tensors) + " at offset 8" +
                              " exceeds what the file can hold"));
  }

  kv_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    uint64_t start = c.pos();
    GANTRY_ASSIGN_OR_RETURN(std::string_view key, c.read_string("metadata key"));
    std::string k(key);
    GANTRY_ASSIGN_OR_RETURN(uint32_t t, c.read<uint32_t>("metadata type"));
    if (!valid_type(t)) {
      return Err(Error::corrupt("key '" + k + "' has unknown value type " + std::to_string(t) +
                                at(start)));
    }
    GANTRY_ASSIGN_OR_RETURN(Value v, read_value(c, static_cast<ValueType>(t), k, 0));
    if (kv_index_.count(k))
      return Err(Error::corrupt("duplicate metadata key '" + k + "'"));
    kv_index_.emplace(k, kv_.size());
    kv_.emplace_back(std::move(k), std::move(v));
  }

  if (const Value *a = find("general.alignment")) {
    if (!a->is_integer() || a->u64 == 0 || (a->u64 & (a->u64 - 1)) != 0 || a->u64 > 65536) {
      return Err(Error::corrupt("general.alignment must be a power of two, got " +
                                std::to_string(a->u64)));
    }
    alignment_ = a->u64;
  }

  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    uint64_t start = c.pos();
    TensorInfo ti;
    GANTRY_ASSIGN_OR_RETURN(std::string_view name, c.read_string("tensor name"));
    ti.name = std::string(name);
    GANTRY_ASSIGN_OR_RETURN(uint32_t nd, c.read<uint32_t>("tensor dimension count"));
    if (nd == 0 || nd > kMaxDims) {
      return Err(Error::corrupt("tensor '" + ti.name + "' has " + std::to_string(nd) +
                                " dimensions (1 to 4 allowed)" + at(start)));
    }
    ti.n_elements = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      GANTRY_ASSIGN_OR_RETURN(uint64_t dim, c.read<uint64_t>("tensor dimension"));
      if (dim == 0 || dim > (1ull << 40) || mul_overflows(ti.n_elements, dim, ti.n_elements) ||
          ti.n_elements > (1ull << 48)) {
        return Err(Error::corrupt("tensor '" + ti.name + "' has an invalid dimension " +
                                  std::to_string(dim) + at(start)));
      }
      ti.dims.push_back(dim);
    }
    GANTRY_ASSIGN_OR_RETURN(uint32_t type, c.read<uint32_t>("tensor type"));
    ti.type = static_cast<TensorType>(type);
    auto tt = type_traits(ti.type);
    if (tt.block_elems == 0) {
      return Err(
          Error::corrupt("tensor '" + ti.name + "' has unknown type " + std::to_string(type)));
    }
    if (ti.dims[0] % tt.block_elems != 0) {
      return Err(Error::corrupt("tensor '" + ti.name + "': row of " + std::to_string(ti.dims[0]) +
                                " elements is not a multiple of the " + std::string(tt.name) +
                                " block size " + std::to_string(tt.block_elems)));
    }
    ti.n_bytes = ti.n_elements / tt.block_elems * tt.block_bytes;
    GANTRY_ASSIGN_OR_RETURN(ti.offset, c.read<uint64_t>("tensor offset"));
    if (ti.offset % alignment_ != 0) {
      return Err(Error::corrupt("tensor '" + ti.name + "' offset " + std::to_string(ti.offset) +
                                " is not aligned to " + std::to_string(alignment_)));
    }
    if (tensor_index_.count(ti.name)) {
      return Err(Error::corrupt("duplicate tensor name '" + ti.name + "'"));
    }
    tensor_index_.emplace(ti.name, tensors_.size());
    tensors_.push_back(std::move(ti));
  }

  uint64_t pad = (alignment_ - c.pos() % alignment_) % alignment_;
  data_offset_ = c.pos() + pad;
  if (n_tensors > 0 && data_offset_ > size_) {
    return Err(Error::corrupt("file ends before the tensor data section at offset " +
                              std::to_string(data_offset_)));
  }
  uint64_t data_size = size_ >= data_offset_ ? size_ - data_offset_ : 0;
  for (auto &t : tensors_) {
    if (t.offset > data_size || t.n_bytes > data_size - t.offset) {
      return Err(Error::corrupt("tensor '" + t.name + "' (" + std::to_string(t.n_bytes) +
                                " bytes at data offset " + std::to_string(t.offset) +
                                ") extends past the end of the file (" + std::to_string(size_) +
                                " bytes)"));
    }
    t.data = base_ + data_offset_ + t.offset;
  }
  return Ok();
}

const Value *GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

std::optional<uint64_t> GgufFile::get_uint(std::string_view key) const {
  const Value *v = find(key);
  if (!v || !(v->is_integer() || v->type == ValueType::kBool))
    return std::nullopt;
  if (v->i64 < 0 && v->u64 == 0)
    return std::nullopt;
  return v->u64;
}

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  const Value *v = find(key);
  if (!v || !v->is_integer())
    return std::nullopt;
  return v->i64;
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  const Value *v = find(key);
  if (!v || !(v->is_float() || v->is_integer()))
    return std::nullopt;
  return v->f64;
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const Value *v = find(key);
  if (!v || !(v->type == ValueType::kBool || v->is_integer()))
    return std::nullopt;
  return v->u64 != 0;
}

std::optional<std::string_view> GgufFile::get_string(std::string_view key) const {
  const Value *v = find(key);
  if (!v || v->type != ValueType::kString)
    return std::nullopt;
  return v->str;
}

Result<std::optional<std::vector<float>>> GgufFile::get_f32_array(std::string_view key) const {
  const Value *v = find(key);
  if (!v)
    return std::optional<std::vector<float>>();
  if (v->type != ValueType::kArray || v->elem_type != ValueType::kFloat32) {
    return Err(Error::corrupt("key '" + std::string(key) + "' is not an array of f32"));
  }
  std::vector<float> out(v->count);
  if (v->count)
    std::memcpy(out.data(), v->elems, v->count * sizeof(float));
  return std::optional<std::vector<float>>(std::move(out));
}

Result<std::optional<std::vector<int64_t>>> GgufFile::get_int_array(std::string_view key) const {
  const Value *v = find(key);
  if (!v)
    return std::optional<std::vector<int64_t>>();
  int es = scalar_size(v->elem_type);
  if (v->type != ValueType::kArray || es <= 0 || v->elem_type == ValueType::kFloat32 ||
      v->elem_type == ValueType::kFloat64) {
    return Err(Error::corrupt("key '" + std::string(key) + "' is not an array of integers"));
  }
  std::vector<int64_t> out(v->count);
  for (uint64_t i = 0; i < v->count; ++i) {
    Value tmp;
    decode_scalar(v->elem_type, v->elems + i * es, tmp);
    out[i] = tmp.i64;
  }
  return std::optional<std::vector<int64_t>>(std::move(out));
}

const std::vector<std::string_view> *GgufFile::get_string_array(std::string_view key) const {
  const Value *v = find(key);
  if (!v || v->type != ValueType::kArray || v->elem_type != ValueType::kString)
    return nullptr;
  return &v->strs;
}

const TensorInfo *GgufFile::tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

} // namespace gantry::gguf
