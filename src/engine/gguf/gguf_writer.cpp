#include "engine/gguf/gguf_writer.h"

#include <cstdio>
#include <cstring>

namespace gantry::gguf {
namespace {

template <typename T> void put(std::vector<uint8_t> &out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}

void put_str(std::vector<uint8_t> &out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

} // namespace

void GgufWriter::put_key(const std::string &key, ValueType t) {
  put_str(kv_bytes_, key);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(t));
  ++n_kv_;
}

void GgufWriter::set_u32(std::string key, uint32_t v) {
  put_key(key, ValueType::kUint32);
  put(kv_bytes_, v);
}
void GgufWriter::set_i32(std::string key, int32_t v) {
  put_key(key, ValueType::kInt32);
  put(kv_bytes_, v);
}
void GgufWriter::set_u64(std::string key, uint64_t v) {
  put_key(key, ValueType::kUint64);
  put(kv_bytes_, v);
}
void GgufWriter::set_f32(std::string key, float v) {
  put_key(key, ValueType::kFloat32);
  put(kv_bytes_, v);
}
void GgufWriter::set_bool(std::string key, bool v) {
  put_key(key, ValueType::kBool);
  put<uint8_t>(kv_bytes_, v ? 1 : 0);
}
void GgufWriter::set_string(std::string key, std::string_view v) {
  put_key(key, ValueType::kString);
  put_str(kv_bytes_, v);
}
void GgufWriter::set_string_array(std::string key, const std::vector<std::string_view> &v) {
  put_key(key, ValueType::kArray);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(ValueType::kString));
  put<uint64_t>(kv_bytes_, v.size());
  for (auto s : v)
    put_str(kv_bytes_, s);
}
void GgufWriter::set_f32_array(std::string key, const std::vector<float> &v) {
  put_key(key, ValueType::kArray);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(ValueType::kFloat32));
  put<uint64_t>(kv_bytes_, v.size());
  for (float f : v)
    put(kv_bytes_, f);
}
void GgufWriter::set_i32_array(std::string key, const std::vector<int32_t> &v) {
  put_key(key, ValueType::kArray);
  put<uint32_t>(kv_bytes_, static_cast<uint32_t>(ValueType::kInt32));
  put<uint64_t>(kv_bytes_, v.size());
  for (int32_t i : v)
    put(kv_bytes_, i);
}

void GgufWriter::copy_value(const std::string &key, const Value &v) {
  auto scalar_bytes = [](ValueType t) -> int {
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
    default: return 0;
    }
  };
  switch (v.type) {
  case ValueType::kString: set_string(key, v.str); return;
  case ValueType::kArray: {
    if (v.elem_type == ValueType::kString) {
      set_string_array(key, v.strs);
      return;
    }
    int es = scalar_bytes(v.elem_type);
    if (es == 0)
      return; // nested arrays are not copied
    put_key(key, ValueType::kArray);
    put<uint32_t>(kv_bytes_, static_cast<uint32_t>(v.elem_type));
    put<uint64_t>(kv_bytes_, v.count);
    kv_bytes_.insert(kv_bytes_.end(), v.elems, v.elems + v.count * es);
    return;
  }
  case ValueType::kFloat32: set_f32(key, static_cast<float>(v.f64)); return;
  case ValueType::kFloat64:
    put_key(key, ValueType::kFloat64);
    put(kv_bytes_, v.f64);
    return;
  case ValueType::kBool: set_bool(key, v.u64 != 0); return;
  case ValueType::kInt8:
  case ValueType::kInt16:
  case ValueType::kInt32: set_i32(key, static_cast<int32_t>(v.i64)); return;
  case ValueType::kInt64:
    put_key(key, ValueType::kInt64);
    put(kv_bytes_, v.i64);
    return;
  case ValueType::kUint8:
  case ValueType::kUint16:
  case ValueType::kUint32: set_u32(key, static_cast<uint32_t>(v.u64)); return;
  case ValueType::kUint64: set_u64(key, v.u64); return;
  }
}

void GgufWriter::add_tensor(std::string name, TensorType type, std::vector<uint64_t> dims,
                            Fill fill) {
  auto tt = type_traits(type);
  uint64_t n = 1;
  for (auto d : dims)
    n *= d;
  uint64_t bytes = tt.block_elems ? n / tt.block_elems * tt.block_bytes : 0;
  data_size_ = align_up(data_size_, alignment_);
  tensors_.push_back({std::move(name), type, std::move(dims), bytes, data_size_, std::move(fill)});
  data_size_ += bytes;
}

std::vector<uint8_t> GgufWriter::header_bytes() const {
  std::vector<uint8_t> out;
  put<uint32_t>(out, 0x46554747);
  put<uint32_t>(out, 3);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, n_kv_);
  out.insert(out.end(), kv_bytes_.begin(), kv_bytes_.end());
  for (const auto &t : tensors_) {
    put_str(out, t.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (auto d : t.dims)
      put<uint64_t>(out, d);
    put<uint32_t>(out, static_cast<uint32_t>(t.type));
    put<uint64_t>(out, t.offset);
  }
  out.resize(align_up(out.size(), alignment_), 0);
  return out;
}

uint64_t GgufWriter::total_data_bytes() const { return align_up(data_size_, alignment_); }

std::vector<uint8_t> GgufWriter::to_bytes() const {
  std::vector<uint8_t> out = header_bytes();
  size_t base = out.size();
  out.resize(base + total_data_bytes(), 0);
  for (const auto &t : tensors_) {
    if (t.fill)
      t.fill(out.data() + base + t.offset, t.n_bytes);
  }
  return out;
}

Status GgufWriter::write(const std::string &path, const Progress &progress) const {
  std::string tmp = path + ".tmp";
  FILE *f = std::fopen(tmp.c_str(), "wb");
  if (!f)
    return Err(Error::io("cannot create " + tmp));
  auto fail = [&](const std::string &why) {
    std::fclose(f);
    std::remove(tmp.c_str());
    return Err(Error::io(why));
  };
  std::vector<uint8_t> header = header_bytes();
  if (std::fwrite(header.data(), 1, header.size(), f) != header.size()) {
    return fail("write failed: " + tmp);
  }
  uint64_t written = 0, total = total_data_bytes();
  std::vector<uint8_t> buf;
  for (const auto &t : tensors_) {
    if (written < t.offset) {
      std::vector<uint8_t> pad(t.offset - written, 0);
      if (std::fwrite(pad.data(), 1, pad.size(), f) != pad.size())
        return fail("write failed");
      written = t.offset;
    }
    buf.assign(t.n_bytes, 0);
    if (t.fill)
      t.fill(buf.data(), buf.size());
    if (std::fwrite(buf.data(), 1, buf.size(), f) != buf.size())
      return fail("write failed");
    written += t.n_bytes;
    if (progress)
      progress(written, total);
  }
  if (written < total) {
    std::vector<uint8_t> pad(total - written, 0);
    if (std::fwrite(pad.data(), 1, pad.size(), f) != pad.size())
      return fail("write failed");
  }
  if (std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    return Err(Error::io("close failed: " + tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Err(Error::io("cannot rename " + tmp + " to " + path));
  }
  return Ok();
}

} // namespace gantry::gguf
