//===- Tokenizer.cpp - the tokenizer kinds behind one interface -----------===//
#include "runtime/tokenizer/Codec.h"

#include <queue>
#include <set>

using namespace kiln::runtime;
using namespace kiln::runtime::tokenizer;

namespace {

struct KindRow {
  const char *name;
  CodecFactory make;
};

/// One row per kind: adding a kind is a codec and a row.
const KindRow kKinds[] = {
    {"char", makeCharCodec},
    {"byte", makeByteCodec},
    {"llama2c", makeLlama2cCodec},
    {"gpt2", makeGpt2Codec},
    {"wordpiece", makeWordPieceCodec},
    {"sentencepiece", makeSentencePieceCodec},
};

const TokenizerParts &noParts() {
  static const TokenizerParts none;
  return none;
}

} // namespace

std::string Codec::decodeAll(const std::vector<int32_t> &ids) const {
  std::string text;
  int32_t prev = -1;
  for (int32_t id : ids) {
    text += decode(prev, id);
    prev = id;
  }
  return text;
}

PieceIndex tokenizer::indexPieces(const std::vector<std::string> &pieces) {
  PieceIndex index;
  index.reserve(pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i)
    index.emplace(pieces[i], static_cast<int32_t>(i)); // keeps the lowest id
  return index;
}

void tokenizer::mergeAdjacent(std::vector<int32_t> &ids,
                              const MergeRule &rule) {
  size_t n = ids.size();
  std::vector<size_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = i - 1; // wraps to SIZE_MAX for the first
    next[i] = i + 1;
  }
  struct Candidate {
    double priority;
    size_t left, right;
    int32_t leftId, rightId, merged;
  };
  auto worse = [](const Candidate &a, const Candidate &b) {
    return a.priority < b.priority ||
           (a.priority == b.priority && a.left > b.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(
      worse);
  auto consider = [&](size_t left, size_t right) {
    if (left >= n || right >= n)
      return;
    int32_t merged;
    double priority;
    if (rule(ids[left], ids[right], merged, priority))
      heap.push({priority, left, right, ids[left], ids[right], merged});
  };
  for (size_t i = 0; i + 1 < n; ++i)
    consider(i, i + 1);
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    Candidate c = heap.top();
    heap.pop();
    if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right ||
        ids[c.left] != c.leftId || ids[c.right] != c.rightId)
      continue; // stale: one side was merged since
    ids[c.left] = c.merged;
    alive[c.right] = false;
    next[c.left] = next[c.right];
    if (next[c.right] < n)
      prev[next[c.right]] = c.left;
    consider(prev[c.left], c.left);
    consider(c.left, next[c.left]);
  }
  size_t out = 0;
  for (size_t i = 0; i < n; ++i)
    if (alive[i])
      ids[out++] = ids[i];
  ids.resize(out);
}

Status tokenizer::splitSpecial(
    const std::string &text, const TokenizerParts &parts,
    const std::function<Status(const std::string &, size_t)> &plain,
    const std::function<void(int32_t)> &special) {
  size_t from = 0;
  while (from <= text.size()) {
    size_t best = std::string::npos, bestLength = 0;
    int32_t bestId = -1;
    for (int32_t id : parts.special) {
      const std::string &piece = parts.pieces[id];
      if (piece.empty())
        continue;
      size_t at = text.find(piece, from);
      if (at == std::string::npos)
        continue;
      if (at < best || (at == best && piece.size() > bestLength)) {
        best = at;
        bestLength = piece.size();
        bestId = id;
      }
    }
    size_t end = best == std::string::npos ? text.size() : best;
    if (end > from)
      if (Status s = plain(text.substr(from, end - from), from); !s)
        return s;
    if (best == std::string::npos)
      break;
    special(bestId);
    from = best + bestLength;
  }
  return Status::ok();
}

Status tokenizer::checkIds(const TokenizerParts &parts,
                           const std::vector<int32_t> &ids,
                           const std::string &what) {
  for (int32_t id : ids)
    if (id < 0 || static_cast<size_t>(id) >= parts.pieces.size())
      return Status::error(
          what + " " + std::to_string(id) + " is not an id of the " +
          std::to_string(parts.pieces.size()) + "-token vocabulary");
  return Status::ok();
}

