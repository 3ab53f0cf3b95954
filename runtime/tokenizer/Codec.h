//===- Codec.h - one tokenizer kind's encoder and decoder -------*- C++ -*-===//
//
// Each kind of tokenizer (runtime/Tokenizer.h) is a Codec built from its
// TokenizerParts by the kind's factory; Tokenizer dispatches through the
// table in Tokenizer.cpp. Codecs are immutable once built.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_TOKENIZER_CODEC_H
#define KILN_RUNTIME_TOKENIZER_CODEC_H

#include "runtime/Tokenizer.h"

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace kiln::runtime::tokenizer {

class Codec {
public:
  virtual ~Codec() = default;
  virtual Status encode(const std::string &text,
                        std::vector<int32_t> &ids) const = 0;
  virtual std::string decode(int32_t prev, int32_t id) const = 0;
  /// A whole sequence; by default the streaming pieces joined.
  virtual std::string decodeAll(const std::vector<int32_t> &ids) const;
};

/// Checks `parts` for the kind and builds its codec; errors say what is
/// wrong with the parts (the caller adds where they came from).
using CodecFactory = Status (*)(const TokenizerParts &parts,
                                std::unique_ptr<Codec> &out);

Status makeCharCodec(const TokenizerParts &, std::unique_ptr<Codec> &);
Status makeByteCodec(const TokenizerParts &, std::unique_ptr<Codec> &);
Status makeLlama2cCodec(const TokenizerParts &, std::unique_ptr<Codec> &);
Status makeGpt2Codec(const TokenizerParts &, std::unique_ptr<Codec> &);
Status makeWordPieceCodec(const TokenizerParts &, std::unique_ptr<Codec> &);
Status makeSentencePieceCodec(const TokenizerParts &, std::unique_ptr<Codec> &);

/// The parts of a serialized SentencePiece model: its pieces, BOS and EOS.
Status sentencePieceParts(const std::string &model, TokenizerParts &parts);

/// Tokenizer files are a few megabytes (GPT-2's tokenizer.json is 1.4 MB,
/// Llama 3's 9 MB); the bound keeps a damaged or wrong file from deciding
/// an allocation.
constexpr uint64_t kMaxTokenizerFile = 256ull << 20;

/// piece -> its lowest id.
using PieceIndex = std::unordered_map<std::string, int32_t>;
PieceIndex indexPieces(const std::vector<std::string> &pieces);

/// Merges adjacent ids, best first: `pair(left, right, merged)` says
/// whether the two may merge, into which id, and with what priority
/// (higher first; the leftmost pair on ties). O(n log n) with a heap of
/// candidates that are dropped once a merge has changed either side.
using MergeRule = std::function<bool(int32_t left, int32_t right,
                                     int32_t &merged, double &priority)>;
void mergeAdjacent(std::vector<int32_t> &ids, const MergeRule &pair);

/// Splits text at the special tokens' pieces (longest first where two
/// start at the same byte): calls `plain(segment, byte offset)` for the
/// text between them and `special(id)` for each one found. Stops at the first
/// error.
Status
splitSpecial(const std::string &text, const TokenizerParts &parts,
             const std::function<Status(const std::string &, size_t)> &plain,
             const std::function<void(int32_t)> &special);

/// Whether every id in `ids` lies inside the vocabulary; `what` names them.
Status checkIds(const TokenizerParts &parts, const std::vector<int32_t> &ids,
                const std::string &what);

} // namespace kiln::runtime::tokenizer

#endif
