//===- Serialize.cpp - quantized weights as named tensors -----------------===//
#include "runtime/quant/Serialize.h"
#include "runtime/quant/QuantView.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>

using namespace kiln::runtime;
using namespace kiln::runtime::quant;

namespace {

constexpr const char *kNf4State = ".quant_state.bitsandbytes__nf4";
constexpr const char *kInt4State = ".quant_state.kiln__int4";
/// A quant state is a few hundred bytes; anything far larger is not one.
constexpr size_t kMaxStateBytes = 4096;

/// One value of a quant-state JSON object: a string, a number or a list of
/// integers (a shape).
struct JsonValue {
  enum Kind { String, Number, IntList } kind = Number;
  std::string text;
  double number = 0;
  std::vector<int64_t> list;
};

/// A flat JSON object as bitsandbytes' quant states are; anything else
/// (nesting, duplicate keys, trailing bytes) is refused with the byte
/// offset.
class StateParser {
public:
  explicit StateParser(const std::string &s) : s(s) {}

  Status parse(std::map<std::string, JsonValue> &out) {
    skip();
    if (!eat('{'))
      return fail("expected '{'");
    skip();
    if (eat('}'))
      return end();
    while (true) {
      std::string key;
      if (Status st = string(key); !st)
        return st;
      skip();
      if (!eat(':'))
        return fail("expected ':' after \"" + key + "\"");
      skip();
      JsonValue v;
      if (Status st = value(v); !st)
        return st;
      if (!out.emplace(key, std::move(v)).second)
        return fail("the key \"" + key + "\" appears twice");
      skip();
      if (eat(','))
        skip();
      else if (eat('}'))
        return end();
      else
        return fail("expected ',' or '}'");
    }
  }

private:
  Status end() {
    skip();
    return pos == s.size() ? Status::ok() : fail("unexpected bytes after '}'");
  }
  Status fail(const std::string &why) const {
    return Status::error("invalid quant state JSON at byte " +
                         std::to_string(pos) + ": " + why);
  }
  void skip() {
    while (pos < s.size() && std::isspace(static_cast<unsigned char>(s[pos])))
      ++pos;
  }
  bool eat(char c) {
    if (pos < s.size() && s[pos] == c) {
      ++pos;
      return true;
    }
    return false;
  }
  Status string(std::string &out) {
    if (!eat('"'))
      return fail("expected a string");
    while (pos < s.size() && s[pos] != '"') {
      if (s[pos] == '\\' || static_cast<unsigned char>(s[pos]) < 0x20)
        return fail("escapes and control characters are not expected here");
      out += s[pos++];
    }
    if (!eat('"'))
      return fail("an unterminated string");
    return Status::ok();
  }
  Status number(double &out) {
    size_t start = pos;
    while (pos < s.size() &&
           (std::isdigit(static_cast<unsigned char>(s[pos])) ||
            std::strchr("+-.eE", s[pos])))
      ++pos;
    std::string t = s.substr(start, pos - start);
    if (t.empty()) {
      // json.dumps writes NaN and Infinity bare.
      for (const char *w : {"NaN", "Infinity", "-Infinity"})
        if (s.compare(pos, std::strlen(w), w) == 0) {
          pos += std::strlen(w);
          out =
              w[0] == 'N' ? std::nan("") : (w[0] == '-' ? -HUGE_VAL : HUGE_VAL);
          return Status::ok();
        }
      return fail("expected a value");
    }
    char *endp = nullptr;
    out = std::strtod(t.c_str(), &endp);
    if (!endp || *endp)
      pos = start;
    return (endp && !*endp) ? Status::ok() : fail("a malformed number");
  }
  Status value(JsonValue &v) {
    if (pos < s.size() && s[pos] == '"') {
      v.kind = JsonValue::String;
      return string(v.text);
    }
    if (eat('[')) {
      v.kind = JsonValue::IntList;
      skip();
      if (eat(']'))
        return Status::ok();
      while (true) {
        double d;
        if (Status st = number(d); !st)
          return st;
        if (!(d >= 0 && d <= double(int64_t(1) << 40)) || d != std::floor(d))
          return fail("a dimension must be a whole number from 0 to 2^40");
        if (v.list.size() >= 8)
          return fail("more than 8 dimensions");
        v.list.push_back(static_cast<int64_t>(d));
        skip();
        if (eat(']'))
          return Status::ok();
        if (!eat(','))
          return fail("expected ',' or ']'");
        skip();
      }
    }
    v.kind = JsonValue::Number;
    return number(v.number);
  }

