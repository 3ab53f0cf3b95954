//===- Json.h - a small JSON reader for tokenizer and config files -*- C++ -*-//
//
// Hugging Face directories describe tokenizers and models in JSON
// (tokenizer.json, vocab.json, config.json). The runtime has no LLVM, so it
// reads them with this parser: a DOM of values, each remembering its byte
// offset for error messages. Nesting is bounded (kMaxDepth), strings are
// checked UTF-8 and \u escapes (surrogate pairs included) are decoded.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_JSON_H
#define KILN_RUNTIME_JSON_H

#include "runtime/Tensor.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kiln::runtime {

struct JsonValue {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0;
  bool isInteger = false; // a number written without fraction or exponent
  int64_t integer = 0;    // its value, when isInteger
  std::string string;
  std::vector<JsonValue> items;                           // Array
  std::vector<std::pair<std::string, JsonValue>> members; // Object, in order
  size_t offset = 0; // where the value starts in the text

  /// The member named `key` of an object (the last one if repeated), or
  /// null when absent or when this is not an object.
  const JsonValue *get(const std::string &key) const;
  bool isString() const { return kind == Kind::String; }
  bool isObject() const { return kind == Kind::Object; }
  bool isArray() const { return kind == Kind::Array; }
  /// "an object", "a string", ... for error messages.
  const char *kindName() const;
};

constexpr int kMaxJsonDepth = 128;

/// `s` as a JSON string literal, quotes included (for the JSON kiln writes:
/// traces, settings, trainer state).
std::string jsonQuote(const std::string &s);

/// Parses a whole JSON document. Errors name `what` and the byte offset.
Status parseJson(const std::string &text, JsonValue &out,
                 const std::string &what);
/// Reads and parses a JSON file of at most `maxBytes`.
Status readJsonFile(const std::string &path, JsonValue &out, uint64_t maxBytes);

} // namespace kiln::runtime

#endif
