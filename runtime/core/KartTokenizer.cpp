//===- KartTokenizer.cpp - tokenizers in and out of artifacts -------------===//
#include "runtime/core/KartTokenizer.h"

using namespace kiln;
using namespace kiln::runtime;

std::unique_ptr<kart::TokenizerDataT>
kiln::runtime::tokenizerToKart(const Tokenizer &tok) {
  const TokenizerParts &p = tok.parts();
  auto t = std::make_unique<kart::TokenizerDataT>();
  t->kind = p.kind;
  t->pieces = p.pieces;
  t->scores = p.scores;
  t->bos = p.bos;
  t->eos = p.eos;
  t->merges = p.merges;
  t->special = p.special;
  t->model.assign(p.model.begin(), p.model.end());
  t->lowercase = p.lowercase;
  return t;
}

Status kiln::runtime::tokenizerFromKart(const kart::TokenizerData &data,
                                        Tokenizer &out) {
  TokenizerParts p;
  p.kind = data.kind()->str(); // required: the verifier checked it is there
  auto strings =
      [](const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>
             *v) {
        std::vector<std::string> out;
        if (v)
          for (const flatbuffers::String *s : *v)
            out.push_back(s ? s->str() : std::string());
        return out;
      };
  p.pieces = strings(data.pieces());
  p.merges = strings(data.merges());
  if (data.scores())
    p.scores.assign(data.scores()->begin(), data.scores()->end());
  if (data.special())
    p.special.assign(data.special()->begin(), data.special()->end());
  if (data.model())
    p.model.assign(data.model()->begin(), data.model()->end());
  p.bos = data.bos();
  p.eos = data.eos();
  p.lowercase = data.lowercase();
  return Tokenizer::fromParts(std::move(p), out);
}