  const std::string &s;
  size_t pos = 0;
};

Tensor bytesTensor(const std::string &s) {
  Tensor t(DType::U8, {static_cast<int64_t>(s.size())});
  std::memcpy(t.data(), s.data(), s.size());
  return t;
}

template <typename T>
Tensor tensorOf(DType dt, std::vector<int64_t> shape, const std::vector<T> &v) {
  Tensor t(dt, std::move(shape));
  std::memcpy(t.data(), v.data(), t.bytes());
  return t;
}

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool countOf(const std::vector<int64_t> &shape, int64_t &n) {
  n = 1;
  for (int64_t d : shape) {
    if (d <= 0 || d > (int64_t(1) << 40) || n > (int64_t(1) << 40) / d)
      return false;
    n *= d;
  }
  return !shape.empty();
}

/// Looks up `name` and checks its dtype and shape.
Status need(const std::map<std::string, const Tensor *> &tensors,
            const std::string &name, DType dt,
            const std::vector<int64_t> &shape, const Tensor *&out,
            std::vector<std::string> *used) {
  auto it = tensors.find(name);
  if (it == tensors.end())
    return Status::error("the tensor '" + name + "' is missing");
  if (it->second->dtype() != dt || it->second->shape() != shape)
    return Status::error("the tensor '" + name + "' is " +
                         it->second->describe() + ", expected " +
                         shapeString(dt, shape));
  out = it->second;
  if (used)
    used->push_back(name);
  return Status::ok();
}

template <typename T> std::vector<T> valuesOf(const Tensor *t) {
  std::vector<T> v(static_cast<size_t>(t->numel()));
  std::memcpy(v.data(), t->data(), t->bytes());
  return v;
}

Status readState(const std::map<std::string, const Tensor *> &tensors,
                 const std::string &key, std::map<std::string, JsonValue> &out,
                 std::vector<std::string> *used) {
  auto it = tensors.find(key);
  if (it == tensors.end())
    return Status::error("the tensor '" + key + "' is missing");
  const Tensor &t = *it->second;
  if (t.dtype() != DType::U8 || t.rank() != 1 || t.bytes() > kMaxStateBytes)
    return Status::error("the tensor '" + key + "' is " + t.describe() +
                         ", expected the u8 bytes of a JSON object (at most " +
                         std::to_string(kMaxStateBytes) + ")");
  std::string json(static_cast<const char *>(t.data()), t.bytes());
  if (Status s = StateParser(json).parse(out); !s)
    return Status::error("'" + key + "': " + s.text());
  if (used)
    used->push_back(key);
  return Status::ok();
}

/// A field of a quant state, checked for its kind.
Status field(const std::map<std::string, JsonValue> &st, const std::string &key,
             const std::string &name, JsonValue::Kind kind,
             const JsonValue *&out) {
  auto it = st.find(name);
  static const char *kinds[] = {"a string", "a number", "a list of integers"};
  if (it == st.end())
    return Status::error("'" + key + "' has no field \"" + name + "\"");
  if (it->second.kind != kind)
    return Status::error("'" + key + "': \"" + name + "\" is not " +
                         kinds[kind]);
  out = &it->second;
  return Status::ok();
}

Status integerField(const std::map<std::string, JsonValue> &st,
                    const std::string &key, const std::string &name,
                    int64_t &out) {
  const JsonValue *v;
  if (Status s = field(st, key, name, JsonValue::Number, v); !s)
    return s;
  if (!(v->number >= 0 && v->number <= 1e12) ||
      v->number != std::floor(v->number))
    return Status::error("'" + key + "': \"" + name +
                         "\" is not a whole number");
  out = static_cast<int64_t>(v->number);
  return Status::ok();
}

Status expectText(const std::map<std::string, JsonValue> &st,
                  const std::string &key, const std::string &name,
                  const std::string &want) {
  const JsonValue *v;
  if (Status s = field(st, key, name, JsonValue::String, v); !s)
    return s;
  if (v->text != want)
    return Status::error("'" + key + "': \"" + name + "\" is \"" + v->text +
                         "\"; kiln reads \"" + want + "\"");
  return Status::ok();
}

/// A quant state of `quantType` and the shape it records.
Status stateWithShape(const std::map<std::string, const Tensor *> &tensors,
                      const std::string &key, const char *quantType,
                      std::map<std::string, JsonValue> &st,
                      const JsonValue *&shape, std::vector<std::string> *used) {
  if (Status s = readState(tensors, key, st, used); !s)
    return s;
  if (Status s = expectText(st, key, "quant_type", quantType); !s)
    return s;
  return field(st, key, "shape", JsonValue::IntList, shape);
}

Status readNf4(const std::string &name,
               const std::map<std::string, const Tensor *> &tensors,
               QuantizedWeight &out, std::vector<std::string> *used) {
  const std::string key = name + kNf4State;
  std::map<std::string, JsonValue> st;
  const JsonValue *shape;
  if (Status s = stateWithShape(tensors, key, "nf4", st, shape, used); !s)
    return s;
  if (Status s = expectText(st, key, "dtype", "float32"); !s)
    return s;
  Nf4Tensor &t = out.nf4;
  t = Nf4Tensor();
  if (!countOf(shape->list, t.numel))
    return Status::error("'" + key + "': the shape " + shapeText(shape->list) +
                         " is empty or too large");
  if (Status s = integerField(st, key, "blocksize", t.blockSize); !s)
    return s;
  if (!validNf4BlockSize(t.blockSize))
    return Status::error("'" + key + "': \"blocksize\" " +
                         std::to_string(t.blockSize) +
                         " is not a power of two from 64 to 4096");
  t.nested = st.count("nested_absmax") || st.count("nested_blocksize") ||
             tensors.count(name + ".nested_absmax");
  out.format = Format::NF4;
  out.shape = shape->list;
  const Tensor *p;
  if (Status s =
          need(tensors, name, DType::U8, {(t.numel + 1) / 2, 1}, p, used);
      !s)
    return s;
  t.packed = valuesOf<uint8_t>(p);
  const Tensor *qmap;
  if (Status s =
          need(tensors, name + ".quant_map", DType::F32, {16}, qmap, used);
      !s)
    return s;
  if (std::memcmp(qmap->data(), kNf4Levels.data(), sizeof(float) * 16) != 0)
    return Status::error("the tensor '" + name +
                         ".quant_map' is not the NF4 levels");
  if (!t.nested) {
    const Tensor *a;
    if (Status s =
            need(tensors, name + ".absmax", DType::F32, {t.blocks()}, a, used);
        !s)
      return s;
    t.absmax = valuesOf<float>(a);
    return t.check();
  }
  if (Status s = expectText(st, key, "nested_dtype", "float32"); !s)
    return s;
  if (Status s = integerField(st, key, "nested_blocksize", t.nestedBlockSize);
      !s)
    return s;
  if (!validNf4BlockSize(t.nestedBlockSize))
    return Status::error("'" + key + "': \"nested_blocksize\" " +
                         std::to_string(t.nestedBlockSize) +
                         " is not a power of two from 64 to 4096");
  const JsonValue *offset;
  if (Status s = field(st, key, "nested_offset", JsonValue::Number, offset); !s)
    return s;
  if (!std::isfinite(offset->number))
    return Status::error("'" + key + "': \"nested_offset\" is not finite");
  t.offset = static_cast<float>(offset->number);
  const Tensor *qa, *na, *nmap;
  int64_t groups = (t.blocks() + t.nestedBlockSize - 1) / t.nestedBlockSize;
  if (Status s =
          need(tensors, name + ".absmax", DType::U8, {t.blocks()}, qa, used);
      !s)
    return s;
  if (Status s = need(tensors, name + ".nested_absmax", DType::F32, {groups},
                      na, used);
      !s)
    return s;
  if (Status s = need(tensors, name + ".nested_quant_map", DType::F32, {256},
                      nmap, used);
      !s)
    return s;
  // Any 8-bit map decodes (bitsandbytes' own differs in the last bits
  // between torch's CPU kernels), so long as its values are codes.
  const float *map = nmap->as<float>();
  for (int i = 0; i < 256; ++i) {
    if (!(map[i] >= -1.0f && map[i] <= 1.0f))
      return Status::error("the tensor '" + name + ".nested_quant_map' has " +
                           std::to_string(map[i]) + " at index " +
                           std::to_string(i) +
                           "; an 8-bit map holds values in [-1, 1]");
    t.nestedMap[i] = map[i];
  }
  t.qabsmax = valuesOf<uint8_t>(qa);
  t.nestedAbsmax = valuesOf<float>(na);
  return t.check();
}

} // namespace

