//===- KvCache.h - key/value caches for compiled decoding -------*- C++ -*-===//
//
// A model compiled from a causal decoder has a `decode` function
// (kiln-derive-decode) that runs new tokens only, reading and extending one
// key/value cache per attention layer. A KvCache holds those caches for a
// batch of sequences, allocated once, and feeds `decode` each row's new
// tokens at the row's next positions:
//
//   std::unique_ptr<KvCache> cache;
//   KvCache::create(model, /*batch=*/2, /*slots=*/256, cache);
//   cache->append(model, {{1, 15, 7}, {1, 42}}, logits); // ragged prompts
//   cache->append(model, {{next0}, {next1}}, logits);    // one step each
//
// `logits` is what decode returns, [B, T, V] for the longest row's T new
// tokens; row b's are valid for its own tokens only. A cache belongs to
// one caller (it is not shared between threads); the model may serve many
// caches at once.
//
// An encoder-decoder (T5) decodes its target tokens against a source: its
// decode also reads the forward's other inputs (attention_mask) and what
// the compiled `prepare` computes from them once (the encoder's keys and
// values for every cross-attention). setContext gives the cache the
// sources of all rows before the first append:
//
//   cache->setContext(model, {{"input_ids", ids}, {"attention_mask", mask}});
//   cache->append(model, {{0}, {0}}, logits); // the decoder start tokens
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_KVCACHE_H
#define KILN_RUNTIME_KVCACHE_H

#include "runtime/Model.h"

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

namespace kiln::runtime {

class KvCache {
public:
  /// The model's `decode` function, or null when it was not compiled with
  /// one (a model that is not a causal decoder, or --no-decode).
  static const FunctionInfo *decodeFunction(const Model &model);

  /// The slots a cache needs for sequences of up to `length` positions:
  /// `length`, or when every layer's cache rolls (sliding-window attention)
  /// the largest window, if that is less.
  static int64_t slotsFor(const Model &model, int64_t length);

  /// Caches for `batch` rows of `slots` positions each. When every layer
  /// has a sliding window no wider than `slots`, the caches roll and rows
  /// grow without bound; otherwise a row holds at most `slots` positions.
  /// Refuses sizes whose caches would not fit in memory.
  static Status create(const Model &model, int64_t batch, int64_t slots,
                       std::unique_ptr<KvCache> &out);

  int64_t batch() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t slots() const { return slots_; }
  /// Whether rows may grow past `slots` (every layer's cache rolls).
  bool rolling() const { return rolling_; }
  /// The positions row `row` holds so far.
  int64_t length(int64_t row) const { return lengths_[row]; }
  /// How many more positions row `row` can take (INT64_MAX when rolling).
  int64_t room(int64_t row) const;
  /// The bytes the caches take.
  size_t bytes() const;

  /// Runs `decode` on each row's new tokens (a row may get none), which
  /// the caches then hold. Every row's tokens must fit its room.
  Status append(Model &model, const std::vector<std::vector<int32_t>> &tokens,
                Tensor &logits, const RunOptions &options = {});

  /// Empties row `row` (its next tokens start at position 0).
  void clearRow(int64_t row) { lengths_[row] = 0; }

  /// The inputs setContext needs (the forward's inputs other than the
  /// tokens, for every row), or none for a decoder-only model.
  const std::vector<std::string> &contextInputs() const {
    return contextInputs_;
  }
  /// Runs `prepare` on the sources in `inputs` (by name; dimension 0 is the
  /// cache's batch) and keeps what it computes, with the inputs decode reads
  /// itself, for every later append. A new context replaces the old one;
  /// the rows' tokens so far stay (clear them to start over).
  Status setContext(Model &model, const std::map<std::string, Tensor> &inputs,
                    const RunOptions &options = {});

private:
  KvCache() = default;

  int64_t slots_ = 0;
  bool rolling_ = false;
  DType tokenType_ = DType::I32;
  std::vector<std::string> names_; // the decode function's cache inputs
  std::vector<Tensor> caches_;     // [B, slots, width] each
  std::vector<int64_t> lengths_;
  /// Encoder-decoders: what setContext takes, and what decode reads besides
  /// tokens and caches (those inputs and prepare's memory.N), by name.
  std::vector<std::string> contextInputs_;
  std::map<std::string, Tensor> context_;
};

} // namespace kiln::runtime

#endif