const TokenizerParts &Tokenizer::parts() const {
  return parts_ ? *parts_ : noParts();
}

Status Tokenizer::fromParts(TokenizerParts parts, Tokenizer &out) {
  out = Tokenizer();
  const KindRow *row = nullptr;
  std::string names;
  for (const KindRow &r : kKinds) {
    if (parts.kind == r.name)
      row = &r;
    names += names.empty() ? "" : ", ";
    names += r.name;
  }
  if (!row)
    return Status::error("unknown tokenizer kind '" + parts.kind +
                         "'; expected one of " + names);
  if (parts.pieces.empty())
    return Status::error("the " + parts.kind + " tokenizer has no tokens");
  if (parts.pieces.size() > static_cast<size_t>(INT32_MAX))
    return Status::error("the " + parts.kind +
                         " tokenizer has too many tokens");
  if (Status s = checkIds(parts, parts.special, "special token id"); !s)
    return s;
  // Codecs may keep references into the parts: both live as long as the
  // last copy of the tokenizer.
  auto shared = std::make_shared<const TokenizerParts>(std::move(parts));
  std::unique_ptr<Codec> codec;
  if (Status s = row->make(*shared, codec); !s)
    return s;
  // After the kind's checks, whose messages say more (llama2c's size).
  std::vector<int32_t> named;
  for (int32_t id : {shared->bos, shared->eos})
    if (id != -1)
      named.push_back(id);
  if (Status s = checkIds(*shared, named, "BOS/EOS id"); !s)
    return s;
  out.parts_ = std::move(shared);
  out.codec_ = std::move(codec);
  return Status::ok();
}

Status Tokenizer::fromText(const std::string &kind, const std::string &text,
                           Tokenizer &out) {
  TokenizerParts parts;
  parts.kind = kind;
  if (kind == "byte") {
    for (int b = 0; b < 256; ++b)
      parts.pieces.push_back(std::string(1, static_cast<char>(b)));
    return fromParts(std::move(parts), out);
  }
  if (kind != "char")
    return Status::error("unknown tokenizer '" + kind +
                         "'; expected char or byte");
  std::set<std::string> chars;
  for (size_t i = 0; i < text.size();) {
    size_t n = utf8Length(text, i);
    if (!n)
      return Status::error("the text is not valid UTF-8 at byte offset " +
                           std::to_string(i) + "; use " +
                           optionRef("--tokenizer=byte", "tokenizer=\"byte\"") +
                           " for binary data");
    chars.insert(text.substr(i, n));
    i += n;
  }
  if (chars.empty())
    return Status::error("the text is empty");
  parts.pieces.assign(chars.begin(), chars.end());
  return fromParts(std::move(parts), out);
}

Status Tokenizer::encode(const std::string &text,
                         std::vector<int32_t> &ids) const {
  ids.clear();
  if (!codec_)
    return Status::error("the tokenizer is empty");
  return codec_->encode(text, ids);
}

std::string Tokenizer::decode(int32_t prev, int32_t id) const {
  if (!codec_ || id < 0 || static_cast<size_t>(id) >= size())
    return "";
  return codec_->decode(prev, id);
}

std::string Tokenizer::decode(const std::vector<int32_t> &ids) const {
  if (!codec_)
    return "";
  std::vector<int32_t> inside;
  inside.reserve(ids.size());
  for (int32_t id : ids)
    if (id >= 0 && static_cast<size_t>(id) < size())
      inside.push_back(id);
  return codec_->decodeAll(inside);
}

Status kiln::runtime::checkTokenizerFits(const Tokenizer &tok, int64_t vocab,
                                         const std::string &what) {
  int64_t n = static_cast<int64_t>(tok.size());
  if (tok.kind() == "llama2c" ? n != vocab : n > vocab)
    return Status::error(
        what + " has " + std::to_string(n) +
        " tokens, but the model's vocabulary has " + std::to_string(vocab) +
        (tok.kind() == "llama2c" ? "; use the tokenizer the checkpoint was "
                                   "trained with"
                                 : ""));
  return Status::ok();
}
