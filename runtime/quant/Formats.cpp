//===- Formats.cpp - quantized weight storage: int8, int4, NF4 ------------===//
#include "runtime/quant/Formats.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

using namespace kiln::runtime;
using namespace kiln::runtime::quant;

// --- NF4 --------------------------------------------------------------------

const std::array<float, 16> kiln::runtime::quant::kNf4Levels = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f};

namespace {

/// bitsandbytes' decision thresholds between consecutive NF4 levels (the
/// f32 values its quantizer compares against; roughly the midpoints).
constexpr float kNf4Thresholds[15] = {
    -0.8480964004993439f,   -0.6106329262256622f,  -0.4599952697753906f,
    -0.33967943489551544f,  -0.23460740596055984f, -0.13791173323988914f,
    -0.045525018125772476f, 0.03979014977812767f,  0.1202552504837513f,
    0.2035212516784668f,    0.2920137718319893f,   0.3893125355243683f,
    0.5016634166240692f,    0.6427869200706482f,   0.8614784181118011f};

Status badSize(const char *what, size_t have, int64_t want) {
  return Status::error(std::string(what) + " holds " + std::to_string(have) +
                       " values but " + std::to_string(want) + " are needed");
}

/// The element count of a rows x cols tensor, refused past 2^40.
bool boundedCount(int64_t rows, int64_t cols, int64_t &n) {
  if (rows <= 0 || cols <= 0 || rows > (int64_t(1) << 40) ||
      cols > (int64_t(1) << 40) / rows)
    return false;
  n = rows * cols;
  return true;
}

} // namespace

uint8_t kiln::runtime::quant::nf4Code(float x) {
  uint8_t code = 0;
  for (float t : kNf4Thresholds)
    code += x > t; // NaN exceeds nothing
  return code;
}

const std::array<float, 256> &kiln::runtime::quant::dynamicMap() {
  // create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
  // for exponent i = 0..6, the 2^i midpoints of linspace(0.1, 1, 2^i + 1)
  // scaled by 10^(i - 6), with both signs; then 0 and 1; sorted. Every
  // step in float32 as torch 1.13's AVX2 linspace computes it: from the
  // start for the first half and from the end for the rest, each element
  // one fused multiply-add, except in runs of two 8-lane vectors, whose
  // lanes add i * step to the vector's first element in two roundings.
  static const std::array<float, 256> map = [] {
    std::vector<float> data;
    for (int i = 0; i < 7; ++i) {
      int64_t steps = (int64_t(1) << i) + 1, halfway = steps / 2;
      const float start = 0.1f, end = 1.0f;
      const float step = (end - start) / static_cast<float>(steps - 1);
      auto at = [&](int64_t k) {
        return k < halfway
                   ? std::fma(step, static_cast<float>(k), start)
                   : std::fma(-step, static_cast<float>(steps - k - 1), end);
      };
      std::vector<float> b(static_cast<size_t>(steps));
      constexpr int64_t kLanes = 8;
      int64_t k = 0;
      for (; k + 2 * kLanes <= steps; k += 2 * kLanes)
        for (int64_t v = k; v < k + 2 * kLanes; v += kLanes) {
          float base = at(v);
          for (int64_t lane = 0; lane < kLanes; ++lane) {
            float offset = static_cast<float>(lane) * step;
            b[v + lane] = base + offset;
          }
        }
      for (; k < steps; ++k)
        b[k] = at(k);
      const float scale = static_cast<float>(std::pow(10.0, i - 6));
      std::vector<float> means;
      for (int64_t k = 0; k + 1 < steps; ++k)
        means.push_back((b[k] + b[k + 1]) / 2.0f);
      for (float m : means)
        data.push_back(scale * m);
      for (float m : means)
        data.push_back(-scale * m);
    }
    data.push_back(0.0f);
    data.push_back(1.0f);
    std::sort(data.begin(), data.end());
    std::array<float, 256> out{};
    std::copy(data.begin(), data.end(), out.begin());
    return out;
  }();
  return map;
}

uint8_t kiln::runtime::quant::dynamicCode(const std::array<float, 256> &map,
                                          float x) {
  int pivot = 127, upperPivot = 255, lowerPivot = 0;
  float lower = -1.0f, upper = 1.0f, val = map[pivot];
  for (int half = 64; half > 0; half >>= 1) {
    if (x > val) {
      lowerPivot = pivot;
      lower = val;
      pivot += half;
    } else {
      upperPivot = pivot;
      upper = val;
      pivot -= half;
    }
    val = map[pivot];
  }
  if (upperPivot == 255)
    upper = map[upperPivot];
  if (lowerPivot == 0)
    lower = map[lowerPivot];
  if (x > val)
    return static_cast<uint8_t>(x > (upper + val) * 0.5f ? upperPivot : pivot);
  return static_cast<uint8_t>(x < (lower + val) * 0.5f ? lowerPivot : pivot);
}