uint64_t QuantizedWeight::storageBytes() const {
  switch (format) {
  case Format::Int8:
    return int8.q.size() + 4 * int8.scales.size();
  case Format::Int4:
    return int4.packed.size() + 4 * (int4.scales.size() + int4.zeros.size());
  case Format::NF4:
    return nf4.packed.size() + 4 * nf4.absmax.size() + nf4.qabsmax.size() +
           4 * nf4.nestedAbsmax.size() + (nf4.nested ? 4 : 0);
  }
  return 0;
}

Status kiln::runtime::quant::quantize(const Tensor &w, const QuantSpec &spec,
                                      QuantizedWeight &out) {
  out = QuantizedWeight();
  out.format = spec.format;
  out.shape = w.shape();
  if (w.dtype() != DType::F32)
    return Status::error("only f32 weights are quantized, not " + w.describe());
  const float *p = w.as<float>();
  switch (spec.format) {
  case Format::NF4:
    return quantizeNf4(p, w.numel(),
                       {spec.block, spec.doubleQuant, /*nested=*/256}, out.nf4);
  case Format::Int8:
  case Format::Int4:
    if (w.rank() != 2)
      return Status::error(std::string(formatName(spec.format)) +
                           " quantizes matrices [out, in], not " +
                           w.describe());
    return spec.format == Format::Int8
               ? quantizeInt8(p, w.shape()[0], w.shape()[1], out.int8)
               : quantizeInt4(p, w.shape()[0], w.shape()[1], spec.group,
                              out.int4);
  }
  return Status::error("unknown format");
}

