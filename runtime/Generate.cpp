//===- Generate.cpp - autoregressive decoding -----------------------------===//
#include "runtime/Generate.h"

#include "runtime/KvCache.h"
#include "runtime/Random.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <map>
#include <memory>

using namespace kiln::runtime;

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

Status checkOptions(const GenerateOptions &o) {
  if (o.maxTokens < 0 || !(o.temperature >= 0) ||
      !(o.topP > 0 && o.topP <= 1) || o.topK < 0 ||
      !(o.repetitionPenalty > 0) || !std::isfinite(o.repetitionPenalty))
    return Status::error("max_tokens must be >= 0, temperature >= 0, top_k "
                         ">= 0, top_p in (0, 1] and repetition_penalty > 0");
  return Status::ok();
}

bool tokenIds(const ArgInfo &a) {
  return a.dims.size() == 2 && (a.dtype == DType::I32 || a.dtype == DType::I64);
}

/// The model's `forward`, checked to map token ids to logits, and the role
/// of each of its inputs.
Status decoderForward(const Model &model, const FunctionInfo *&forward,
                      ForwardRoles &roles) {
  forward = nullptr;
  for (const FunctionInfo &f : model.functions())
    if (f.name == "forward")
      forward = &f;
  if (!forward || forward->inputs.empty() ||
      !std::all_of(forward->inputs.begin(), forward->inputs.end(), tokenIds) ||
      forward->outputs.size() != 1 || forward->outputs[0].dims.size() != 3)
    return Status::error("generate needs a decoder model whose 'forward' "
                         "takes token ids [B, T] (and, for an "
                         "encoder-decoder, source ids and masks [B, S]) and "
                         "returns logits [B, T, vocab]");
  roles = ForwardRoles();
  if (forward->inputs.size() == 1)
    return Status::ok();
  // An encoder-decoder: the target ids share the logits' sequence
  // dimension; the first other input is the source, the rest its masks.
  // Inputs along the target's own sequence besides the ids (BERT's token
  // types and mask: it is no decoder) are not something generate can fill.
  roles.target = -1;
  const std::string &targetDim = forward->outputs[0].dims[1];
  for (size_t i = 0; i < forward->inputs.size(); ++i) {
    const ArgInfo &a = forward->inputs[i];
    if (a.dims[1] == targetDim && roles.target >= 0)
      return Status::error("generate needs a decoder model whose 'forward' "
                           "takes token ids [B, T] (and, for an "
                           "encoder-decoder, source ids and masks [B, S]) "
                           "and returns logits [B, T, vocab]; '" +
                           forward->inputs[roles.target].name + "' and '" +
                           a.name + "' both run along T");
    if (a.dims[1] == targetDim)
      roles.target = static_cast<int>(i);
    else if (roles.source < 0)
      roles.source = static_cast<int>(i);
    else if (a.dims[1] == forward->inputs[roles.source].dims[1])
      roles.masks.push_back(static_cast<int>(i));
    else
      return Status::error("generate fills an encoder-decoder's source ids "
                           "and their masks; 'forward' also takes '" +
                           a.name + "'");
  }
  if (roles.target < 0 || roles.source < 0)
    return Status::error("generate cannot tell the source ids from the "
                         "target ids among 'forward''s inputs");
  return Status::ok();
}

/// Rows of ids (or, with `mask`, 1 where a row has a token) as a [B, L]
/// tensor of `dtype`, right-padded with zeros.
Tensor idsTensor(DType dtype, const std::vector<std::vector<int32_t>> &rows,
                 bool mask = false) {
  size_t L = 0;
  for (const std::vector<int32_t> &r : rows)
    L = std::max(L, r.size());
  Tensor t(dtype, {static_cast<int64_t>(rows.size()), static_cast<int64_t>(L)});
  for (size_t b = 0; b < rows.size(); ++b)
    for (size_t i = 0; i < rows[b].size(); ++i) {
      int32_t v = mask ? 1 : rows[b][i];
      if (dtype == DType::I64)
        t.as<int64_t>()[b * L + i] = v;
      else
        t.as<int32_t>()[b * L + i] = v;
    }
  return t;
}

