//===- Load.cpp - tokenizers from their usual files -----------------------===//
//
// Tokenizer::load(spec). `spec` is a file, a directory, or either behind a
// kind ("gpt2:DIR"). Files are recognized by name:
//
//   *.bin                          llama2.c's tokenizer.bin       llama2c
//   *.model                        a SentencePiece model sentencepiece
//   tokenizer.json                 Hugging Face's tokenizers file:
//                                  byte-level BPE -> gpt2, WordPiece ->
//                                  wordpiece
//   vocab.json + merges.txt,       GPT-2's BPE (either file names  gpt2
//   encoder.json + vocab.bpe       its partner in the directory)
//   *.txt                          a BERT vocab.txt                wordpiece
//
// A directory is searched for tokenizer.model, spiece.model, tokenizer.json,
// vocab.json + merges.txt, encoder.json + vocab.bpe, vocab.txt and
// tokenizer.bin, in that order (a Hugging Face Llama directory has both
// tokenizer.model and a tokenizer.json; the .model is the reference).
// Every file is bounded in size before it is read; errors name the file and
// the line, byte offset or JSON field.
//
//===----------------------------------------------------------------------===//
#include "runtime/File.h"
#include "runtime/Json.h"
#include "runtime/tokenizer/Codec.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

using namespace kiln::runtime;
using namespace kiln::runtime::tokenizer;
namespace fs = std::filesystem;

namespace {

const char *const kKinds[] = {"gpt2", "wordpiece", "sentencepiece", "llama2c"};

std::string join(const fs::path &dir, const char *name) {
  return (dir / name).string();
}

std::string baseName(const std::string &path) {
  return fs::path(path).filename().string();
}

bool endsWith(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Status readText(const std::string &path, std::string &out,
                const std::string &what) {
  return readFile(path, out, kMaxTokenizerFile, what);
}

/// Lines without their "\n" (and a "\r" before it); no empty last line.
std::vector<std::string> lines(const std::string &text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos)
      end = text.size();
    std::string line = text.substr(at, end - at);
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    out.push_back(std::move(line));
    at = end + 1;
  }
  return out;
}

/// A {piece: id} object as dense pieces: every id in [0, n) exactly once.
Status densePieces(const JsonValue &vocab, const std::string &where,
                   std::vector<std::string> &pieces) {
  if (!vocab.isObject())
    return Status::error(where + " is " + vocab.kindName() +
                         ", not an object of piece: id");
  size_t n = vocab.members.size();
  pieces.assign(n, std::string());
  std::vector<bool> seen(n, false);
  for (const auto &[piece, id] : vocab.members) {
    if (!id.isInteger || id.integer < 0 ||
        static_cast<uint64_t>(id.integer) >= n)
      return Status::error(where + ": the id of '" + piece +
                           "' at byte offset " + std::to_string(id.offset) +
                           " is not an integer in [0, " + std::to_string(n) +
                           ")");
    if (seen[id.integer])
      return Status::error(where + ": id " + std::to_string(id.integer) +
                           " at byte offset " + std::to_string(id.offset) +
                           " is given to two pieces");
    seen[id.integer] = true;
    pieces[id.integer] = piece;
  }
  return Status::ok();
}

/// Marks `<|endoftext|>` special and EOS when the vocabulary has it.
void gpt2Specials(TokenizerParts &parts) {
  for (size_t i = 0; i < parts.pieces.size(); ++i)
    if (parts.pieces[i] == "<|endoftext|>") {
      parts.eos = static_cast<int32_t>(i);
      if (std::find(parts.special.begin(), parts.special.end(), parts.eos) ==
          parts.special.end())
        parts.special.push_back(parts.eos);
    }
}

Status build(TokenizerParts parts, const std::string &path, Tokenizer &out) {
  if (Status s = Tokenizer::fromParts(std::move(parts), out); !s)
    return Status::error(path + ": " + s.text());
  return Status::ok();
}

