//===- SentencePiece.cpp - SentencePiece models through libsentencepiece --===//
//
// The model (a serialized ModelProto, as in tokenizer.model) is run by
// Debian's libsentencepiece, so unigram and BPE models, normalization rules
// and byte fallback all behave as in `spm_encode`. Encoding puts BOS first
// when the model has one (Llama's convention, as llama2.c's tokenizer).
//
//===----------------------------------------------------------------------===//
#include "runtime/tokenizer/Codec.h"

#include <sentencepiece_processor.h>

#include <cstdlib>

using namespace kiln::runtime;
using namespace kiln::runtime::tokenizer;

namespace {

class SentencePieceCodec : public Codec {
public:
  Status load(const std::string &model) {
    auto status = processor.LoadFromSerializedProto(model);
    if (!status.ok())
      return Status::error("the SentencePiece model cannot be read: " +
                           status.ToString());
    return Status::ok();
  }

  Status encode(const std::string &text,
                std::vector<int32_t> &ids) const override {
    std::vector<int> pieces;
    auto status = processor.Encode(text, &pieces);
    if (!status.ok())
      return Status::error("SentencePiece cannot encode the text: " +
                           status.ToString());
    if (processor.bos_id() >= 0)
      ids.push_back(processor.bos_id());
    ids.insert(ids.end(), pieces.begin(), pieces.end());
    return Status::ok();
  }

  /// Control tokens print nothing, byte tokens their byte, "▁" a space
  /// (not at the start of the text, where SentencePiece added it).
  std::string decode(int32_t prev, int32_t id) const override {
    if (processor.IsControl(id))
      return "";
    const std::string &piece = processor.IdToPiece(id);
    if (processor.IsByte(id) && piece.size() == 6)
      return std::string(1, static_cast<char>(std::strtol(
                                piece.substr(3, 2).c_str(), nullptr, 16)));
    if (processor.IsUnknown(id))
      return " \xE2\x81\x87 "; // what spm_decode prints for <unk>
    std::string text;
    static const std::string kSpace = "\xE2\x96\x81"; // U+2581
    for (size_t i = 0; i < piece.size();) {
      if (piece.compare(i, kSpace.size(), kSpace) == 0) {
        text += ' ';
        i += kSpace.size();
      } else {
        text += piece[i++];
      }
    }
    bool start = prev < 0 || processor.IsControl(prev);
    if (start && !text.empty() && text[0] == ' ')
      text.erase(0, 1);
    return text;
  }

  std::string decodeAll(const std::vector<int32_t> &ids) const override {
    std::string text;
    std::vector<int> pieces(ids.begin(), ids.end());
    if (!processor.Decode(pieces, &text).ok())
      return Codec::decodeAll(ids);
    return text;
  }

  sentencepiece::SentencePieceProcessor processor;
};

} // namespace

Status tokenizer::makeSentencePieceCodec(const TokenizerParts &p,
                                         std::unique_ptr<Codec> &out) {
  if (p.model.empty())
    return Status::error("a sentencepiece tokenizer needs its model");
  if (!p.scores.empty() || !p.merges.empty() || !p.special.empty() ||
      p.lowercase)
    return Status::error("a sentencepiece tokenizer has a model, its pieces "
                         "and BOS/EOS only");
  auto codec = std::make_unique<SentencePieceCodec>();
  if (Status s = codec->load(p.model); !s)
    return s;
  const auto &sp = codec->processor;
  if (static_cast<size_t>(sp.GetPieceSize()) != p.pieces.size())
    return Status::error("the tokenizer lists " +
                         std::to_string(p.pieces.size()) +
                         " pieces but its SentencePiece model has " +
                         std::to_string(sp.GetPieceSize()));
  for (size_t i = 0; i < p.pieces.size(); ++i)
    if (sp.IdToPiece(static_cast<int>(i)) != p.pieces[i])
      return Status::error("piece " + std::to_string(i) + " is '" +
                           p.pieces[i] + "' but the SentencePiece model has '" +
                           sp.IdToPiece(static_cast<int>(i)) + "'");
  if (p.bos != sp.bos_id() || p.eos != sp.eos_id())
    return Status::error(
        "BOS/EOS " + std::to_string(p.bos) + "/" + std::to_string(p.eos) +
        " differ from the SentencePiece model's " +
        std::to_string(sp.bos_id()) + "/" + std::to_string(sp.eos_id()));
  out = std::move(codec);
  return Status::ok();
}

Status tokenizer::sentencePieceParts(const std::string &model,
                                     TokenizerParts &parts) {
  sentencepiece::SentencePieceProcessor sp;
  auto status = sp.LoadFromSerializedProto(model);
  if (!status.ok())
    return Status::error("not a SentencePiece model: " + status.ToString());
  parts = TokenizerParts();
  parts.kind = "sentencepiece";
  parts.model = model;
  for (int i = 0; i < sp.GetPieceSize(); ++i)
    parts.pieces.push_back(sp.IdToPiece(i));
  parts.bos = sp.bos_id();
  parts.eos = sp.eos_id();
  return Status::ok();
}