Status kiln::runtime::quant::dequantize(const QuantizedWeight &w, Tensor &out) {
  int64_t n;
  if (!countOf(w.shape, n))
    return Status::error("a quantized weight of shape " + shapeText(w.shape));
  out = Tensor::uninitialized(DType::F32, w.shape);
  switch (w.format) {
  case Format::NF4:
    if (w.nf4.numel != n)
      return Status::error("the NF4 codes do not match the shape");
    return dequantizeNf4(w.nf4, out.as<float>());
  case Format::Int8:
    if (w.int8.rows * w.int8.cols != n)
      return Status::error("the int8 values do not match the shape");
    return dequantizeInt8(w.int8, out.as<float>());
  case Format::Int4:
    if (w.int4.rows * w.int4.cols != n)
      return Status::error("the int4 codes do not match the shape");
    return dequantizeInt4(w.int4, out.as<float>());
  }
  return Status::error("unknown format");
}

void kiln::runtime::quant::appendTensors(const std::string &name,
                                         const QuantizedWeight &w,
                                         NamedTensors &out) {
  switch (w.format) {
  case Format::NF4: {
    const Nf4Tensor &t = w.nf4;
    out.emplace_back(name, tensorOf(DType::U8,
                                    {static_cast<int64_t>(t.packed.size()), 1},
                                    t.packed));
    if (t.nested)
      out.emplace_back(name + ".absmax",
                       tensorOf(DType::U8, {t.blocks()}, t.qabsmax));
    else
      out.emplace_back(name + ".absmax",
                       tensorOf(DType::F32, {t.blocks()}, t.absmax));
    out.emplace_back(
        name + ".quant_map",
        tensorOf(DType::F32, {16},
                 std::vector<float>(kNf4Levels.begin(), kNf4Levels.end())));
    if (t.nested) {
      out.emplace_back(name + ".nested_absmax",
                       tensorOf(DType::F32,
                                {static_cast<int64_t>(t.nestedAbsmax.size())},
                                t.nestedAbsmax));
      out.emplace_back(
          name + ".nested_quant_map",
          tensorOf(DType::F32, {256},
                   std::vector<float>(t.nestedMap.begin(), t.nestedMap.end())));
    }
    out.emplace_back(name + kNf4State,
                     bytesTensor(nf4QuantStateJson(t, w.shape)));
    return;
  }
  case Format::Int8:
    out.emplace_back(name,
                     tensorOf(DType::I8, {w.int8.rows, w.int8.cols}, w.int8.q));
    out.emplace_back(name + ".scale",
                     tensorOf(DType::F32, {w.int8.rows}, w.int8.scales));
    return;
  case Format::Int4: {
    const Int4Tensor &t = w.int4;
    out.emplace_back(name,
                     tensorOf(DType::U8, {t.rows, t.rowBytes()}, t.packed));
    out.emplace_back(name + ".scale",
                     tensorOf(DType::F32, {t.rows, t.groups()}, t.scales));
    out.emplace_back(name + ".zero_point",
                     tensorOf(DType::F32, {t.rows, t.groups()}, t.zeros));
    out.emplace_back(name + kInt4State,
                     bytesTensor("{\"quant_type\": \"int4\", \"group_size\": " +
                                 std::to_string(t.group) +
                                 ", \"shape\": " + shapeText(w.shape) + "}"));
    return;
  }
  }
}