/// GPT-2's vocab.json/encoder.json with merges.txt/vocab.bpe.
Status loadBpeFiles(const std::string &vocabPath, const std::string &mergesPath,
                    Tokenizer &out) {
  JsonValue vocab;
  if (Status s = readJsonFile(vocabPath, vocab, kMaxTokenizerFile); !s)
    return s;
  TokenizerParts parts;
  parts.kind = "gpt2";
  if (Status s = densePieces(vocab, vocabPath, parts.pieces); !s)
    return s;
  std::string text;
  if (Status s = readText(mergesPath, text, "BPE merges file"); !s)
    return s;
  std::vector<std::string> all = lines(text);
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i].empty() || (i == 0 && all[i].rfind("#version", 0) == 0))
      continue;
    parts.merges.push_back(all[i]);
  }
  gpt2Specials(parts);
  return build(std::move(parts), vocabPath + " with " + mergesPath, out);
}

/// Whether a WordPiece vocabulary is cased: tokenizer_config.json's
/// do_lower_case when the directory has one, else whether any piece
/// outside [SPECIAL] tokens has an ASCII capital (bert-base-cased's has
/// thousands, bert-base-uncased's none).
Status vocabIsCased(const std::vector<std::string> &pieces,
                    const std::string &vocabPath, bool &cased) {
  std::string config =
      join(fs::path(vocabPath).parent_path(), "tokenizer_config.json");
  if (isRegularFile(config)) {
    JsonValue json;
    if (Status s = readJsonFile(config, json, kMaxTokenizerFile); !s)
      return s;
    if (const JsonValue *lower = json.get("do_lower_case")) {
      if (lower->kind != JsonValue::Kind::Bool)
        return Status::error(config + ": do_lower_case at byte offset " +
                             std::to_string(lower->offset) +
                             " is not true or false");
      cased = !lower->boolean;
      return Status::ok();
    }
  }
  cased = false;
  for (const std::string &p : pieces) {
    if (p.size() > 1 && p.front() == '[' && p.back() == ']')
      continue;
    for (char c : p)
      if (c >= 'A' && c <= 'Z')
        cased = true;
  }
  return Status::ok();
}

void wordPieceSpecials(TokenizerParts &parts) {
  for (size_t i = 0; i < parts.pieces.size(); ++i) {
    const std::string &p = parts.pieces[i];
    int32_t id = static_cast<int32_t>(i);
    if (p == "[PAD]" || p == "[UNK]" || p == "[CLS]" || p == "[SEP]" ||
        p == "[MASK]")
      if (std::find(parts.special.begin(), parts.special.end(), id) ==
          parts.special.end())
        parts.special.push_back(id);
    if (p == "[CLS]" && parts.bos < 0)
      parts.bos = id;
    if (p == "[SEP]" && parts.eos < 0)
      parts.eos = id;
  }
}

Status loadVocabTxt(const std::string &path, Tokenizer &out) {
  std::string text;
  if (Status s = readText(path, text, "WordPiece vocab.txt"); !s)
    return s;
  TokenizerParts parts;
  parts.kind = "wordpiece";
  parts.pieces = lines(text);
  bool cased;
  if (Status s = vocabIsCased(parts.pieces, path, cased); !s)
    return s;
  parts.lowercase = !cased;
  wordPieceSpecials(parts);
  return build(std::move(parts), path, out);
}

Status loadSentencePiece(const std::string &path, Tokenizer &out) {
  std::string model;
  if (Status s = readText(path, model, "SentencePiece model"); !s)
    return s;
  TokenizerParts parts;
  if (Status s = sentencePieceParts(model, parts); !s)
    return Status::error(path + ": " + s.text());
  return build(std::move(parts), path, out);
}

/// A member of `json` that must be there with the given kind.
Status member(const JsonValue &json, const std::string &key,
              JsonValue::Kind kind, const std::string &where,
              const JsonValue *&out) {
  out = json.get(key);
  JsonValue probe;
  probe.kind = kind;
  if (!out)
    return Status::error(where + " has no \"" + key + "\"");
  if (out->kind != kind)
    return Status::error(where + ": \"" + key + "\" at byte offset " +
                         std::to_string(out->offset) + " is " +
                         out->kindName() + ", not " + probe.kindName());
  return Status::ok();
}

