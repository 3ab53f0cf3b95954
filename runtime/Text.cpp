//===- Text.cpp - text batches for training -------------------------------===//
#include "runtime/Text.h"

#include <algorithm>

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
