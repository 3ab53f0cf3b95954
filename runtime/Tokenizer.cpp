//===- Tokenizer.cpp - text to token ids and back -------------------------===//
#include "runtime/Tokenizer.h"
#include "runtime/File.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <queue>
#include <set>

using namespace kiln::runtime;

namespace {

bool isContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

/// The byte a llama2.c piece "<0xXX>" stands for, or -1.
int bytePiece(const std::string &piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>')
    return -1;
  int v = 0;
  for (int k = 3; k < 5; ++k) {
    char c = piece[k];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                   : -1;
    if (d < 0)
      return -1;
    v = v * 16 + d;
  }
  return v;
}

/// llama2.c reserves ids 0..2 (<unk>, BOS, EOS) and 3..258 for the bytes.
constexpr int32_t kLlamaBos = 1, kLlamaEos = 2, kLlamaByteBase = 3;
constexpr size_t kLlamaMinVocab = kLlamaByteBase + 256;
/// Tokenizer files are a few megabytes at most (Llama 3's is 2 MB); the
/// bound keeps a damaged size field from deciding an allocation.
constexpr uint64_t kMaxTokenizerFile = 256ull << 20;

} // namespace

Status Tokenizer::fromText(const std::string &kind, const std::string &text,
                           Tokenizer &out) {
  out = Tokenizer();
  out.kind_ = kind;
  if (kind == "byte") {
    for (int b = 0; b < 256; ++b)
      out.pieces_.push_back(std::string(1, static_cast<char>(b)));
    out.index();
    return Status::ok();
  }
  if (kind != "char")
    return Status::error("unknown tokenizer '" + kind +
                         "'; expected char or byte");
  std::set<std::string> chars;
  for (size_t i = 0; i < text.size();) {
    size_t n = utf8Length(text, i);
    if (!n)
      return Status::error("the text is not valid UTF-8 at byte offset " +
                           std::to_string(i) +
                           "; use --tokenizer=byte for binary data");
    chars.insert(text.substr(i, n));
    i += n;
  }
  if (chars.empty())
    return Status::error("the text is empty");
  out.pieces_.assign(chars.begin(), chars.end());
  out.index();
  return Status::ok();
}

Status Tokenizer::readLlama2c(const std::string &path, Tokenizer &out) {
  std::string bytes;
  if (Status s = readFile(path, bytes, kMaxTokenizerFile,
                          "llama2.c tokenizer");
      !s)
    return s;
  uint64_t size = bytes.size();
  auto int32At = [&](uint64_t at) {
    int32_t v;
    std::memcpy(&v, bytes.data() + at, 4);
    return v;
  };
  if (size < 4)
    return Status::error(path + ": " + std::to_string(size) +
                         " bytes is too short for a llama2.c tokenizer (it "
                         "starts with a 4-byte max_token_length)");
  int32_t maxLength = int32At(0);
  if (maxLength <= 0 || static_cast<uint64_t>(maxLength) > size)
    return Status::error(path + ": max_token_length " +
                         std::to_string(maxLength) +
                         " at byte offset 0 is not a plausible length; is "
                         "this a llama2.c tokenizer file?");
  std::vector<std::string> pieces;
  std::vector<float> scores;
  for (uint64_t at = 4; at < size;) {
    std::string token = "token " + std::to_string(pieces.size());
    if (size - at < 8)
      return Status::error(path + ": " + token + " at byte offset " +
                           std::to_string(at) +
                           " is truncated: its score "
                           "and length need 8 bytes, " +
                           std::to_string(size - at) + " remain");
    float score;
    std::memcpy(&score, bytes.data() + at, 4);
    int32_t length = int32At(at + 4);
    if (!std::isfinite(score))
      return Status::error(path + ": " + token + " at byte offset " +
                           std::to_string(at) +
                           " has a score that is not "
                           "a finite number");
    if (length < 0 || length > maxLength)
      return Status::error(path + ": " + token + " at byte offset " +
                           std::to_string(at + 4) + " has length " +
                           std::to_string(length) + ", outside [0, " +
                           std::to_string(maxLength) + "] (max_token_length)");
    if (static_cast<uint64_t>(length) > size - at - 8)
      return Status::error(path + ": " + token + " at byte offset " +
                           std::to_string(at + 4) + " has length " +
                           std::to_string(length) + ", past the end of the " +
                           std::to_string(size) + "-byte file");
    pieces.push_back(bytes.substr(at + 8, static_cast<size_t>(length)));
    scores.push_back(score);
    at += 8 + static_cast<uint64_t>(length);
  }
  if (Status s = fromParts("llama2c", std::move(pieces), std::move(scores),
                           kLlamaBos, kLlamaEos, out);
      !s)
    return Status::error(path + ": " + s.message());
  return Status::ok();
}