/// Hugging Face's tokenizer.json. When `want` names another kind than the
/// file's, the error says so and `*otherKind` (if given) is set, so that a
/// directory search can go on to the next file.
Status loadTokenizerJson(const std::string &path, const std::string &want,
                         Tokenizer &out, bool *otherKind = nullptr) {
  JsonValue json;
  if (Status s = readJsonFile(path, json, kMaxTokenizerFile); !s)
    return s;
  const JsonValue *model, *type, *vocab;
  if (Status s = member(json, "model", JsonValue::Kind::Object, path, model);
      !s)
    return s;
  if (Status s = member(*model, "type", JsonValue::Kind::String,
                        path + ": model", type);
      !s)
    return s;
  TokenizerParts parts;
  const std::string &t = type->string;
  if (t == "BPE") {
    parts.kind = "gpt2";
    const JsonValue *pre = json.get("pre_tokenizer");
    const JsonValue *preType = pre ? pre->get("type") : nullptr;
    if (!preType || !preType->isString() || preType->string != "ByteLevel")
      return Status::error(
          path + ": pre_tokenizer" +
          (preType && preType->isString() ? " is " + preType->string
                                          : " is not ByteLevel") +
          "; kiln reads byte-level BPE (GPT-2's) from tokenizer.json — for "
          "a SentencePiece model give its tokenizer.model");
  } else if (t == "WordPiece") {
    parts.kind = "wordpiece";
    parts.lowercase = true;
    if (const JsonValue *norm = json.get("normalizer"))
      if (const JsonValue *lower = norm->get("lowercase");
          lower && lower->kind == JsonValue::Kind::Bool)
        parts.lowercase = lower->boolean;
  } else {
    return Status::error(path + ": model type '" + t +
                         "' is not read by kiln (BPE and WordPiece are); for "
                         "a SentencePiece model give its tokenizer.model");
  }
  if (!want.empty() && want != parts.kind) {
    if (otherKind)
      *otherKind = true;
    return Status::error(path + " is a " + parts.kind + " tokenizer, not " +
                         want);
  }
  if (Status s = member(*model, "vocab", JsonValue::Kind::Object,
                        path + ": model", vocab);
      !s)
    return s;
  if (Status s = densePieces(*vocab, path + ": model.vocab", parts.pieces); !s)
    return s;
  if (parts.kind == "gpt2") {
    const JsonValue *merges;
    if (Status s = member(*model, "merges", JsonValue::Kind::Array,
                          path + ": model", merges);
        !s)
      return s;
    for (const JsonValue &m : merges->items) {
      // "left right", or ["left", "right"] in newer files.
      if (m.isString()) {
        parts.merges.push_back(m.string);
      } else if (m.isArray() && m.items.size() == 2 && m.items[0].isString() &&
                 m.items[1].isString()) {
        parts.merges.push_back(m.items[0].string + " " + m.items[1].string);
      } else {
        return Status::error(path + ": the merge at byte offset " +
                             std::to_string(m.offset) +
                             " is neither \"left right\" nor [left, right]");
      }
    }
  }
  if (const JsonValue *added = json.get("added_tokens")) {
    if (!added->isArray())
      return Status::error(path + ": added_tokens is not an array");
    for (const JsonValue &a : added->items) {
      const JsonValue *id = a.get("id"), *content = a.get("content");
      if (!id || !id->isInteger || !content || !content->isString() ||
          id->integer < 0 || id->integer > INT32_MAX)
        return Status::error(path + ": the added token at byte offset " +
                             std::to_string(a.offset) +
                             " needs an integer id and a string content");
      size_t at = static_cast<size_t>(id->integer);
      if (at > parts.pieces.size())
        return Status::error(path + ": added token '" + content->string +
                             "' has id " + std::to_string(at) +
                             ", past the vocabulary's " +
                             std::to_string(parts.pieces.size()) + " ids");
      if (at == parts.pieces.size())
        parts.pieces.push_back(content->string);
      else if (parts.pieces[at] != content->string)
        return Status::error(path + ": added token '" + content->string +
                             "' has id " + std::to_string(at) + ", which is '" +
                             parts.pieces[at] + "' in model.vocab");
      parts.special.push_back(static_cast<int32_t>(at));
    }
  }
  if (parts.kind == "gpt2")
    gpt2Specials(parts);
  else
    wordPieceSpecials(parts);
  return build(std::move(parts), path, out);
}