bool kiln::runtime::quant::holdsQuantized(
    const std::string &name,
    const std::map<std::string, const Tensor *> &tensors) {
  if (tensors.count(name + kNf4State) || tensors.count(name + kInt4State))
    return true;
  auto it = tensors.find(name);
  return it != tensors.end() && it->second->dtype() == DType::I8 &&
         tensors.count(name + ".scale");
}

Status kiln::runtime::quant::readQuantized(
    const std::string &name,
    const std::map<std::string, const Tensor *> &tensors, QuantizedWeight &out,
    std::vector<std::string> *used) {
  out = QuantizedWeight();
  if (tensors.count(name + kNf4State))
    return readNf4(name, tensors, out, used);
  if (tensors.count(name + kInt4State)) {
    const std::string key = name + kInt4State;
    std::map<std::string, JsonValue> st;
    const JsonValue *shape;
    if (Status s = stateWithShape(tensors, key, "int4", st, shape, used); !s)
      return s;
    int64_t n;
    if (shape->list.size() != 2 || !countOf(shape->list, n))
      return Status::error("'" + key + "': the shape " +
                           shapeText(shape->list) + " is not a matrix");
    Int4Tensor &t = out.int4;
    t.rows = shape->list[0];
    t.cols = shape->list[1];
    if (Status s = integerField(st, key, "group_size", t.group); !s)
      return s;
    if (t.group < 2 || t.group > 4096 || t.group % 2)
      return Status::error("'" + key + "': \"group_size\" " +
                           std::to_string(t.group) +
                           " is not an even number from 2 to 4096");
    out.format = Format::Int4;
    out.shape = shape->list;
    const Tensor *p, *sc, *zp;
    if (Status s =
            need(tensors, name, DType::U8, {t.rows, t.rowBytes()}, p, used);
        !s)
      return s;
    if (Status s = need(tensors, name + ".scale", DType::F32,
                        {t.rows, t.groups()}, sc, used);
        !s)
      return s;
    if (Status s = need(tensors, name + ".zero_point", DType::F32,
                        {t.rows, t.groups()}, zp, used);
        !s)
      return s;
    t.packed = valuesOf<uint8_t>(p);
    t.scales = valuesOf<float>(sc);
    t.zeros = valuesOf<float>(zp);
    return t.check();
  }
  auto it = tensors.find(name);
  if (it == tensors.end())
    return Status::error("the tensor '" + name + "' is missing");
  const Tensor &q = *it->second;
  if (q.dtype() != DType::I8 || q.rank() != 2)
    return Status::error("the tensor '" + name + "' is " + q.describe() +
                         ", not a quantized weight (an i8 matrix with a "
                         "scale, or a quant_state)");
  Int8Tensor &t = out.int8;
  t.rows = q.shape()[0];
  t.cols = q.shape()[1];
  out.format = Format::Int8;
  out.shape = q.shape();
  const Tensor *sc;
  if (Status s = need(tensors, name + ".scale", DType::F32, {t.rows}, sc, used);
      !s)
    return s;
  if (used)
    used->push_back(name);
  t.q.resize(static_cast<size_t>(q.numel()));
  std::memcpy(t.q.data(), q.data(), q.bytes());
  t.scales = valuesOf<float>(sc);
  return t.check();
}