Status Tokenizer::fromParts(std::string kind, std::vector<std::string> pieces,
                            std::vector<float> scores, int32_t bos, int32_t eos,
                            Tokenizer &out) {
  out = Tokenizer();
  if (kind != "char" && kind != "byte" && kind != "llama2c")
    return Status::error("unknown tokenizer kind '" + kind +
                         "'; expected char, byte or llama2c");
  if (pieces.empty())
    return Status::error("the " + kind + " tokenizer has no tokens");
  if (kind == "byte" && pieces.size() != 256)
    return Status::error("a byte tokenizer has 256 tokens, not " +
                         std::to_string(pieces.size()));
  if (kind == "llama2c") {
    if (pieces.size() < kLlamaMinVocab)
      return Status::error(
          "a llama2.c tokenizer has at least " +
          std::to_string(kLlamaMinVocab) +
          " tokens (<unk>, BOS, EOS and 256 byte tokens), this one has " +
          std::to_string(pieces.size()));
    if (scores.size() != pieces.size())
      return Status::error("the tokenizer has " +
                           std::to_string(pieces.size()) + " tokens but " +
                           std::to_string(scores.size()) + " scores");
    for (size_t i = 0; i < scores.size(); ++i)
      if (!std::isfinite(scores[i]))
        return Status::error("the score of token " + std::to_string(i) +
                             " is not a finite number");
    auto inside = [&](int32_t id) {
      return id >= 0 && static_cast<size_t>(id) < pieces.size();
    };
    if (!inside(bos) || !inside(eos))
      return Status::error("BOS " + std::to_string(bos) + " and EOS " +
                           std::to_string(eos) +
                           " must be ids of the tokenizer");
    for (int b = 0; b < 256; ++b)
      if (bytePiece(pieces[kLlamaByteBase + b]) != b)
        return Status::error("token " + std::to_string(kLlamaByteBase + b) +
                             " should be the byte token <0x" +
                             "0123456789ABCDEF"[b >> 4] +
                             "0123456789ABCDEF"[b & 15] + ">");
  } else if (!scores.empty() || bos != -1 || eos != -1) {
    return Status::error("a " + kind +
                         " tokenizer has no scores and no BOS or EOS");
  }
  out.kind_ = std::move(kind);
  out.pieces_ = std::move(pieces);
  out.scores_ = std::move(scores);
  out.bos_ = bos;
  out.eos_ = eos;
  out.index();
  return Status::ok();
}

void Tokenizer::index() {
  ids_.clear();
  ids_.reserve(pieces_.size());
  for (size_t i = 0; i < pieces_.size(); ++i)
    ids_.emplace(pieces_[i], static_cast<int32_t>(i)); // keeps the lowest id
}

int32_t Tokenizer::lookup(const std::string &piece) const {
  auto it = ids_.find(piece);
  return it == ids_.end() ? -1 : it->second;
}

Status Tokenizer::encode(const std::string &text,
                         std::vector<int32_t> &ids) const {
  ids.clear();
  if (kind_ == "byte") {
    for (unsigned char c : text)
      ids.push_back(c);
    return Status::ok();
  }
  if (kind_ == "char") {
    for (size_t i = 0; i < text.size();) {
      size_t n = utf8Length(text, i);
      if (!n)
        return Status::error("the text is not valid UTF-8 at byte offset " +
                             std::to_string(i));
      int32_t id = lookup(text.substr(i, n));
      if (id < 0)
        return Status::error("the character '" + text.substr(i, n) +
                             "' at byte offset " + std::to_string(i) +
                             " is not in the tokenizer's vocabulary");
      ids.push_back(id);
      i += n;
    }
    return Status::ok();
  }
  // llama2c. A unit is a lead byte with up to three continuation bytes
  // after it (what run.c groups, valid UTF-8 or not); a unit outside the
  // vocabulary becomes one byte token per byte.
  auto push = [&](const std::string &unit) {
    int32_t id = lookup(unit);
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
    for (unsigned char c : unit)
      ids.push_back(kLlamaByteBase + c);
  };
  ids.push_back(bos_);
  if (!text.empty())
    push(" ");
  std::string unit;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!isContinuation(static_cast<unsigned char>(text[i])))
      unit.clear();
    unit += text[i];
    if (i + 1 < text.size() &&
        isContinuation(static_cast<unsigned char>(text[i + 1])) &&
        unit.size() < 4)
      continue;
    push(unit);
    unit.clear();
  }
  mergePairs(ids);
  return Status::ok();
}

void Tokenizer::mergePairs(std::vector<int32_t> &ids) const {
  // Repeatedly merge the adjacent pair whose concatenation is the
  // best-scored token, the leftmost on ties (run.c's rule). Candidates wait
  // in a heap ordered by (score, position) and are dropped when a merge has
  // changed either side since, so long texts take O(n log n), not O(n^2).
  size_t n = ids.size();
  std::vector<size_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = i - 1; // wraps to SIZE_MAX for the first
    next[i] = i + 1;
  }
  struct Candidate {
    float score;
    size_t left, right;
    int32_t leftId, rightId, merged;
  };
  auto worse = [](const Candidate &a, const Candidate &b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(
      worse);
  std::string pair;
  auto consider = [&](size_t left, size_t right) {
    if (left >= n || right >= n)
      return;
    pair = pieces_[ids[left]];
    pair += pieces_[ids[right]];
    if (int32_t id = lookup(pair); id >= 0)
      heap.push({scores_[id], left, right, ids[left], ids[right], id});
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

std::string Tokenizer::decode(int32_t prev, int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= pieces_.size())
    return "";
  const std::string &piece = pieces_[id];
  if (kind_ != "llama2c")
    return piece;
  if (id == bos_ || id == eos_)
    return "";
  if (int b = bytePiece(piece); b >= 0)
    return std::string(1, static_cast<char>(b));
  if (prev == bos_ && !piece.empty() && piece[0] == ' ')
    return piece.substr(1);
  return piece;
}

std::string Tokenizer::decode(const std::vector<int32_t> &ids) const {
  std::string text;
  int32_t prev = -1;
  for (int32_t id : ids) {
    text += decode(prev, id);
    prev = id;
  }
  return text;
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
