//===- Generate.h - autoregressive decoding ---------------------*- C++ -*-===//
//
// Text generation with a decoder model, shared by `kiln generate` and
// Python. A model compiled with a `decode` function (every causal decoder
// gets one) decodes incrementally: the prompts go through it once
// (prefill), then each step runs only the new token against the key/value
// caches (runtime/KvCache.h). A model without one recomputes the whole
// sequence for every token.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_GENERATE_H
#define KILN_RUNTIME_GENERATE_H

#include "runtime/Model.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kiln::runtime {

struct GenerateOptions {
  int64_t maxTokens = 16;
  /// Sampling, applied in this order (as Hugging Face's generate does):
  /// the repetition penalty (CTRL's: a logit of a token already in the
  /// sequence is divided by it when positive, multiplied when negative;
  /// 1: off), the temperature (0: greedy argmax), the `topK` most likely
  /// tokens (0: all), then the nucleus: the smallest set of tokens whose
  /// probability reaches `topP`.
  double repetitionPenalty = 1.0;
  double temperature = 1.0;
  int64_t topK = 0;
  double topP = 1.0;
  /// Sampling is reproducible on every machine; row b of a batch draws
  /// from its own stream (row 0's is the single prompt's).
  uint64_t seed = 0;
  /// A row ends early when the model picks one of these (which is not
  /// returned): a tokenizer's BOS and EOS (see stopTokens()).
  std::vector<int32_t> stopTokens;
  /// Recompute the whole sequence each step even when the model has a
  /// compiled `decode` (for checking it).
  bool recompute = false;
  /// An encoder-decoder's first target token; -1: the model's
  /// hyperparameter decoder_start_token_id, else 0 (T5's pad token).
  int64_t decoderStart = -1;
};

/// The roles of a generating model's `forward` inputs: the target ids it
/// returns logits for and, for an encoder-decoder (T5), the source ids (the
/// prompt) and their key masks (1 on each real source token).
struct ForwardRoles {
  int target = 0;
  int source = -1;
  std::vector<int> masks;
};

/// Whether `model` is an encoder-decoder: its prompt is a source to
/// translate or summarize, not the start of the text it writes.
bool isEncoderDecoder(const Model &model);

/// What a generate() call did, for the summary line.
struct GenerateStats {
  int64_t promptTokens = 0, generatedTokens = 0;
  double prefillSeconds = 0, decodeSeconds = 0;
  bool cached = false; // decoded incrementally with the key/value cache
};

/// The ids that end a generated sequence for `tokenizer`: llama2.c's BOS
/// (run.c stops there: BOS delimits its training stories) and EOS; none for
/// char and byte tokenizers.
std::vector<int32_t> stopTokens(const Tokenizer &tokenizer);

/// Sees each new token of row `row` as it is chosen; returning false ends
/// that row (a stop string was printed, say).
using TokenCallback = std::function<bool(size_t row, int32_t id)>;

class KvCache;

/// Generation one step at a time (what generate() loops over, and what a
/// token iterator drives): each step gives every row still going its next
/// token. The first step runs the prompts. A Generation belongs to one
/// caller; the model may serve several at once.
class Generation {
public:
  ~Generation();
  /// Checks the model, the prompts and the options; runs nothing yet.
  static Status start(Model &model,
                      const std::vector<std::vector<int32_t>> &prompts,
                      const GenerateOptions &options,
                      std::unique_ptr<Generation> &out);
  /// One step: `tokens` gets (row, id) for each row that produced a token.
  /// A row ends when it reaches maxTokens or picks a stop token (which it
  /// does not produce).
  Status step(std::vector<std::pair<size_t, int32_t>> &tokens);
  bool done() const;
  /// Ends row `row` now (its caller saw a stop string).
  void end(size_t row) { active_[row] = false; }
  /// The tokens each row has produced.
  const std::vector<std::vector<int32_t>> &generated() const { return out_; }
  const GenerateStats &stats() const { return stats_; }

private:
  Generation(Model &model, const GenerateOptions &options);
  Status stepCached(std::vector<std::pair<size_t, int32_t>> &tokens);
  Status stepRecomputing(std::vector<std::pair<size_t, int32_t>> &tokens);
  /// Takes row b's next token from its logits.
  void advance(size_t b, const float *logits, int64_t vocab,
               std::vector<std::pair<size_t, int32_t>> &tokens);

  Model &model_;
  GenerateOptions options_;
  const FunctionInfo *forward_ = nullptr;
  ForwardRoles roles_;
  std::vector<std::vector<int32_t>> sources_; // an encoder-decoder's prompts
  int64_t window_ = 0;
  std::vector<std::vector<int32_t>> history_, out_, pending_;
  std::vector<bool> active_;
  std::vector<uint64_t> rng_;
  std::unique_ptr<KvCache> cache_;
  Tensor logits_;
  std::vector<Tensor> results_;
  std::vector<double> scratch_;
  std::vector<std::pair<double, int64_t>> ranked_;
  std::vector<bool> seen_;
  bool started_ = false;
  GenerateStats stats_;
};

/// Continues each prompt with a decoder model whose `forward` maps token
/// ids [B, T] to logits [B, T, vocab]; the prompts (of any lengths) decode
/// together as one batch. An encoder-decoder's prompts are its sources:
/// the output starts from the decoder start token instead. Models with learned
/// positions (hyperparameter n_positions or max_position_embeddings) have a
/// context window: a longer prompt keeps its newest tokens, and a sequence that
/// fills the window continues from its newest half (recomputed into the cache).
Status generate(Model &model, const std::vector<std::vector<int32_t>> &prompts,
                const GenerateOptions &options,
                std::vector<std::vector<int32_t>> &out,
                const TokenCallback &onToken = {},
                GenerateStats *stats = nullptr);

/// One prompt.
Status generate(Model &model, const std::vector<int32_t> &prompt,
                const GenerateOptions &options, std::vector<int32_t> &out,
                const std::function<void(int32_t)> &onToken = {});

/// Holds back streamed text that may be the start of a stop string, so
/// that a stop string is never printed: feed() returns the text that is
/// safe to show and sets `stopped` once a stop string has appeared (the
/// text before it is returned; nothing after it).
class StopMatcher {
public:
  explicit StopMatcher(std::vector<std::string> stops)
      : stops_(std::move(stops)) {}
  std::string feed(const std::string &text);
  /// What is held back, at the end of generation.
  std::string flush();
  bool stopped() const { return stopped_; }

private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

} // namespace kiln::runtime

#endif