/// The forward's inputs besides the target ids: an encoder-decoder's
/// source rows and their masks.
void addSources(const FunctionInfo &forward, const ForwardRoles &roles,
                const std::vector<std::vector<int32_t>> &sources,
                std::map<std::string, Tensor> &inputs) {
  if (roles.source < 0)
    return;
  const ArgInfo &src = forward.inputs[roles.source];
  inputs[src.name] = idsTensor(src.dtype, sources);
  for (int m : roles.masks)
    inputs[forward.inputs[m].name] =
        idsTensor(forward.inputs[m].dtype, sources, /*mask=*/true);
}

/// The context window of a model with learned positions, else unbounded.
int64_t contextWindow(const Model &model) {
  int64_t window = INT64_MAX;
  for (const auto &[name, v] : model.hyperparameters())
    if (name == "n_positions" || name == "max_position_embeddings")
      window = std::max<int64_t>(2, static_cast<int64_t>(v));
  return window;
}

std::vector<int32_t> newest(const std::vector<int32_t> &seq, int64_t n) {
  size_t keep = static_cast<size_t>(
      std::min<int64_t>(n, static_cast<int64_t>(seq.size())));
  return std::vector<int32_t>(seq.end() - keep, seq.end());
}

} // namespace

bool kiln::runtime::isEncoderDecoder(const Model &model) {
  const FunctionInfo *forward = nullptr;
  ForwardRoles roles;
  return decoderForward(model, forward, roles) && roles.source >= 0;
}

std::vector<int32_t> kiln::runtime::stopTokens(const Tokenizer &tokenizer) {
  std::vector<int32_t> stop;
  for (int32_t id : {tokenizer.bos(), tokenizer.eos()})
    if (id >= 0)
      stop.push_back(id);
  return stop;
}

Generation::Generation(Model &model, const GenerateOptions &options)
    : model_(model), options_(options) {}

Generation::~Generation() = default;

Status Generation::start(Model &model,
                         const std::vector<std::vector<int32_t>> &prompts,
                         const GenerateOptions &options,
                         std::unique_ptr<Generation> &out) {
  if (prompts.empty())
    return Status::error("there are no prompts");
  for (size_t b = 0; b < prompts.size(); ++b)
    if (prompts[b].empty())
      return Status::error(prompts.size() == 1
                               ? std::string("the prompt is empty")
                               : "prompt " + std::to_string(b) + " is empty");
  if (Status s = checkOptions(options); !s)
    return s;
  std::unique_ptr<Generation> g(new Generation(model, options));
  if (Status s = decoderForward(model, g->forward_, g->roles_); !s)
    return s;
  g->window_ = contextWindow(model);
  g->history_ = prompts;
  if (g->roles_.source >= 0) {
    // An encoder-decoder continues no text: the prompts are its sources,
    // and each target starts from the decoder start token.
    int64_t start = options.decoderStart;
    if (start < 0) {
      start = 0;
      for (const auto &[name, v] : model.hyperparameters())
        if (name == "decoder_start_token_id")
          start = static_cast<int64_t>(v);
    }
    if (start < 0 || start > INT32_MAX)
      return Status::error("the decoder start token " + std::to_string(start) +
                           " is not a token id");
    g->sources_ = prompts;
    g->history_.assign(prompts.size(), {static_cast<int32_t>(start)});
  }
  g->out_.assign(prompts.size(), {});
  g->active_.assign(prompts.size(), options.maxTokens > 0);
  for (size_t b = 0; b < prompts.size(); ++b) {
    g->rng_.push_back(options.seed + b * 0xd1b54a32d192ed03ull);
    g->stats_.promptTokens += static_cast<int64_t>(prompts[b].size());
  }
  g->stats_.cached = !options.recompute && KvCache::decodeFunction(model);
  out = std::move(g);
  return Status::ok();
}

