//===- QuantSpec.h - what --quantize asks for -------------------*- C++ -*-===//
//
// The one place a quantization is named and parsed, shared by the CLI,
// Python, the kiln-quantize-weights pass and the runtime (header-only, so
// the IR library, which does not link the runtime, verifies specs too):
//
//   int8                 symmetric, one scale per output channel
//   int4[:group=G]       asymmetric, groups of G (even, 2..4096; 32)
//   nf4[:block=B][,double=true|false]
//                        bitsandbytes' NF4 in blocks of B (a power of two,
//                        64..4096; 64), double-quantized scales (true)
//
// runtime/quant/Formats.h defines the formats themselves.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_QUANT_QUANTSPEC_H
#define KILN_RUNTIME_QUANT_QUANTSPEC_H

#include <cstdint>
#include <cstdlib>
#include <string>

namespace kiln::runtime::quant {

enum class Format { Int8, Int4, NF4 };

inline const char *formatName(Format f) {
  switch (f) {
  case Format::Int8:
    return "int8";
  case Format::Int4:
    return "int4";
  case Format::NF4:
    return "nf4";
  }
  return "?";
}

struct QuantSpec {
  Format format = Format::NF4;
  int64_t group = 32;      // int4
  int64_t block = 64;      // nf4
  bool doubleQuant = true; // nf4
  bool operator==(const QuantSpec &o) const {
    return format == o.format && group == o.group && block == o.block &&
           doubleQuant == o.doubleQuant;
  }
};

/// The canonical text of a spec, every option written out: "int8",
/// "int4:group=32", "nf4:block=64,double=true". Parsing it gives the spec.
inline std::string formatQuantSpec(const QuantSpec &spec) {
  switch (spec.format) {
  case Format::Int8:
    return "int8";
  case Format::Int4:
    return "int4:group=" + std::to_string(spec.group);
  case Format::NF4:
    return "nf4:block=" + std::to_string(spec.block) +
           ",double=" + (spec.doubleQuant ? "true" : "false");
  }
  return "";
}

/// The bytes a weight of `rows` x `cols` takes stored as `spec`: its codes
/// and every scale, zero point and second-level value (for nf4, `rows` x
/// `cols` is the flattened count as rows = 1).
inline uint64_t storedBytes(const QuantSpec &spec, uint64_t rows,
                            uint64_t cols) {
  uint64_t n = rows * cols;
  switch (spec.format) {
  case Format::Int8:
    return n + 4 * rows;
  case Format::Int4: {
    uint64_t groups = (cols + spec.group - 1) / spec.group;
    return rows * ((cols + 1) / 2) + 8 * rows * groups;
  }
  case Format::NF4: {
    uint64_t blocks = (n + spec.block - 1) / spec.block;
    if (!spec.doubleQuant)
      return (n + 1) / 2 + 4 * blocks;
    return (n + 1) / 2 + blocks + 4 * ((blocks + 255) / 256) + 4 * 256;
  }
  }
  return 4 * n;
}

/// Parses `text`; false with a reason in `error` (quoting the option).
inline bool parseQuantSpec(const std::string &text, QuantSpec &out,
                           std::string &error) {
  out = QuantSpec();
  size_t colon = text.find(':');
  std::string kind = text.substr(0, colon);
  std::string rest = colon == std::string::npos ? "" : text.substr(colon + 1);
  if (kind == "int8")
    out.format = Format::Int8;
  else if (kind == "int4")
    out.format = Format::Int4;
  else if (kind == "nf4")
    out.format = Format::NF4;
  else {
    error = "unknown quantization '" + kind + "' (expected int8, int4 or nf4)";
    return false;
  }
  if (colon != std::string::npos && rest.empty()) {
    error = "'" + text + "' has an empty option list";
    return false;
  }
  size_t at = 0;
  while (at < rest.size()) {
    size_t comma = rest.find(',', at);
    std::string item = rest.substr(
        at, comma == std::string::npos ? std::string::npos : comma - at);
    at = comma == std::string::npos ? rest.size() : comma + 1;
    size_t eq = item.find('=');
    if (eq == std::string::npos) {
      error = "'" + item + "' in '" + text + "' is not KEY=VALUE";
      return false;
    }
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    auto integer = [&](int64_t &dst, int64_t lo, int64_t hi) {
      char *end = nullptr;
      long long v = std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || *end || v < lo || v > hi) {
        error = key + "=" + value + " in '" + text +
                "' is not a whole number from " + std::to_string(lo) + " to " +
                std::to_string(hi);
        return false;
      }
      dst = v;
      return true;
    };
    if (out.format == Format::Int4 && key == "group") {
      if (!integer(out.group, 2, 4096))
        return false;
      if (out.group % 2) {
        error = "int4 group=" + value + " must be even";
        return false;
      }
    } else if (out.format == Format::NF4 && key == "block") {
      if (!integer(out.block, 64, 4096))
        return false;
      if (out.block & (out.block - 1)) {
        error =
            "nf4 block=" + value + " must be a power of two from 64 to 4096";
        return false;
      }
    } else if (out.format == Format::NF4 && key == "double") {
      if (value == "true" || value == "1") {
        out.doubleQuant = true;
      } else if (value == "false" || value == "0") {
        out.doubleQuant = false;
      } else {
        error = "double=" + value + " must be true or false";
        return false;
      }
    } else {
      error = "'" + key + "' is not an option of " +
              std::string(formatName(out.format)) +
              (out.format == Format::Int4  ? " (group=G)"
               : out.format == Format::NF4 ? " (block=B, double=BOOL)"
                                           : " (it takes none)");
      return false;
    }
  }
  return true;
}

} // namespace kiln::runtime::quant

#endif
