//===- Tensor.cpp - host tensors ------------------------------------------===//
#include "runtime/Tensor.h"

#include <cstdio>
#include <functional>
#include <numeric>

using namespace kiln::runtime;

size_t kiln::runtime::dtypeSize(DType t) {
  switch (t) {
  case DType::F32:
    return 4;
  case DType::F16:
    return 2;
  case DType::BF16:
    return 2;
  case DType::F64:
    return 8;
  case DType::I32:
    return 4;
  case DType::I64:
    return 8;
  case DType::Bool:
  case DType::U8:
  case DType::I8:
    return 1;
  }
  return 0;
}

const char *kiln::runtime::dtypeName(DType t) {
  switch (t) {
  case DType::F32:
    return "f32";
  case DType::F16:
    return "f16";
  case DType::BF16:
    return "bf16";
  case DType::F64:
    return "f64";
  case DType::I32:
    return "i32";
  case DType::I64:
    return "i64";
  case DType::Bool:
    return "bool";
  case DType::U8:
    return "u8";
  case DType::I8:
    return "i8";
  }
  return "?";
}

std::string kiln::runtime::shapeString(DType dtype,
                                       const std::vector<int64_t> &shape) {
  std::string s = std::string(dtypeName(dtype)) + "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Tensor::Tensor(DType dtype, std::vector<int64_t> shape)
    : dtype_(dtype), shape_(std::move(shape)) {
  data_.assign(bytes(), 0);
}

Tensor Tensor::uninitialized(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.data_.resize(t.bytes());
  return t;
}

int64_t Tensor::numel() const {
  return std::accumulate(shape_.begin(), shape_.end(), int64_t(1),
                         std::multiplies<int64_t>());
}

std::string Tensor::describe() const { return shapeString(dtype_, shape_); }

Tensor Tensor::view(DType dtype, std::vector<int64_t> shape, void *data) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.view_ = data;
  return t;
}

size_t kiln::runtime::utf8Length(const std::string &s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80         ? 1
             : (c >> 5) == 6  ? 2
             : (c >> 4) == 14 ? 3
             : (c >> 3) == 30 ? 4
                              : 0;
  if (n == 0 || i + n > s.size())
    return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2)
      return 0;
  return n;
}

// optionRef: \x1e CLI \x1f PYTHON \x1d. The markers are control
// characters, which printable() escapes wherever else they appear, so
// spelled text never carries one.
std::string kiln::runtime::optionRef(const std::string &cli,
                                     const std::string &python) {
  return "\x1e" + cli + "\x1f" + python + "\x1d";
}

std::string kiln::runtime::spellOptions(const std::string &text, bool python) {
  std::string out;
  size_t at = 0;
  while (true) {
    size_t start = text.find('\x1e', at);
    size_t mid = start == std::string::npos ? start : text.find('\x1f', start);
    size_t end = mid == std::string::npos ? mid : text.find('\x1d', mid);
    if (end == std::string::npos)
      return out + text.substr(at);
    out += text.substr(at, start - at);
    out += python ? text.substr(mid + 1, end - mid - 1)
                  : text.substr(start + 1, mid - start - 1);
    at = end + 1;
  }
}

std::string kiln::runtime::printable(std::string text) {
  // The length of the valid UTF-8 sequence at `i` (0 if there is none),
  // as strict decoders (Python's) see it.
  auto sequence = [&](size_t i) -> size_t {
    size_t n = utf8Length(text, i);
    unsigned char c = static_cast<unsigned char>(text[i]);
    unsigned char c1 = n > 1 ? static_cast<unsigned char>(text[i + 1]) : 0;
    // No overlong forms, surrogates or code points past U+10FFFF.
    if ((n == 2 && c < 0xC2) || (c == 0xE0 && c1 < 0xA0) ||
        (c == 0xED && c1 >= 0xA0) || (c == 0xF0 && c1 < 0x90) ||
        (c == 0xF4 && c1 >= 0x90) || c > 0xF4)
      return 0;
    return n;
  };
  auto bad = [&](size_t i, size_t n) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    return n == 0 ||
           (n == 1 && ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7F));
  };
  bool clean = true;
  for (size_t i = 0; i < text.size() && clean;) {
    size_t n = sequence(i);
    clean = !bad(i, n);
    i += n ? n : 1;
  }
  if (clean)
    return text;
  std::string out;
  for (size_t i = 0; i < text.size();) {
    size_t n = sequence(i);
    if (bad(i, n)) {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02X",
                    static_cast<unsigned char>(text[i]));
      out += buf;
      ++i;
    } else {
      out.append(text, i, n);
      i += n;
    }
  }
  return out;
}