QuantizedWeight
kiln::runtime::quant::toQuantizedWeight(const QuantView &w,
                                        const std::vector<int64_t> &shape) {
  QuantizedWeight q;
  q.format = w.format;
  q.shape = shape;
  int64_t n = w.rows * w.cols;
  switch (w.format) {
  case Format::Int8: {
    Int8Tensor &t = q.int8;
    t.rows = w.rows;
    t.cols = w.cols;
    const int8_t *codes = reinterpret_cast<const int8_t *>(w.codes);
    t.q.assign(codes, codes + n);
    t.scales.assign(w.scales, w.scales + w.rows);
    break;
  }
  case Format::Int4: {
    Int4Tensor &t = q.int4;
    t.rows = w.rows;
    t.cols = w.cols;
    t.group = w.block;
    t.packed.assign(w.codes, w.codes + t.rows * t.rowBytes());
    t.scales.assign(w.scales, w.scales + t.rows * t.groups());
    t.zeros.assign(w.zeros, w.zeros + t.rows * t.groups());
    break;
  }
  case Format::NF4: {
    Nf4Tensor &t = q.nf4;
    t.numel = n;
    t.blockSize = w.block;
    t.packed.assign(w.codes, w.codes + (n + 1) / 2);
    int64_t blocks = t.blocks();
    t.nested = w.absmaxCodes != nullptr;
    if (!t.nested) {
      t.absmax.assign(w.absmax, w.absmax + blocks);
      break;
    }
    t.nestedBlockSize = w.nestedBlock;
    t.qabsmax.assign(w.absmaxCodes, w.absmaxCodes + blocks);
    int64_t groups = (blocks + w.nestedBlock - 1) / w.nestedBlock;
    t.nestedAbsmax.assign(w.nestedAbsmax, w.nestedAbsmax + groups);
    std::copy(w.nestedMap, w.nestedMap + 256, t.nestedMap.begin());
    t.offset = w.offset;
    break;
  }
  }
  return q;
}
