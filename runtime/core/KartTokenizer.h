//===- KartTokenizer.h - tokenizers in and out of artifacts -----*- C++ -*-===//
//
// The one place a Tokenizer meets the artifact format: kiln compile's
// writer packs it, Model reads it when an artifact loads and packs it again
// when saveArtifact writes a new one.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CORE_KARTTOKENIZER_H
#define KILN_RUNTIME_CORE_KARTTOKENIZER_H

#include "runtime/Tokenizer.h"
#include "runtime/kart_generated.h"

#include <memory>

namespace kiln::runtime {

/// The artifact's table for `tok` (object API; pack it with
/// kart::TokenizerData::Pack).
std::unique_ptr<kart::TokenizerDataT> tokenizerToKart(const Tokenizer &tok);
/// The tokenizer an artifact stores, checked as Tokenizer::fromParts does.
Status tokenizerFromKart(const kart::TokenizerData &data, Tokenizer &out);

} // namespace kiln::runtime

#endif
