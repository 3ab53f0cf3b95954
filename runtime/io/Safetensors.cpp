//===- Safetensors.cpp - the safetensors weight format --------------------===//
#include "runtime/Safetensors.h"
#include "runtime/File.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>

using namespace kiln::runtime;

namespace {

/// Reads a safetensors JSON header straight into entries, one tensor at a
/// time: no document tree, so memory and time follow the entries kept, and
/// parsing stops as soon as the header lists more tensors than the caller
/// can use. Errors give the byte offset in the header.
class HeaderParser {
public:
  struct Entry {
    std::string name;
    std::string dtype;
    bool haveDtype = false, haveShape = false, shapeOk = true;
    std::vector<int64_t> shape;
    std::vector<int64_t> offsets;
    bool offsetsOk = true;
    bool isObject = true;
  };

  HeaderParser(const std::string &text, size_t maxTensors)
      : s(text), maxTensors(maxTensors) {}

  /// Fills `entries`; on failure `error` says why and where.
  bool parse(std::vector<Entry> &entries, std::string &error) {
    skip();
    if (pos >= s.size() || s[pos] != '{') {
      if (pos < s.size() && (s[pos] == '[' || s[pos] == '"' || s[pos] == '-' ||
                             (s[pos] >= '0' && s[pos] <= '9')))
        return fail(error, "the header must be a JSON object", false);
      why = pos >= s.size() ? "unexpected end" : "unexpected character";
      return fail(error, why, true);
    }
    bool tooMany = false;
    bool ok = elements([&](std::string &key) {
      if (key == "__metadata__")
        return skipValue(1);
      if (entries.size() == maxTensors) {
        tooMany = true;
        return false;
      }
      entries.emplace_back();
      entries.back().name = std::move(key);
      return entry(entries.back());
    });
    if (tooMany)
      return fail(error,
                  "the header lists more than " + std::to_string(maxTensors) +
                      " tensors, " + limitReason,
                  false);
    if (!ok)
      return fail(error, why, true);
    return finish(error);
  }

