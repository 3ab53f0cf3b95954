//===- Generate.cpp - autoregressive decoding -----------------------------===//
#include "runtime/Generate.h"

#include "runtime/Random.h"

#include <algorithm>
#include <climits>
#include <cmath>

using namespace kiln::runtime;

namespace {

int64_t pickToken(const float *logits, int64_t vocab, double temperature,
                  double topP, SplitMix64 &rng) {
  if (temperature == 0)
    return std::max_element(logits, logits + vocab) - logits;
  double m = *std::max_element(logits, logits + vocab);
  std::vector<std::pair<double, int64_t>> p(vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    p[i] = {std::exp((logits[i] - m) / temperature), i};
    sum += p[i].first;
  }
  std::sort(p.begin(), p.end(), [](const auto &a, const auto &b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  // Nucleus: the smallest prefix whose probability reaches top_p.
  double kept = 0;
  size_t n = 0;
  while (n < p.size() && kept < topP * sum)
    kept += p[n++].first;
  double r = rng.uniform() * kept;
  for (size_t i = 0; i < n; ++i) {
    r -= p[i].first;
    if (r < 0)
      return p[i].second;
  }
  return p[n - 1].second;
}

} // namespace

std::vector<int32_t> kiln::runtime::stopTokens(const Tokenizer &tokenizer) {
  std::vector<int32_t> stop;
  for (int32_t id : {tokenizer.bos(), tokenizer.eos()})
    if (id >= 0)
      stop.push_back(id);
  return stop;
}

Status kiln::runtime::generate(Model &model, const std::vector<int32_t> &prompt,
                               const GenerateOptions &options,
                               std::vector<int32_t> &out,
                               const std::function<void(int32_t)> &onToken) {
  out.clear();
  if (prompt.empty())
    return Status::error("the prompt is empty");
  if (options.maxTokens < 0 || !(options.temperature >= 0) ||
      !(options.topP > 0 && options.topP <= 1))
    return Status::error("max_tokens must be >= 0, temperature >= 0 and "
                         "top_p in (0, 1]");
  const FunctionInfo *forward = nullptr;
  for (const FunctionInfo &f : model.functions())
    if (f.name == "forward")
      forward = &f;
  if (!forward || forward->inputs.size() != 1 ||
      forward->inputs[0].dims.size() != 2 || forward->outputs.size() != 1 ||
      forward->outputs[0].dims.size() != 3 ||
      (forward->inputs[0].dtype != DType::I32 &&
       forward->inputs[0].dtype != DType::I64))
    return Status::error("generate needs a decoder model whose 'forward' "
                         "takes token ids [B, T] and returns logits [B, T, "
                         "vocab]");
  // Models with learned positions have a context window; keep the most
  // recent tokens that fit.
  int64_t window = INT64_MAX;
  for (const auto &[name, v] : model.hyperparameters())
    if (name == "n_positions" || name == "max_position_embeddings")
      window = static_cast<int64_t>(v);
  std::vector<int32_t> seq = prompt;
  SplitMix64 rng{options.seed};
  std::vector<Tensor> result;
  for (int64_t step = 0; step < options.maxTokens; ++step) {
    int64_t start =
        std::max<int64_t>(0, static_cast<int64_t>(seq.size()) - window);
    int64_t len = static_cast<int64_t>(seq.size()) - start;
    Tensor tokens(forward->inputs[0].dtype, {1, len});
    for (int64_t i = 0; i < len; ++i) {
      if (tokens.dtype() == DType::I32)
        tokens.as<int32_t>()[i] = seq[start + i];
      else
        tokens.as<int64_t>()[i] = seq[start + i];
    }
    if (Status s =
            model.run("forward", {{forward->inputs[0].name, tokens}}, result);
        !s)
      return s;
    const Tensor &logits = result[0];
    int64_t vocab = logits.shape()[2];
    int32_t next = static_cast<int32_t>(
        pickToken(logits.as<float>() + (len - 1) * vocab, vocab,
                  options.temperature, options.topP, rng));
    if (std::find(options.stopTokens.begin(), options.stopTokens.end(),
                  next) != options.stopTokens.end())
      break;
    seq.push_back(next);
    out.push_back(next);
    if (onToken)
      onToken(next);
  }
  return Status::ok();
}