bool kiln::runtime::quant::validNf4BlockSize(int64_t b) {
  return b >= 64 && b <= 4096 && (b & (b - 1)) == 0;
}

Status Nf4Tensor::check() const {
  if (numel <= 0 || numel > (int64_t(1) << 40))
    return Status::error("an NF4 tensor of " + std::to_string(numel) +
                         " values");
  if (!validNf4BlockSize(blockSize))
    return Status::error("NF4 block size " + std::to_string(blockSize) +
                         " is not a power of two from 64 to 4096");
  if (packed.size() != static_cast<size_t>((numel + 1) / 2))
    return badSize("the packed codes", packed.size(), (numel + 1) / 2);
  if (!nested)
    return absmax.size() == static_cast<size_t>(blocks())
               ? Status::ok()
               : badSize("absmax", absmax.size(), blocks());
  if (!validNf4BlockSize(nestedBlockSize))
    return Status::error("nested block size " +
                         std::to_string(nestedBlockSize) +
                         " is not a power of two from 64 to 4096");
  if (qabsmax.size() != static_cast<size_t>(blocks()))
    return badSize("the quantized absmax", qabsmax.size(), blocks());
  int64_t groups = (blocks() + nestedBlockSize - 1) / nestedBlockSize;
  if (nestedAbsmax.size() != static_cast<size_t>(groups))
    return badSize("nested_absmax", nestedAbsmax.size(), groups);
  return Status::ok();
}

std::vector<float> Nf4Tensor::blockScales() const {
  if (!nested)
    return absmax;
  std::vector<float> s(qabsmax.size());
  for (size_t b = 0; b < s.size(); ++b)
    s[b] = nestedMap[qabsmax[b]] * nestedAbsmax[b / nestedBlockSize] + offset;
  return s;
}

Status kiln::runtime::quant::quantizeNf4(const float *w, int64_t n,
                                         const Nf4Options &o, Nf4Tensor &out) {
  out = Nf4Tensor();
  out.numel = n;
  out.blockSize = o.blockSize;
  out.nested = o.doubleQuant;
  out.nestedBlockSize = o.nestedBlockSize;
  if (n <= 0 || n > (int64_t(1) << 40))
    return Status::error("cannot quantize " + std::to_string(n) + " values");
  if (!validNf4BlockSize(o.blockSize) ||
      (o.doubleQuant && !validNf4BlockSize(o.nestedBlockSize)))
    return Status::error("NF4 block sizes must be powers of two from 64 to "
                         "4096 (bitsandbytes' range)");
  int64_t blocks = out.blocks();
  std::vector<float> absmax(static_cast<size_t>(blocks));
  out.packed.assign(static_cast<size_t>((n + 1) / 2), 0);
  for (int64_t b = 0; b < blocks; ++b) {
    int64_t lo = b * o.blockSize, hi = std::min(n, lo + o.blockSize);
    float m = 0.0f;
    for (int64_t i = lo; i < hi; ++i)
      m = std::fmax(m, std::fabs(w[i]));
    absmax[b] = m;
    const float r = 1.0f / m; // as bitsandbytes: x times the reciprocal
    for (int64_t i = lo; i < hi; ++i) {
      uint8_t c = nf4Code(w[i] * r);
      out.packed[i / 2] |= (i % 2 == 0) ? uint8_t(c << 4) : c;
    }
    if (hi == n && n % 2) // the pad is 0.0, as bitsandbytes' loads fill it
      out.packed.back() |= nf4Code(0.0f * r);
  }
  if (!o.doubleQuant) {
    out.absmax = std::move(absmax);
    return Status::ok();
  }
  double sum = 0;
  for (float a : absmax)
    sum += a;
  out.offset = static_cast<float>(sum / static_cast<double>(blocks));
  for (float &a : absmax)
    a -= out.offset;
  const std::array<float, 256> &map = dynamicMap();
  int64_t groups = (blocks + o.nestedBlockSize - 1) / o.nestedBlockSize;
  out.qabsmax.resize(static_cast<size_t>(blocks));
  out.nestedAbsmax.resize(static_cast<size_t>(groups));
  for (int64_t g = 0; g < groups; ++g) {
    int64_t lo = g * o.nestedBlockSize,
            hi = std::min(blocks, lo + o.nestedBlockSize);
    float m = 0.0f;
    for (int64_t b = lo; b < hi; ++b)
      m = std::fmax(m, std::fabs(absmax[b]));
    out.nestedAbsmax[g] = m;
    const float r = 1.0f / m;
    for (int64_t b = lo; b < hi; ++b)
      out.qabsmax[b] = dynamicCode(map, absmax[b] * r);
  }
  return Status::ok();
}

