//===- Text.cpp - text batches for training -------------------------------===//
#include "runtime/Text.h"
#include "runtime/File.h"
#include "runtime/Memory.h"

#include <algorithm>
#include <fstream>

using namespace kiln::runtime;

Status TextData::create(std::vector<int32_t> tokens, double evalFraction,
                        int64_t seq, TextData &out) {
  if (!(evalFraction >= 0 && evalFraction < 1))
    return Status::error("the evaluation fraction must be in [0, 1)");
  size_t n = tokens.size();
  size_t held = static_cast<size_t>(static_cast<double>(n) * evalFraction);
  if (evalFraction > 0)
    held = std::max(held, static_cast<size_t>(seq + 1));
  if (n < held + static_cast<size_t>(seq) + 1)
    return Status::error("the text has " + std::to_string(n) +
                         " tokens, too few for windows of " +
                         std::to_string(seq) + " tokens" +
                         (held ? " plus a held-out part" : ""));
  out.tokens_ = std::move(tokens);
  out.split_ = n - held;
  return Status::ok();
}

uint64_t kiln::runtime::trainingDataLimit() {
  uint64_t memory = physicalMemory();
  return memory ? memory / 32 : uint64_t(1) << 30;
}

void TextData::trainBatch(SplitMix64 &rng, int64_t batch, int64_t seq,
                          Tensor &tokens, Tensor &targets) const {
  tokens = Tensor(DType::I32, {batch, seq});
  targets = Tensor(DType::I32, {batch, seq});
  uint64_t range = split_ - static_cast<size_t>(seq); // start < range
  for (int64_t b = 0; b < batch; ++b) {
    size_t start = static_cast<size_t>(rng.next() % range);
    for (int64_t t = 0; t < seq; ++t) {
      tokens.as<int32_t>()[b * seq + t] = tokens_[start + t];
      targets.as<int32_t>()[b * seq + t] = tokens_[start + t + 1];
    }
  }
}

void TextData::evalBatch(int64_t k, int64_t batch, int64_t seq, Tensor &tokens,
                         Tensor &targets) const {
  tokens = Tensor(DType::I32, {batch, seq});
  targets = Tensor(DType::I32, {batch, seq});
  size_t held = tokens_.size() - split_;
  size_t windows = (held - 1) / static_cast<size_t>(seq);
  for (int64_t b = 0; b < batch; ++b) {
    size_t w =
        static_cast<size_t>(k * batch + b) % std::max<size_t>(windows, 1);
    size_t start = split_ + w * static_cast<size_t>(seq);
    for (int64_t t = 0; t < seq; ++t) {
      tokens.as<int32_t>()[b * seq + t] = tokens_[start + t];
      targets.as<int32_t>()[b * seq + t] = tokens_[start + t + 1];
    }
  }
}

Status kiln::runtime::readTokenFile(const std::string &path, TokenWidth width,
                                    uint64_t maxTokens,
                                    std::vector<int32_t> &out,
                                    TokenFileInfo &info) {
  out.clear();
  info = TokenFileInfo();
  std::ifstream f;
  uint64_t size = 0;
  if (Status s = openInput(path, f, size); !s)
    return s;
  auto bad = [&](const std::string &msg) {
    return Status::error(path + ": " + msg);
  };
  // llm.c's header, when the file starts with its magic.
  uint64_t count = 0;
  unsigned char head[12] = {};
  bool llmc = false;
  if (size >= kLlmcTokenHeader && f.read(reinterpret_cast<char *>(head), 12)) {
    auto word = [&](int i) {
      return static_cast<int32_t>(
          uint32_t(head[4 * i]) | uint32_t(head[4 * i + 1]) << 8 |
          uint32_t(head[4 * i + 2]) << 16 | uint32_t(head[4 * i + 3]) << 24);
    };
    if (word(0) == kLlmcTokenMagic) {
      llmc = true;
      int32_t version = word(1), n = word(2);
      if (version != 1 && version != 2)
        return bad("llm.c token file version " + std::to_string(version) +
                   " at byte offset 4; kiln reads version 1 (uint16 ids) "
                   "and 2 (uint32 ids)");
      if (n < 0)
        return bad("llm.c header: negative token count " + std::to_string(n) +
                   " at byte offset 8");
      TokenWidth stored = version == 1 ? TokenWidth::U16 : TokenWidth::U32;
      if (width != TokenWidth::Auto && width != stored)
        return bad(std::string("the llm.c header says uint") +
                   (version == 1 ? "16" : "32") + " ids (version " +
                   std::to_string(version) + "), not the width asked for");
      width = stored;
      info.headerBytes = kLlmcTokenHeader;
      count = static_cast<uint64_t>(n);
    }
  }
  if (width == TokenWidth::Auto)
    width = TokenWidth::U16;
  info.idBytes = width == TokenWidth::U16 ? 2 : 4;
  info.format = std::string(llmc ? "llm.c, " : "") + "uint" +
                (info.idBytes == 2 ? "16" : "32") + " ids";
  uint64_t body = size - info.headerBytes;
  if (body % info.idBytes)
    return bad(std::to_string(body) + " bytes of ids" +
               (llmc ? " after the 1024-byte header" : "") +
               " are not a whole number of " + std::to_string(info.idBytes) +
               "-byte ids (is the width right? " +
               optionRef("--token-dtype", "token_dtype=") + ")");
  if (!llmc)
    count = body / info.idBytes;
  else if (count != body / info.idBytes)
    return bad("the llm.c header counts " + std::to_string(count) +
               " tokens at byte offset 8, but the file holds " +
               std::to_string(body / info.idBytes));
  if (count == 0)
    return bad("holds no tokens");
  if (count > maxTokens)
    return bad("holds " + std::to_string(count) + " tokens, more than the " +
               std::to_string(maxTokens) + " this machine's memory allows");
  out.resize(count);
  f.seekg(static_cast<std::streamoff>(info.headerBytes));
  std::vector<unsigned char> chunk;
  const uint64_t perChunk = 1 << 20;
  for (uint64_t at = 0; at < count; at += perChunk) {
    uint64_t n = std::min(perChunk, count - at);
    chunk.resize(n * info.idBytes);
    if (!f.read(reinterpret_cast<char *>(chunk.data()),
                static_cast<std::streamsize>(chunk.size())))
      return bad("cannot read the ids at byte offset " +
                 std::to_string(info.headerBytes + at * info.idBytes));
    for (uint64_t i = 0; i < n; ++i) {
      const unsigned char *b = chunk.data() + i * info.idBytes;
      uint32_t id = info.idBytes == 2
                        ? uint32_t(b[0]) | uint32_t(b[1]) << 8
                        : uint32_t(b[0]) | uint32_t(b[1]) << 8 |
                              uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
      if (id > uint32_t(INT32_MAX))
        return bad("id " + std::to_string(id) + " at byte offset " +
                   std::to_string(info.headerBytes + (at + i) * info.idBytes) +
                   " is larger than any vocabulary");
      if (static_cast<int64_t>(id) > info.maxId) {
        info.maxId = id;
        info.maxIdIndex = at + i;
      }
      out[at + i] = static_cast<int32_t>(id);
    }
  }
  return Status::ok();
}