  /// Completes the "more than N tensors" message ("the most the model
  /// uses", ...).
  std::string limitReason = "the most kiln reads from one file";

private:
  bool finish(std::string &error) {
    skip();
    if (pos != s.size()) {
      error = "unexpected text after the JSON header at byte " +
              std::to_string(pos);
      return false;
    }
    return true;
  }
  bool fail(std::string &error, const std::string &msg, bool json) {
    error = json ? "malformed JSON header at byte " + std::to_string(pos) +
                       ": " + msg
                 : msg;
    return false;
  }
  void skip() {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\n' ||
                              s[pos] == '\r' || s[pos] == '\t'))
      ++pos;
  }
  bool failWith(const char *w) {
    why = w;
    return false;
  }
  bool colon() {
    skip();
    if (pos >= s.size() || s[pos] != ':')
      return failWith("expected ':'");
    ++pos;
    skip();
    return true;
  }
  /// The members of the object or the items of the array whose '{' or '['
  /// is at `pos`: `item(key)` reads each value (`key` is empty in arrays).
  template <typename Item> bool elements(Item item) {
    char close = s[pos] == '{' ? '}' : ']';
    bool object = close == '}';
    ++pos;
    skip();
    if (pos < s.size() && s[pos] == close) {
      ++pos;
      return true;
    }
    for (;;) {
      skip();
      std::string key;
      if (object && (!string(key) || !colon()))
        return false;
      if (!item(key))
        return false;
      skip();
      if (pos < s.size() && s[pos] == ',') {
        ++pos;
        continue;
      }
      if (pos < s.size() && s[pos] == close) {
        ++pos;
        return true;
      }
      return failWith(object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
  }
  /// One tensor's object: dtype, shape and data_offsets; other keys are
  /// skipped.
  bool entry(Entry &e) {
    if (pos >= s.size() || s[pos] != '{') {
      e.isObject = false;
      return skipValue(1);
    }
    return elements([&](const std::string &key) {
      if (key == "dtype" && pos < s.size() && s[pos] == '"') {
        e.dtype.clear();
        e.haveDtype = true;
        return string(e.dtype);
      }
      if (key == "shape" || key == "data_offsets") {
        bool &ok = key == "shape" ? e.shapeOk : e.offsetsOk;
        std::vector<int64_t> &v = key == "shape" ? e.shape : e.offsets;
        if (key == "shape")
          e.haveShape = true;
        v.clear();
        return integers(v, ok);
      }
      return skipValue(2);
    });
  }
  /// An array of integers into `v`. A value that is not a non-negative
  /// integer clears `ok` (reported with the tensor's name); a number with a
  /// fraction or exponent, or one too large, is malformed.
  bool integers(std::vector<int64_t> &v, bool &ok) {
    if (pos >= s.size() || s[pos] != '[') {
      ok = false;
      return skipValue(2);
    }
    return elements([&](const std::string &) {
      if (pos >= s.size() ||
          !(s[pos] == '-' || (s[pos] >= '0' && s[pos] <= '9'))) {
        ok = false;
        return skipValue(3);
      }
      int64_t n;
      if (!number(n))
        return false;
      if (n < 0 || v.size() >= 64)
        ok = false;
      else
        v.push_back(n);
      return true;
    });
  }
  bool number(int64_t &out) {
    size_t start = pos;
    if (s[pos] == '-')
      ++pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9')
      ++pos;
    if (pos - start > 18)
      return failWith("number too large");
    if (pos < s.size() && (s[pos] == '.' || s[pos] == 'e' || s[pos] == 'E'))
      return failWith("expected an integer");
    if (pos == start + (s[start] == '-'))
      return failWith("expected a digit");
    out = std::stoll(s.substr(start, pos - start));
    return true;
  }
  /// Any JSON value, checked but not kept.
  bool skipValue(int depth) {
    if (depth > 16)
      return failWith("nested too deeply");
    skip();
    if (pos >= s.size())
      return failWith("unexpected end");
    char c = s[pos];
    if (c == '{' || c == '[')
      return elements(
          [&](const std::string &) { return skipValue(depth + 1); });
    if (c == '"') {
      std::string ignored;
      return string(ignored);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      int64_t ignored;
      return number(ignored);
    }
    for (const char *word : {"true", "false", "null"})
      if (s.compare(pos, std::strlen(word), word) == 0) {
        pos += std::strlen(word);
        return true;
      }
    return failWith("unexpected character");
  }
  bool string(std::string &out) {
    if (pos >= s.size() || s[pos] != '"')
      return failWith("expected a string");
    ++pos;
    while (pos < s.size() && s[pos] != '"') {
      char c = s[pos++];
      if (c == '\\') {
        if (pos >= s.size())
          return failWith("unterminated escape");
        char e = s[pos++];
        switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'u': {
          if (pos + 4 > s.size())
            return failWith("short \\u escape");
          unsigned v = 0;
          for (int i = 0; i < 4; ++i) {
            char h = s[pos++];
            int d = h >= '0' && h <= '9'   ? h - '0'
                    : h >= 'a' && h <= 'f' ? h - 'a' + 10
                    : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                           : -1;
            if (d < 0)
              return failWith("bad \\u escape");
            v = v * 16 + d;
          }
          if (v < 0x80) {
            out += static_cast<char>(v);
          } else if (v < 0x800) {
            out += static_cast<char>(0xC0 | (v >> 6));
            out += static_cast<char>(0x80 | (v & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (v >> 12));
            out += static_cast<char>(0x80 | ((v >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (v & 0x3F));
          }
          break;
        }
        default:
          return failWith("unknown escape");
        }
      } else {
        out += c;
      }
    }
    if (pos >= s.size())
      return failWith("unterminated string");
    ++pos;
    return true;
  }
  const std::string &s;
  size_t maxTensors;
  size_t pos = 0;
  const char *why = "";
};

bool dtypeFrom(const std::string &s, DType &t) {
  static const std::map<std::string, DType> names = {
      {"F32", DType::F32},   {"F16", DType::F16}, {"BF16", DType::BF16},
      {"F64", DType::F64},   {"I32", DType::I32}, {"I64", DType::I64},
      {"BOOL", DType::Bool}, {"U8", DType::U8},   {"I8", DType::I8}};
  auto it = names.find(s);
  if (it == names.end())
    return false;
  t = it->second;
  return true;
}

const char *dtypeTo(DType t) {
  switch (t) {
  case DType::F32:
    return "F32";
  case DType::F16:
    return "F16";
  case DType::BF16:
    return "BF16";
  case DType::F64:
    return "F64";
  case DType::I32:
    return "I32";
  case DType::I64:
    return "I64";
  case DType::Bool:
    return "BOOL";
  case DType::U8:
    return "U8";
  case DType::I8:
    return "I8";
  default:
    return nullptr;
  }
}

std::string escape(const std::string &s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\')
      o += '\\';
    o += c;
  }
  return o;
}

} // namespace

Status kiln::runtime::readSafetensors(const std::string &path,
                                      NamedTensors &out, size_t maxTensors) {
  auto bad = [&](const std::string &msg) {
    return Status::error(path + ": " + msg);
  };
  std::ifstream f;
  uint64_t size = 0;
  if (Status s = openInput(path, f, size); !s)
    return s;
  unsigned char lenBytes[8];
  if (size < 8 || !f.read(reinterpret_cast<char *>(lenBytes), 8))
    return bad("too short for a safetensors file (no 8-byte header size)");
  uint64_t headerLen = 0;
  for (int i = 7; i >= 0; --i)
    headerLen = (headerLen << 8) | lenBytes[i];
  if (headerLen > kMaxSafetensorsHeader)
    return bad("header size " + std::to_string(headerLen) +
               " exceeds the limit of " +
               std::to_string(kMaxSafetensorsHeader) + " bytes");
  if (headerLen > size - 8)
    return bad("header size " + std::to_string(headerLen) +
               " is larger than the file");
  std::string header(headerLen, '\0');
  if (!f.read(header.data(), headerLen))
    return bad("cannot read the header");
  std::vector<HeaderParser::Entry> parsed;
  std::string error;
  HeaderParser parser(header, maxTensors);
  if (maxTensors != kMaxSafetensorsTensors)
    parser.limitReason = "but a checkpoint of this model holds at most " +
                         std::to_string(maxTensors);
  if (!parser.parse(parsed, error))
    return bad(error);
  uint64_t dataSize = size - 8 - headerLen;
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  entries.reserve(parsed.size());
  for (HeaderParser::Entry &p : parsed) {
    std::string where = "tensor '" + clipName(p.name) + "': ";
    if (!p.isObject)
      return bad(where + "entry is not an object");
    if (!p.haveDtype)
      return bad(where + "missing 'dtype'");
    Entry e;
    e.name = std::move(p.name);
    if (!dtypeFrom(p.dtype, e.dtype))
      return bad(where + "unsupported dtype '" + clipName(p.dtype) +
                 "'; kiln reads F32, F16, BF16, F64, I32, I64, BOOL, U8 "
                 "and I8");
    if (!p.haveShape)
      return bad(where + "missing 'shape'");
    if (!p.shapeOk)
      return bad(where + "invalid dimension in 'shape'");
    uint64_t count = 1;
    for (int64_t d : p.shape) {
      if (d > (int64_t(1) << 40))
        return bad(where + "invalid dimension in 'shape'");
      e.shape.push_back(d);
      count *= static_cast<uint64_t>(d);
      if (count > (uint64_t(1) << 40))
        return bad(where + "too many elements");
    }
    if (!p.offsetsOk || p.offsets.size() != 2 || p.offsets[1] < p.offsets[0])
      return bad(where + "'data_offsets' must be [begin, end] with begin <= "
                         "end");
    e.begin = p.offsets[0];
    e.end = p.offsets[1];
    if (e.end > dataSize)
      return bad(where + "data_offsets [" + std::to_string(e.begin) + ", " +
                 std::to_string(e.end) + ") run past the " +
                 std::to_string(dataSize) + "-byte data section");
    uint64_t want = count * dtypeSize(e.dtype);
    if (e.end - e.begin != want)
      return bad(where + "covers " + std::to_string(e.end - e.begin) +
                 " bytes, but " + shapeString(e.dtype, e.shape) + " needs " +
                 std::to_string(want));
    entries.push_back(std::move(e));
  }
  {
    std::vector<const std::string *> names;
    names.reserve(entries.size());
    for (const Entry &e : entries)
      names.push_back(&e.name);
    std::sort(
        names.begin(), names.end(),
        [](const std::string *a, const std::string *b) { return *a < *b; });
    for (size_t i = 1; i < names.size(); ++i)
      if (*names[i] == *names[i - 1])
        return bad("tensor '" + clipName(*names[i]) + "' appears twice");
  }
  std::vector<const Entry *> sorted;
  for (const Entry &e : entries)
    sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(),
            [](const Entry *a, const Entry *b) { return a->begin < b->begin; });
  uint64_t at = 0;
  for (const Entry *e : sorted) {
    if (e->begin < at)
      return bad("tensor '" + e->name + "' overlaps the tensor before it");
    if (e->begin > at)
      return bad("bytes [" + std::to_string(at) + ", " +
                 std::to_string(e->begin) +
                 ") of the data section belong to no tensor");
    at = e->end;
  }
  if (at != dataSize)
    return bad("bytes [" + std::to_string(at) + ", " +
               std::to_string(dataSize) +
               ") of the data section belong to no tensor");
  out.clear();
  for (const Entry &e : entries) {
    Tensor t(e.dtype, e.shape);
    f.seekg(static_cast<std::streamoff>(8 + headerLen + e.begin));
    if (!f.read(static_cast<char *>(t.data()),
                static_cast<std::streamsize>(t.bytes())))
      return bad("tensor '" + e.name + "': cannot read its data");
    out.emplace_back(e.name, std::move(t));
  }
  return Status::ok();
}

Status kiln::runtime::writeSafetensors(const std::string &path,
                                       const NamedTensors &tensors) {
  std::string header = "{";
  uint64_t at = 0;
  for (const auto &[name, t] : tensors) {
    const char *dt = dtypeTo(t.dtype());
    if (!dt)
      return Status::error(path + ": tensor '" + name +
                           "' has an element type safetensors cannot hold "
                           "here");
    header += (header.size() > 1 ? "," : "") + std::string("\"") +
              escape(name) + "\":{\"dtype\":\"" + dt + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape().size(); ++i)
      header += (i ? "," : "") + std::to_string(t.shape()[i]);
    header += "],\"data_offsets\":[" + std::to_string(at) + "," +
              std::to_string(at + t.bytes()) + "]}";
    at += t.bytes();
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  uint64_t n = header.size();
  char len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  std::vector<std::pair<const void *, size_t>> chunks = {
      {len, 8}, {header.data(), header.size()}};
  for (const auto &[name, t] : tensors)
    chunks.emplace_back(t.data(), t.bytes());
  return writeFileAtomically(path, chunks);
}