bool Generation::done() const {
  return std::find(active_.begin(), active_.end(), true) == active_.end();
}

void Generation::advance(size_t b, const float *logits, int64_t vocab,
                         std::vector<std::pair<size_t, int32_t>> &tokens) {
  const GenerateOptions &o = options_;
  std::vector<double> &l = scratch_;
  l.assign(logits, logits + vocab);
  if (o.repetitionPenalty != 1.0) {
    seen_.assign(static_cast<size_t>(vocab), false);
    for (int32_t id : history_[b])
      if (id >= 0 && id < vocab && !seen_[id]) {
        seen_[id] = true;
        l[id] = l[id] > 0 ? l[id] / o.repetitionPenalty
                          : l[id] * o.repetitionPenalty;
      }
  }
  int32_t next;
  if (o.temperature == 0) {
    next =
        static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
  } else {
    double m = *std::max_element(l.begin(), l.end());
    std::vector<std::pair<double, int64_t>> &p = ranked_;
    p.resize(static_cast<size_t>(vocab));
    for (int64_t i = 0; i < vocab; ++i)
      p[i] = {std::exp((l[i] - m) / o.temperature), i};
    auto before = [](const auto &x, const auto &y) {
      return x.first > y.first || (x.first == y.first && x.second < y.second);
    };
    size_t n = p.size();
    if (o.topK > 0 && static_cast<size_t>(o.topK) < n) {
      n = static_cast<size_t>(o.topK);
      std::partial_sort(p.begin(), p.begin() + n, p.end(), before);
    } else {
      std::sort(p.begin(), p.end(), before);
    }
    double sum = 0;
    for (size_t i = 0; i < n; ++i)
      sum += p[i].first;
    // Nucleus: the smallest prefix whose probability reaches top_p.
    double kept = 0;
    size_t keep = 0;
    while (keep < n && kept < o.topP * sum)
      kept += p[keep++].first;
    SplitMix64 rng{rng_[b]};
    double r = rng.uniform() * kept;
    rng_[b] = rng.state;
    next = static_cast<int32_t>(p[keep - 1].second);
    for (size_t i = 0; i < keep; ++i) {
      r -= p[i].first;
      if (r < 0) {
        next = static_cast<int32_t>(p[i].second);
        break;
      }
    }
  }
  if (std::find(o.stopTokens.begin(), o.stopTokens.end(), next) !=
      o.stopTokens.end()) {
    active_[b] = false;
    return;
  }
  history_[b].push_back(next);
  out_[b].push_back(next);
  tokens.push_back({b, next});
  ++stats_.generatedTokens;
  if (static_cast<int64_t>(out_[b].size()) >= o.maxTokens)
    active_[b] = false;
}

Status Generation::step(std::vector<std::pair<size_t, int32_t>> &tokens) {
  tokens.clear();
  if (done())
    return Status::ok();
  auto t0 = Clock::now();
  Status s = stats_.cached ? stepCached(tokens) : stepRecomputing(tokens);
  (started_ ? stats_.decodeSeconds : stats_.prefillSeconds) += since(t0);
  started_ = true;
  return s;
}