/// The partner of one of GPT-2's two files, in the same directory.
Status loadBpePair(const std::string &path, Tokenizer &out) {
  fs::path dir = fs::path(path).parent_path();
  std::string name = baseName(path);
  bool isVocab = endsWith(name, ".json");
  const char *const partners[2][2] = {{"vocab.json", "merges.txt"},
                                      {"encoder.json", "vocab.bpe"}};
  for (const auto &pair : partners) {
    std::string other = join(dir, pair[isVocab ? 1 : 0]);
    if (isRegularFile(other))
      return isVocab ? loadBpeFiles(path, other, out)
                     : loadBpeFiles(other, path, out);
  }
  return Status::error(
      path + ": GPT-2's BPE needs " +
      (isVocab ? "merges.txt or vocab.bpe" : "vocab.json or encoder.json") +
      " beside it");
}

Status loadFile(const std::string &path, const std::string &want,
                Tokenizer &out) {
  std::string name = baseName(path);
  auto kindIs = [&](const char *kind) -> Status {
    if (!want.empty() && want != kind)
      return Status::error(path + " is a " + kind + " tokenizer file, not " +
                           want);
    return Status::ok();
  };
  Status s = Status::ok();
  if (endsWith(name, ".bin")) {
    if (!(s = kindIs("llama2c")))
      return s;
    return Tokenizer::readLlama2c(path, out);
  }
  if (endsWith(name, ".model")) {
    if (!(s = kindIs("sentencepiece")))
      return s;
    return loadSentencePiece(path, out);
  }
  if (name == "vocab.json" || name == "encoder.json" || name == "merges.txt" ||
      name == "vocab.bpe") {
    if (!(s = kindIs("gpt2")))
      return s;
    return loadBpePair(path, out);
  }
  if (endsWith(name, ".json"))
    return loadTokenizerJson(path, want, out);
  if (endsWith(name, ".txt")) {
    if (!(s = kindIs("wordpiece")))
      return s;
    return loadVocabTxt(path, out);
  }
  return Status::error(
      path + ": not a tokenizer file kiln knows (tokenizer.bin, *.model, "
             "tokenizer.json, vocab.json + merges.txt, encoder.json + "
             "vocab.bpe, vocab.txt)");
}

struct Candidate {
  const char *file, *kind;
};
/// The files a directory is searched for, in order.
const Candidate kCandidates[] = {{"tokenizer.model", "sentencepiece"},
                                 {"spiece.model", "sentencepiece"},
                                 {"tokenizer.json", ""},
                                 {"vocab.json", "gpt2"},
                                 {"encoder.json", "gpt2"},
                                 {"vocab.txt", "wordpiece"},
                                 {"tokenizer.bin", "llama2c"}};

Status loadDirectory(const std::string &dir, const std::string &want,
                     Tokenizer &out) {
  for (const Candidate &c : kCandidates) {
    std::string path = join(dir, c.file);
    if (!isRegularFile(path) || (!want.empty() && *c.kind && want != c.kind))
      continue;
    if (*c.kind == 0 && !want.empty()) {
      // tokenizer.json of another kind: keep looking.
      Tokenizer tok;
      bool otherKind = false;
      Status s = loadTokenizerJson(path, want, tok, &otherKind);
      if (otherKind)
        continue;
      out = std::move(tok);
      return s;
    }
    return loadFile(path, want, out);
  }
  return Status::error(
      dir + ": no " + (want.empty() ? "tokenizer" : want + " tokenizer") +
      " files in the directory (tokenizer.model, tokenizer.json, vocab.json "
      "+ merges.txt, encoder.json + vocab.bpe, vocab.txt, tokenizer.bin)");
}

} // namespace

bool Tokenizer::inDirectory(const std::string &dir) {
  for (const Candidate &c : kCandidates)
    if (isRegularFile(join(dir, c.file)))
      return true;
  return false;
}

Status Tokenizer::load(const std::string &spec, Tokenizer &out) {
  out = Tokenizer();
  std::string want, path = spec;
  if (size_t colon = spec.find(':'); colon != std::string::npos)
    for (const char *kind : kKinds)
      if (spec.compare(0, colon, kind) == 0 && std::strlen(kind) == colon) {
        want = kind;
        path = spec.substr(colon + 1);
      }
  if (path.empty())
    return Status::error("'" + spec + "' names no tokenizer file");
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return loadDirectory(path, want, out);
  if (!fs::exists(path, ec))
    return Status::error(path + ": cannot open the file: No such file or "
                                "directory");
  return loadFile(path, want, out);
}
