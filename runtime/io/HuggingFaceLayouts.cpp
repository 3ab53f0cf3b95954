//===- HuggingFaceLayouts.cpp - Hugging Face names onto kiln's examples ---===//
//
// One row per model_type: the config.json settings the mapping relies on,
// name rewrites (applied in order, each to the result of the last), tensors
// to drop (buffers and tied copies the examples do not declare), weights to
// transpose, and a per-architecture fix-up for anything else (Llama's
// rotary row order). Patterns are ECMAScript regular expressions matched
// against whole names.
//
//===----------------------------------------------------------------------===//
#include "runtime/io/HuggingFaceLayouts.h"

#include <cstring>
#include <initializer_list>
#include <regex>

using namespace kiln::runtime;
using namespace kiln::runtime::hf;

namespace {

struct Rewrite {
  const char *pattern, *replacement;
};

struct Rules {
  std::vector<Rewrite> rewrites;
  std::vector<const char *> drops;
  std::vector<const char *> transposes;
  /// Hugging Face's default for tie_word_embeddings in this model's config
  /// class: when tied, a stored lm_head.weight is a copy of the embedding.
  bool tiedByDefault = true;
};

bool tied(const HuggingFaceConfig &config, bool byDefault) {
  const JsonValue *v = config.json.get("tie_word_embeddings");
  return v && v->kind == JsonValue::Kind::Bool ? v->boolean : byDefault;
}

Status transpose2d(const std::string &name, Tensor &t) {
  if (t.rank() != 2 || t.dtype() != DType::F32)
    return Status::error("Hugging Face tensor '" + name + "' is " +
                         t.describe() +
                         "; a Conv1D weight is a 2-d f32 "
                         "matrix");
  int64_t rows = t.shape()[0], cols = t.shape()[1];
  Tensor out = Tensor::uninitialized(DType::F32, {cols, rows});
  const float *s = t.as<float>();
  float *d = out.as<float>();
  constexpr int64_t kTile = 32;
  for (int64_t i0 = 0; i0 < rows; i0 += kTile)
    for (int64_t j0 = 0; j0 < cols; j0 += kTile)
      for (int64_t i = i0; i < std::min(rows, i0 + kTile); ++i)
        for (int64_t j = j0; j < std::min(cols, j0 + kTile); ++j)
          d[j * rows + i] = s[i * cols + j];
  t = std::move(out);
  return Status::ok();
}

Status applyRules(const HuggingFaceConfig &config, const Rules &rules,
                  NamedTensors &tensors) {
  std::vector<std::pair<std::regex, std::string>> rewrites;
  for (const Rewrite &r : rules.rewrites)
    rewrites.emplace_back(std::regex(r.pattern), r.replacement);
  std::vector<std::regex> drops, transposes;
  for (const char *p : rules.drops)
    drops.emplace_back(p);
  if (tied(config, rules.tiedByDefault))
    drops.emplace_back("lm_head\\.weight");
  for (const char *p : rules.transposes)
    transposes.emplace_back(p);
  NamedTensors kept;
  kept.reserve(tensors.size());
  for (auto &[name, t] : tensors) {
    std::string mapped = name;
    for (const auto &[re, replacement] : rewrites) {
      std::smatch m;
      if (std::regex_match(mapped, m, re))
        mapped = m.format(replacement);
    }
    bool drop = false;
    for (const std::regex &re : drops)
      drop = drop || std::regex_match(mapped, re);
    if (drop)
      continue;
    for (const std::regex &re : transposes)
      if (std::regex_match(mapped, re))
        if (Status s = transpose2d(name, t); !s)
          return s;
    kept.emplace_back(std::move(mapped), std::move(t));
  }
  tensors = std::move(kept);
  return Status::ok();
}

/// Checks that config.json's `key`, when present and not null, is one of
/// `allowed` (all strings).
Status expectOneOf(const HuggingFaceConfig &config, const std::string &where,
                   const char *key, std::initializer_list<const char *> allowed,
                   const char *why) {
  const JsonValue *v = config.json.get(key);
  if (!v || v->kind == JsonValue::Kind::Null)
    return Status::ok();
  if (v->isString())
    for (const char *a : allowed)
      if (v->string == a)
        return Status::ok();
  std::string list;
  for (const char *a : allowed)
    list += (list.empty() ? "" : " or ") + std::string("\"") + a + "\"";
  std::string got = v->isString() ? "\"" + v->string + "\"" : v->kindName();
  return Status::error(where + ": \"" + key + "\" is " + got + "; kiln's " +
                       config.modelType + " supports " + list + " (" + why +
                       ")");
}

/// Checks that config.json's `key` is absent, null or false.
Status expectUnset(const HuggingFaceConfig &config, const std::string &where,
                   const char *key, const char *why) {
  const JsonValue *v = config.json.get(key);
  if (!v || v->kind == JsonValue::Kind::Null ||
      (v->kind == JsonValue::Kind::Bool && !v->boolean))
    return Status::ok();
  return Status::error(where + ": \"" + key + "\" is set, which kiln's " +
                       config.modelType + " does not support (" + why + ")");
}

Status firstError(std::initializer_list<Status> checks) {
  for (const Status &s : checks)
    if (!s)
      return s;
  return Status::ok();
}

// ---- GPT-2 (GPT2LMHeadModel, GPT2Model) -----------------------------------

Status checkGpt2(const HuggingFaceConfig &c, const std::string &where) {
  return firstError(
      {expectOneOf(c, where, "activation_function",
                   {"gelu_new", "gelu_pytorch_tanh"},
                   "examples/gpt2.kiln uses the tanh approximation of GELU"),
       expectUnset(c, where, "scale_attn_by_inverse_layer_idx",
                   "attention is scaled by 1/sqrt(head size) only")});
}

Status mapGpt2(const HuggingFaceConfig &c, NamedTensors &t) {
  Rules r;
  r.rewrites = {{"transformer\\.(.*)", "$1"}};
  // The causal mask is a buffer in older checkpoints, not a weight.
  r.drops = {"h\\.\\d+\\.attn\\.(bias|masked_bias)"};
  // Conv1D stores [in, out]; kiln's linear (like nn.Linear) is [out, in].
  r.transposes = {"h\\.\\d+\\.(attn\\.c_attn|attn\\.c_proj|mlp\\.c_fc|"
                  "mlp\\.c_proj)\\.weight"};
  return applyRules(c, r, t);
}

// ---- Llama (LlamaForCausalLM) ---------------------------------------------

Status checkLlama(const HuggingFaceConfig &c, const std::string &where) {
  return firstError(
      {expectOneOf(c, where, "hidden_act", {"silu"},
                   "examples/llama.kiln's feed-forward is SwiGLU"),
       expectUnset(c, where, "rope_scaling",
                   "rotary embeddings use rope_theta unscaled"),
       expectUnset(c, where, "attention_bias", "projections have no bias"),
       expectUnset(c, where, "mlp_bias", "projections have no bias")});
}

/// Hugging Face's conversion script permutes the rows of q_proj and k_proj
/// so that RoPE rotates the two halves of each head (rotate_half); kiln's
/// llama, like llama.c and Meta's checkpoints, rotates interleaved pairs.
/// Row h*hd + s*hd/2 + i (s in {0, 1}) goes back to h*hd + 2i + s.
Status interleaveRotaryRows(const std::string &name, Tensor &t,
                            int64_t headDim) {
  if (t.rank() != 2 || t.dtype() != DType::F32 || headDim <= 0 || headDim % 2 ||
      t.shape()[0] % headDim)
    return Status::error("Hugging Face tensor '" + name + "' is " +
                         t.describe() + ", not a stack of " +
                         std::to_string(headDim) +
                         "-row heads (head_dim from config.json)");
  int64_t rows = t.shape()[0], cols = t.shape()[1], half = headDim / 2;
  Tensor out = Tensor::uninitialized(DType::F32, t.shape());
  const float *s = t.as<float>();
  float *d = out.as<float>();
  for (int64_t h = 0; h < rows / headDim; ++h)
    for (int64_t side = 0; side < 2; ++side)
      for (int64_t i = 0; i < half; ++i)
        std::memcpy(d + (h * headDim + 2 * i + side) * cols,
                    s + (h * headDim + side * half + i) * cols,
                    cols * sizeof(float));
  t = std::move(out);
  return Status::ok();
}

Status mapLlama(const HuggingFaceConfig &c, NamedTensors &t) {
  Rules r;
  r.drops = {"model\\.layers\\.\\d+\\.self_attn\\.rotary_emb\\.inv_freq"};
  r.tiedByDefault = false; // LlamaConfig's default
  if (Status s = applyRules(c, r, t); !s)
    return s;
  int64_t heads = c.integer("num_attention_heads", 0);
  int64_t headDim = c.integer(
      "head_dim", heads > 0 ? c.integer("hidden_size", 0) / heads : 0);
  std::regex qk("model\\.layers\\.\\d+\\.self_attn\\.(q_proj|k_proj)\\.weight");
  for (auto &[name, tensor] : t)
    if (std::regex_match(name, qk))
      if (Status s = interleaveRotaryRows(name, tensor, headDim); !s)
        return s;
  return Status::ok();
}

// ---- BERT (BertForMaskedLM) -----------------------------------------------

Status checkBert(const HuggingFaceConfig &c, const std::string &where) {
  return firstError(
      {expectOneOf(c, where, "hidden_act", {"gelu"},
                   "examples/bert.kiln uses the exact (erf) GELU"),
       expectOneOf(c, where, "position_embedding_type", {"absolute"},
                   "examples/bert.kiln learns absolute positions")});
}

Status mapBert(const HuggingFaceConfig &c, NamedTensors &t) {
  Rules r;
  r.rewrites = {{"bert\\.(.*)", "$1"},
                // Checkpoints from the TensorFlow era name LayerNorm's
                // scale and shift gamma and beta.
                {"(.*LayerNorm)\\.gamma", "$1.weight"},
                {"(.*LayerNorm)\\.beta", "$1.bias"}};
  r.drops = {"embeddings\\.position_ids", "pooler\\..*",
             "cls\\.seq_relationship\\..*",
             // The decoder is the word embedding (tied) plus
             // cls.predictions.bias.
             "cls\\.predictions\\.decoder\\.(weight|bias)"};
  return applyRules(c, r, t);
}

// ---- T5 (T5ForConditionalGeneration) --------------------------------------

Status checkT5(const HuggingFaceConfig &c, const std::string &where) {
  Status s = expectOneOf(c, where, "feed_forward_proj", {"relu"},
                         "examples/t5.kiln's feed-forward is DenseReluDense; "
                         "T5 v1.1's gated-gelu has two input projections");
  if (!s)
    return s;
  if (!tied(c, true))
    return Status::error(where + ": \"tie_word_embeddings\" is false; "
                                 "examples/t5.kiln's classifier is the shared "
                                 "embedding");
  return Status::ok();
}

Status mapT5(const HuggingFaceConfig &c, NamedTensors &t) {
  Rules r;
  // T5 nests each sublayer as layer.N; kiln names them by role.
  r.rewrites = {
      {"(encoder|decoder)\\.block\\.0\\.layer\\.0\\.SelfAttention\\."
       "relative_attention_bias\\.weight",
       "$1.relative_attention_bias.weight"},
      {"(encoder|decoder)\\.block\\.(\\d+)\\.layer\\.\\d+\\."
       "(SelfAttention|EncDecAttention|DenseReluDense)\\.(.*)",
       "$1.block.$2.$3.$4"},
      {"(encoder|decoder)\\.block\\.(\\d+)\\.layer\\.0\\.layer_norm\\.weight",
       "$1.block.$2.attn_layer_norm.weight"},
      {"encoder\\.block\\.(\\d+)\\.layer\\.1\\.layer_norm\\.weight",
       "encoder.block.$1.ff_layer_norm.weight"},
      {"decoder\\.block\\.(\\d+)\\.layer\\.1\\.layer_norm\\.weight",
       "decoder.block.$1.cross_layer_norm.weight"},
      {"decoder\\.block\\.(\\d+)\\.layer\\.2\\.layer_norm\\.weight",
       "decoder.block.$1.ff_layer_norm.weight"}};
  // Both stacks' embed_tokens are the shared embedding.
  r.drops = {"(encoder|decoder)\\.embed_tokens\\.weight"};
  return applyRules(c, r, t);
}

const Layout kLayouts[] = {
    {"gpt2", checkGpt2, mapGpt2},
    {"llama", checkLlama, mapLlama, {{"tie_word_embeddings", "false"}}},
    {"bert", checkBert, mapBert},
    {"t5", checkT5, mapT5},
};

} // namespace

const Layout *kiln::runtime::hf::findLayout(const std::string &modelType) {
  for (const Layout &l : kLayouts)
    if (modelType == l.modelType)
      return &l;
  return nullptr;
}

std::string kiln::runtime::hf::layoutNames() {
  std::string names;
  for (const Layout &l : kLayouts)
    names += (names.empty() ? "" : ", ") + std::string(l.modelType);
  return names;
}