Status Generation::stepCached(std::vector<std::pair<size_t, int32_t>> &tokens) {
  size_t B = history_.size();
  if (!cache_) {
    // The prompts (their newest tokens within the window) are the first
    // step's new tokens.
    pending_.resize(B);
    int64_t longest = 0;
    for (size_t b = 0; b < B; ++b) {
      pending_[b] = newest(history_[b], window_);
      longest =
          std::max<int64_t>(longest, static_cast<int64_t>(pending_[b].size()));
    }
    int64_t length = std::min(window_, longest + options_.maxTokens);
    if (Status s = KvCache::create(model_, static_cast<int64_t>(B),
                                   KvCache::slotsFor(model_, length), cache_);
        !s)
      return s;
    if (roles_.source >= 0) {
      std::map<std::string, Tensor> context;
      addSources(*forward_, roles_, sources_, context);
      if (Status s = cache_->setContext(model_, context); !s)
        return s;
    }
  }
  for (size_t b = 0; b < B; ++b)
    if (!active_[b])
      pending_[b].clear();
  if (Status s = cache_->append(model_, pending_, logits_); !s)
    return s;
  int64_t T = logits_.shape()[1], vocab = logits_.shape()[2];
  for (size_t b = 0; b < B; ++b) {
    if (pending_[b].empty())
      continue;
    advance(b, logits_.as<float>() + (b * T + pending_[b].size() - 1) * vocab,
            vocab, tokens);
    pending_[b].clear();
    if (!active_[b])
      continue;
    pending_[b] = {history_[b].back()};
    if (cache_->room(static_cast<int64_t>(b)) < 1) {
      // The window is full: continue from its newest half.
      cache_->clearRow(static_cast<int64_t>(b));
      pending_[b] = newest(history_[b], std::max<int64_t>(1, window_ / 2));
    }
  }
  return Status::ok();
}

Status
Generation::stepRecomputing(std::vector<std::pair<size_t, int32_t>> &tokens) {
  for (size_t b = 0; b < history_.size(); ++b) {
    if (!active_[b])
      continue;
    std::vector<int32_t> seq = newest(history_[b], window_);
    int64_t len = static_cast<int64_t>(seq.size());
    const ArgInfo &target = forward_->inputs[roles_.target];
    std::map<std::string, Tensor> inputs{
        {target.name, idsTensor(target.dtype, {seq})}};
    if (roles_.source >= 0)
      addSources(*forward_, roles_, {sources_[b]}, inputs);
    if (Status s = model_.run("forward", inputs, results_); !s)
      return s;
    int64_t vocab = results_[0].shape()[2];
    advance(b, results_[0].as<float>() + (len - 1) * vocab, vocab, tokens);
  }
  return Status::ok();
}

Status kiln::runtime::generate(Model &model,
                               const std::vector<std::vector<int32_t>> &prompts,
                               const GenerateOptions &options,
                               std::vector<std::vector<int32_t>> &out,
                               const TokenCallback &onToken,
                               GenerateStats *stats) {
  out.assign(prompts.size(), {});
  std::unique_ptr<Generation> g;
  if (Status s = Generation::start(model, prompts, options, g); !s)
    return s;
  std::vector<std::pair<size_t, int32_t>> tokens;
  Status s;
  while (!g->done()) {
    if (s = g->step(tokens); !s)
      break;
    for (auto [row, id] : tokens)
      if (onToken && !onToken(row, id))
        g->end(row);
  }
  out = g->generated();
  if (stats)
    *stats = g->stats();
  return s;
}

Status kiln::runtime::generate(Model &model, const std::vector<int32_t> &prompt,
                               const GenerateOptions &options,
                               std::vector<int32_t> &out,
                               const std::function<void(int32_t)> &onToken) {
  std::vector<std::vector<int32_t>> outs;
  Status s = generate(model, {prompt}, options, outs, [&](size_t, int32_t id) {
    if (onToken)
      onToken(id);
    return true;
  });
  out = outs.empty() ? std::vector<int32_t>() : outs[0];
  return s;
}

std::string StopMatcher::feed(const std::string &text) {
  if (stopped_)
    return "";
  held_ += text;
  size_t first = std::string::npos;
  for (const std::string &s : stops_)
    if (!s.empty())
      first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string shown = held_.substr(0, first);
    held_.clear();
    return shown;
  }
  // Hold back the longest tail that could still begin a stop string.
  size_t hold = 0;
  for (const std::string &s : stops_)
    for (size_t n = std::min(s.size() - (s.empty() ? 0 : 1), held_.size());
         n > hold; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  std::string shown = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return shown;
}

std::string StopMatcher::flush() {
  std::string rest = stopped_ ? std::string() : held_;
  held_.clear();
  return rest;
}