Status kiln::runtime::quant::dequantizeNf4(const Nf4Tensor &t, float *out) {
  if (Status s = t.check(); !s)
    return s;
  std::vector<float> scale = t.blockScales();
  for (int64_t i = 0; i < t.numel; ++i) {
    uint8_t byte = t.packed[i / 2];
    uint8_t c = (i % 2 == 0) ? byte >> 4 : byte & 0x0f;
    out[i] = kNf4Levels[c] * scale[i / t.blockSize];
  }
  return Status::ok();
}

std::string kiln::runtime::quant::pythonFloatRepr(double v) {
  if (std::isnan(v))
    return "NaN"; // json.dumps' spelling
  if (std::isinf(v))
    return v > 0 ? "Infinity" : "-Infinity";
  if (v == 0)
    return std::signbit(v) ? "-0.0" : "0.0";
  // The shortest round-trip digits, then Python's layout: positional for
  // decimal exponents from -4 to 15, scientific otherwise.
  char buf[64];
  auto r =
      std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  size_t e = s.find('e');
  int exp = std::atoi(s.c_str() + e + 1);
  std::string digits;
  for (char c : s.substr(0, e))
    if (c != '.')
      digits += c;
  if (exp >= -4 && exp < 16) {
    std::string out;
    if (exp < 0) {
      out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exp + 1) {
      out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
    return sign + out;
  }
  std::string mant = digits.size() == 1
                         ? digits
                         : digits.substr(0, 1) + "." + digits.substr(1);
  std::string es = std::to_string(std::abs(exp));
  if (es.size() < 2)
    es = "0" + es;
  return sign + mant + "e" + (exp < 0 ? "-" : "+") + es;
}

std::string
kiln::runtime::quant::nf4QuantStateJson(const Nf4Tensor &t,
                                        const std::vector<int64_t> &shape) {
  std::string s = "{\"quant_type\": \"nf4\", \"blocksize\": " +
                  std::to_string(t.blockSize) +
                  ", \"dtype\": \"float32\", \"shape\": [";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  s += "]";
  if (t.nested)
    s += ", \"nested_blocksize\": " + std::to_string(t.nestedBlockSize) +
         ", \"nested_dtype\": \"float32\", \"nested_offset\": " +
         pythonFloatRepr(static_cast<double>(t.offset));
  return s + "}";
}

// --- int8 -------------------------------------------------------------------

Status Int8Tensor::check() const {
  int64_t n;
  if (!boundedCount(rows, cols, n))
    return Status::error("an int8 tensor of " + std::to_string(rows) + " x " +
                         std::to_string(cols) + " values");
  if (q.size() != static_cast<size_t>(n))
    return badSize("the int8 values", q.size(), n);
  if (scales.size() != static_cast<size_t>(rows))
    return badSize("the scales", scales.size(), rows);
  return Status::ok();
}

Status kiln::runtime::quant::quantizeInt8(const float *w, int64_t rows,
                                          int64_t cols, Int8Tensor &out) {
  out = Int8Tensor();
  int64_t n;
  if (!boundedCount(rows, cols, n))
    return Status::error("cannot quantize a " + std::to_string(rows) + " x " +
                         std::to_string(cols) + " weight");
  out.rows = rows;
  out.cols = cols;
  out.q.resize(static_cast<size_t>(n));
  out.scales.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float *row = w + r * cols;
    float m = 0.0f;
    for (int64_t c = 0; c < cols; ++c)
      m = std::fmax(m, std::fabs(row[c]));
    float scale = m / 127.0f;
    out.scales[r] = scale;
    for (int64_t c = 0; c < cols; ++c) {
      float q = scale > 0 ? std::nearbyint(row[c] / scale) : 0.0f;
      out.q[r * cols + c] = static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
    }
  }
  return Status::ok();
}

Status kiln::runtime::quant::dequantizeInt8(const Int8Tensor &t, float *out) {
  if (Status s = t.check(); !s)
    return s;
  for (int64_t r = 0; r < t.rows; ++r)
    for (int64_t c = 0; c < t.cols; ++c)
      out[r * t.cols + c] = t.q[r * t.cols + c] * t.scales[r];
  return Status::ok();
}

