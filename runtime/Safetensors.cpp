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

/// Just enough JSON for safetensors headers: objects, arrays, strings,
/// integers. Reports the byte offset of what it cannot read.
struct Json {
  enum Kind { Null, Object, Array, String, Number } kind = Null;
  std::string str;
  int64_t num = 0;
  std::vector<std::pair<std::string, Json>> members;
  std::vector<Json> items;
};

class JsonParser {
public:
  JsonParser(const std::string &text) : s(text) {}
  bool parse(Json &out, std::string &error) {
    if (!value(out, 0)) {
      error =
          "malformed JSON header at byte " + std::to_string(pos) + ": " + why;
      return false;
    }
    skip();
    if (pos != s.size()) {
      error = "unexpected text after the JSON header at byte " +
              std::to_string(pos);
      return false;
    }
    return true;
  }

private:
  void skip() {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\n' ||
                              s[pos] == '\r' || s[pos] == '\t'))
      ++pos;
  }
  bool failWith(const char *w) {
    why = w;
    return false;
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
  bool value(Json &out, int depth) {
    if (depth > 16)
      return failWith("nested too deeply");
    skip();
    if (pos >= s.size())
      return failWith("unexpected end");
    char c = s[pos];
    if (c == '{') {
      out.kind = Json::Object;
      ++pos;
      skip();
      if (pos < s.size() && s[pos] == '}') {
        ++pos;
        return true;
      }
      for (;;) {
        skip();
        std::string key;
        if (!string(key))
          return false;
        skip();
        if (pos >= s.size() || s[pos] != ':')
          return failWith("expected ':'");
        ++pos;
        Json v;
        if (!value(v, depth + 1))
          return false;
        out.members.emplace_back(std::move(key), std::move(v));
        skip();
        if (pos < s.size() && s[pos] == ',') {
          ++pos;
          continue;
        }
        if (pos < s.size() && s[pos] == '}') {
          ++pos;
          return true;
        }
        return failWith("expected ',' or '}'");
      }
    }
    if (c == '[') {
      out.kind = Json::Array;
      ++pos;
      skip();
      if (pos < s.size() && s[pos] == ']') {
        ++pos;
        return true;
      }
      for (;;) {
        Json v;
        if (!value(v, depth + 1))
          return false;
        out.items.push_back(std::move(v));
        skip();
        if (pos < s.size() && s[pos] == ',') {
          ++pos;
          continue;
        }
        if (pos < s.size() && s[pos] == ']') {
          ++pos;
          return true;
        }
        return failWith("expected ',' or ']'");
      }
    }
    if (c == '"') {
      out.kind = Json::String;
      return string(out.str);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      out.kind = Json::Number;
      size_t start = pos;
      if (c == '-')
        ++pos;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9')
        ++pos;
      if (pos - start > 18)
        return failWith("number too large");
      if (pos < s.size() && (s[pos] == '.' || s[pos] == 'e' || s[pos] == 'E'))
        return failWith("expected an integer");
      out.num = std::stoll(s.substr(start, pos - start));
      return true;
    }
    return failWith("unexpected character");
  }

  const std::string &s;
  size_t pos = 0;
  const char *why = "";
};

bool dtypeFrom(const std::string &s, DType &t) {
  static const std::map<std::string, DType> names = {{"F32", DType::F32},
                                                     {"F64", DType::F64},
                                                     {"I32", DType::I32},
                                                     {"I64", DType::I64},
                                                     {"BOOL", DType::Bool}};
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
  case DType::F64:
    return "F64";
  case DType::I32:
    return "I32";
  case DType::I64:
    return "I64";
  case DType::Bool:
    return "BOOL";
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
                                      NamedTensors &out) {
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
  Json root;
  std::string error;
  if (!JsonParser(header).parse(root, error))
    return bad(error);
  if (root.kind != Json::Object)
    return bad("the header must be a JSON object");
  uint64_t dataSize = size - 8 - headerLen;
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto &[name, v] : root.members) {
    if (name == "__metadata__")
      continue;
    auto field = [&](const char *key) -> const Json * {
      for (const auto &m : v.members)
        if (m.first == key)
          return &m.second;
      return nullptr;
    };
    std::string where = "tensor '" + name + "': ";
    if (v.kind != Json::Object)
      return bad(where + "entry is not an object");
    const Json *dt = field("dtype"), *shape = field("shape"),
               *offs = field("data_offsets");
    if (!dt || dt->kind != Json::String)
      return bad(where + "missing 'dtype'");
    Entry e;
    e.name = name;
    if (!dtypeFrom(dt->str, e.dtype))
      return bad(where + "unsupported dtype '" + dt->str +
                 "'; kiln reads F32, F64, I32, I64 and BOOL");
    if (!shape || shape->kind != Json::Array)
      return bad(where + "missing 'shape'");
    uint64_t count = 1;
    for (const Json &d : shape->items) {
      if (d.kind != Json::Number || d.num < 0 || d.num > (int64_t(1) << 40))
        return bad(where + "invalid dimension in 'shape'");
      e.shape.push_back(d.num);
      count *= static_cast<uint64_t>(d.num);
      if (count > (uint64_t(1) << 40))
        return bad(where + "too many elements");
    }
    if (!offs || offs->kind != Json::Array || offs->items.size() != 2 ||
        offs->items[0].kind != Json::Number ||
        offs->items[1].kind != Json::Number || offs->items[0].num < 0 ||
        offs->items[1].num < offs->items[0].num)
      return bad(where + "'data_offsets' must be [begin, end] with begin <= "
                         "end");
    e.begin = offs->items[0].num;
    e.end = offs->items[1].num;
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
