//===- Json.cpp - a small JSON reader for tokenizer and config files ------===//
#include "runtime/Json.h"
#include "runtime/File.h"
#include "runtime/tokenizer/Unicode.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace kiln::runtime;

namespace {

class Parser {
public:
  Parser(const std::string &text, const std::string &what)
      : s(text), what(what) {}

  Status document(JsonValue &out) {
    if (!value(out, 0))
      return Status::error(error);
    skipSpace();
    if (pos != s.size())
      return Status::error(what +
                           ": unexpected text after the JSON value "
                           "at byte offset " +
                           std::to_string(pos));
    return Status::ok();
  }

private:
  bool fail(const std::string &msg) {
    error = what + ": " + msg + " at byte offset " + std::to_string(pos);
    return false;
  }
  void skipSpace() {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t' ||
                              s[pos] == '\n' || s[pos] == '\r'))
      ++pos;
  }
  bool literal(const char *word) {
    size_t n = std::strlen(word);
    if (s.compare(pos, n, word) != 0)
      return fail("invalid JSON value");
    pos += n;
    return true;
  }

  bool value(JsonValue &v, int depth) {
    skipSpace();
    v.offset = pos;
    if (pos >= s.size())
      return fail("unexpected end of JSON");
    if (depth > kMaxJsonDepth)
      return fail("JSON nested deeper than " + std::to_string(kMaxJsonDepth));
    char c = s[pos];
    if (c == '{')
      return object(v, depth);
    if (c == '[')
      return array(v, depth);
    if (c == '"') {
      v.kind = JsonValue::Kind::String;
      return string(v.string);
    }
    if (c == 't' || c == 'f') {
      v.kind = JsonValue::Kind::Bool;
      v.boolean = c == 't';
      return literal(c == 't' ? "true" : "false");
    }
    if (c == 'n')
      return literal("null");
    return number(v);
  }

  bool object(JsonValue &v, int depth) {
    v.kind = JsonValue::Kind::Object;
    ++pos;
    skipSpace();
    if (pos < s.size() && s[pos] == '}') {
      ++pos;
      return true;
    }
    while (true) {
      skipSpace();
      if (pos >= s.size() || s[pos] != '"')
        return fail("expected a string key");
      std::string key;
      if (!string(key))
        return false;
      skipSpace();
      if (pos >= s.size() || s[pos] != ':')
        return fail("expected ':'");
      ++pos;
      v.members.emplace_back(std::move(key), JsonValue());
      if (!value(v.members.back().second, depth + 1))
        return false;
      skipSpace();
      if (pos < s.size() && s[pos] == ',') {
        ++pos;
        continue;
      }
      if (pos < s.size() && s[pos] == '}') {
        ++pos;
        return true;
      }
      return fail("expected ',' or '}'");
    }
  }

  bool array(JsonValue &v, int depth) {
    v.kind = JsonValue::Kind::Array;
    ++pos;
    skipSpace();
    if (pos < s.size() && s[pos] == ']') {
      ++pos;
      return true;
    }
    while (true) {
      v.items.emplace_back();
      if (!value(v.items.back(), depth + 1))
        return false;
      skipSpace();
      if (pos < s.size() && s[pos] == ',') {
        ++pos;
        continue;
      }
      if (pos < s.size() && s[pos] == ']') {
        ++pos;
        return true;
      }
      return fail("expected ',' or ']'");
    }
  }

  bool hex4(uint32_t &cp) {
    if (s.size() - pos < 4)
      return fail("truncated \\u escape");
    cp = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s[pos + k];
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (d < 0)
        return fail("invalid \\u escape");
      cp = cp * 16 + static_cast<uint32_t>(d);
    }
    pos += 4;
    return true;
  }

  bool string(std::string &out) {
    ++pos; // the opening quote
    while (true) {
      if (pos >= s.size())
        return fail("unterminated string");
      unsigned char c = static_cast<unsigned char>(s[pos]);
      if (c == '"') {
        ++pos;
        return true;
      }
      if (c < 0x20)
        return fail("control character in a string");
      if (c != '\\') {
        size_t n = utf8Length(s, pos);
        if (!n)
          return fail("invalid UTF-8 in a string");
        out.append(s, pos, n);
        pos += n;
        continue;
      }
      if (++pos >= s.size())
        return fail("unterminated string");
      char e = s[pos++];
      switch (e) {
      case '"':
        out += '"';
        break;
      case '\\':
        out += '\\';
        break;
      case '/':
        out += '/';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        uint32_t cp;
        if (!hex4(cp))
          return false;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          uint32_t low;
          if (s.compare(pos, 2, "\\u") != 0)
            return fail("unpaired surrogate in a \\u escape");
          pos += 2;
          if (!hex4(low))
            return false;
          if (low < 0xDC00 || low > 0xDFFF)
            return fail("unpaired surrogate in a \\u escape");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return fail("unpaired surrogate in a \\u escape");
        }
        unicode::appendUtf8(cp, out);
        break;
      }
      default:
        --pos;
        return fail("invalid escape in a string");
      }
    }
  }

  bool number(JsonValue &v) {
    size_t start = pos;
    if (pos < s.size() && s[pos] == '-')
      ++pos;
    size_t digits = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9')
      ++pos;
    if (pos == digits) {
      pos = start;
      return fail("invalid JSON value");
    }
    bool integer = true;
    if (pos < s.size() && s[pos] == '.') {
      integer = false;
      ++pos;
      size_t frac = pos;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9')
        ++pos;
      if (pos == frac)
        return fail("invalid number");
    }
    if (pos < s.size() && (s[pos] == 'e' || s[pos] == 'E')) {
      integer = false;
      ++pos;
      if (pos < s.size() && (s[pos] == '+' || s[pos] == '-'))
        ++pos;
      size_t exp = pos;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9')
        ++pos;
      if (pos == exp)
        return fail("invalid number");
    }
    std::string text = s.substr(start, pos - start);
    v.kind = JsonValue::Kind::Number;
    v.number = std::strtod(text.c_str(), nullptr);
    if (integer && pos - digits <= 18) {
      v.isInteger = true;
      v.integer = std::strtoll(text.c_str(), nullptr, 10);
    }
    return true;
  }

  const std::string &s;
  const std::string &what;
  size_t pos = 0;
  std::string error;
};

} // namespace

const JsonValue *JsonValue::get(const std::string &key) const {
  const JsonValue *found = nullptr;
  for (const auto &[name, value] : members)
    if (name == key)
      found = &value;
  return found;
}

const char *JsonValue::kindName() const {
  switch (kind) {
  case Kind::Null:
    return "null";
  case Kind::Bool:
    return "a boolean";
  case Kind::Number:
    return "a number";
  case Kind::String:
    return "a string";
  case Kind::Array:
    return "an array";
  case Kind::Object:
    return "an object";
  }
  return "a value";
}

Status kiln::runtime::parseJson(const std::string &text, JsonValue &out,
                                const std::string &what) {
  out = JsonValue();
  return Parser(text, what).document(out);
}

Status kiln::runtime::readJsonFile(const std::string &path, JsonValue &out,
                                   uint64_t maxBytes) {
  std::string text;
  if (Status s = readFile(path, text, maxBytes, "JSON file"); !s)
    return s;
  return parseJson(text, out, path);
}

std::string kiln::runtime::jsonQuote(const std::string &s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}