#if defined(__clang__) && __clang_major__ < 16
// clang before 16 names a cloned function's dispatcher NAME.ifunc, which
// callers in other files do not find: one portable version there (the
// sanitized fuzzing build).
#define KILN_QUANTIZE_CLONES
#else
#define KILN_QUANTIZE_CLONES                                                   \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
KILN_QUANTIZE_CLONES void
kiln::runtime::quant::quantizeActivations(const float *x, int64_t rows,
                                          int64_t cols, int levels,
                                          int8_t *codes, float *scales) {
  // Adding and subtracting 1.5 * 2^23 rounds |v| < 2^22 to the nearest
  // integer, ties to even, in vector registers (this file is compiled
  // without FMA contraction, so v is x * inv rounded to f32 first).
  const float magic = 12582912.0f, top = static_cast<float>(levels);
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * cols;
    float absmax = 0.0f;
#pragma omp simd reduction(max : absmax)
    for (int64_t k = 0; k < cols; ++k) {
      float a = xr[k] < 0 ? -xr[k] : xr[k];
      absmax = a > absmax ? a : absmax;
    }
    float inv = absmax > 0.0f ? top / absmax : 0.0f;
    scales[r] = absmax / top;
    int8_t *qr = codes + r * cols;
#pragma omp simd
    for (int64_t k = 0; k < cols; ++k) {
      float v = (xr[k] * inv + magic) - magic;
      v = v > top ? top : v;
      v = v < -top ? -top : v;
      qr[k] = static_cast<int8_t>(static_cast<int32_t>(v));
    }
  }
}

// --- int4 -------------------------------------------------------------------

Status Int4Tensor::check() const {
  int64_t n;
  if (!boundedCount(rows, cols, n))
    return Status::error("an int4 tensor of " + std::to_string(rows) + " x " +
                         std::to_string(cols) + " values");
  if (group < 2 || group > 4096 || group % 2)
    return Status::error("int4 group size " + std::to_string(group) +
                         " is not an even number from 2 to 4096");
  if (packed.size() != static_cast<size_t>(rows * rowBytes()))
    return badSize("the packed codes", packed.size(), rows * rowBytes());
  if (scales.size() != static_cast<size_t>(rows * groups()))
    return badSize("the scales", scales.size(), rows * groups());
  if (zeros.size() != static_cast<size_t>(rows * groups()))
    return badSize("the zero points", zeros.size(), rows * groups());
  return Status::ok();
}

Status kiln::runtime::quant::quantizeInt4(const float *w, int64_t rows,
                                          int64_t cols, int64_t group,
                                          Int4Tensor &out) {
  out = Int4Tensor();
  out.rows = rows;
  out.cols = cols;
  out.group = group;
  int64_t n;
  if (!boundedCount(rows, cols, n))
    return Status::error("cannot quantize a " + std::to_string(rows) + " x " +
                         std::to_string(cols) + " weight");
  if (group < 2 || group > 4096 || group % 2)
    return Status::error("int4 group size " + std::to_string(group) +
                         " is not an even number from 2 to 4096");
  int64_t groups = out.groups();
  out.packed.assign(static_cast<size_t>(rows * out.rowBytes()), 0);
  out.scales.resize(static_cast<size_t>(rows * groups));
  out.zeros.resize(static_cast<size_t>(rows * groups));
  for (int64_t r = 0; r < rows; ++r) {
    const float *row = w + r * cols;
    uint8_t *prow = out.packed.data() + r * out.rowBytes();
    for (int64_t g = 0; g < groups; ++g) {
      int64_t lo = g * group, hi = std::min(cols, lo + group);
      float mn = 0.0f, mx = 0.0f; // the range always holds 0
      for (int64_t c = lo; c < hi; ++c) {
        mn = std::fmin(mn, row[c]);
        mx = std::fmax(mx, row[c]);
      }
      float scale = (mx - mn) / 15.0f;
      if (!(scale > 0))
        scale = 1.0f;
      float zero = std::clamp(std::nearbyint(-mn / scale), 0.0f, 15.0f);
      out.scales[r * groups + g] = scale;
      out.zeros[r * groups + g] = zero;
      for (int64_t c = lo; c < hi; ++c) {
        float q =
            std::clamp(std::nearbyint(row[c] / scale) + zero, 0.0f, 15.0f);
        uint8_t code = static_cast<uint8_t>(q);
        prow[c / 2] |= (c % 2 == 0) ? uint8_t(code << 4) : code;
      }
    }
  }
  return Status::ok();
}

Status kiln::runtime::quant::dequantizeInt4(const Int4Tensor &t, float *out) {
  if (Status s = t.check(); !s)
    return s;
  int64_t groups = t.groups();
  for (int64_t r = 0; r < t.rows; ++r) {
    const uint8_t *prow = t.packed.data() + r * t.rowBytes();
    for (int64_t c = 0; c < t.cols; ++c) {
      uint8_t byte = prow[c / 2];
      uint8_t q = (c % 2 == 0) ? byte >> 4 : byte & 0x0f;
      int64_t g = r * groups + c / t.group;
      out[r * t.cols + c] = (static_cast<float>(q) - t.zeros[g]) * t.scales[g];
    }
  }
  return Status::ok();
}
