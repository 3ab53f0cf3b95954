//===- Llama2c.cpp - llama2.c checkpoints ---------------------------------===//
#include "runtime/Llama2c.h"
#include "runtime/File.h"

#include <climits>
#include <cstring>
#include <fstream>

using namespace kiln::runtime;

std::vector<std::pair<std::string, int64_t>>
Llama2cConfig::hyperparameters() const {
  return {{"vocab_size", vocab},
          {"hidden_size", dim},
          {"intermediate_size", hiddenDim},
          {"num_hidden_layers", layers},
          {"num_attention_heads", heads},
          {"num_key_value_heads", kvHeads},
          {"max_position_embeddings", seqLen}};
}

Status kiln::runtime::parseLlama2cHeader(const int32_t h[7],
                                         const std::string &path,
                                         Llama2cConfig &c,
                                         uint64_t &fileBytes) {
  c.dim = h[0];
  c.hiddenDim = h[1];
  c.layers = h[2];
  c.heads = h[3];
  c.kvHeads = h[4];
  c.sharedClassifier = h[5] > 0;
  // A negative vocab_size means the classifier is stored separately.
  c.vocab = h[5] > 0 ? h[5] : (h[5] == INT32_MIN ? 0 : -h[5]);
  c.seqLen = h[6];
  const char *names[] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                         "n_kv_heads", "vocab_size", "seq_len"};
  int32_t vals[] = {c.dim,     c.hiddenDim, c.layers, c.heads,
                    c.kvHeads, c.vocab,     c.seqLen};
  for (int i = 0; i < 7; ++i)
    if (vals[i] <= 0 || vals[i] > (1 << 20))
      return Status::error(path + ": header field " + names[i] + " = " +
                           std::to_string(h[i]) + " at byte " +
                           std::to_string(4 * i) +
                           " is not a plausible size; is this a llama2.c "
                           "checkpoint?");
  if (c.dim % c.heads || c.heads % c.kvHeads)
    return Status::error(path + ": header has dim " + std::to_string(c.dim) +
                         ", " + std::to_string(c.heads) + " heads and " +
                         std::to_string(c.kvHeads) +
                         " key/value heads, which do not divide evenly");
  if ((c.dim / c.heads) % 2)
    return Status::error(path + ": header has dim " + std::to_string(c.dim) +
                         " and " + std::to_string(c.heads) +
                         " heads: a head size of " +
                         std::to_string(c.dim / c.heads) +
                         ", but rotary embeddings rotate pairs and need an "
                         "even head size");
  // Each field is at most 2^20, so the count of floats is below 2^63 (the
  // largest term, 3 L Hd D, is below 2^62), but four bytes each could wrap
  // around 64 bits: a header that lies could then claim the size of a
  // small file. Counted in 128 bits and refused past 2^62 bytes.
  using u128 = unsigned __int128;
  u128 head = c.dim / c.heads, kvDim = head * c.kvHeads;
  u128 L = c.layers, D = c.dim, Hd = c.hiddenDim, V = c.vocab;
  u128 floats = V * D + L * D + L * D * D + 2 * L * kvDim * D + L * D * D +
                L * D + 3 * L * Hd * D + D +
                u128(c.seqLen) * head + // two RoPE tables of head/2
                (c.sharedClassifier ? 0 : V * D);
  u128 want = 28 + 4 * floats;
  if (want > (u128(1) << 62))
    return Status::error(path + ": the header describes a checkpoint of "
                                "more than 2^62 bytes; is this a llama2.c "
                                "checkpoint?");
  fileBytes = static_cast<uint64_t>(want);
  return Status::ok();
}

namespace {
// Opens `path` and reads and checks its header against the file's size,
// leaving `f` at the first tensor. Config and weights come from this one
// open file, so they cannot come from two different files.
Status openLlama2c(const std::string &path, std::ifstream &f,
                   Llama2cConfig &c) {
  uint64_t size = 0;
  if (Status s = openInput(path, f, size); !s)
    return s;
  int32_t h[7];
  if (size < sizeof(h) || !f.read(reinterpret_cast<char *>(h), sizeof(h)))
    return Status::error(path + ": too short for a llama2.c checkpoint (no "
                                "28-byte header)");
  uint64_t want = 0;
  if (Status s = parseLlama2cHeader(h, path, c, want); !s)
    return s;
  if (size != want)
    return Status::error(path + ": the header describes a " +
                         std::to_string(want) +
                         "-byte checkpoint, but the "
                         "file has " +
                         std::to_string(size) + " bytes");
  return Status::ok();
}
} // namespace

Status kiln::runtime::readLlama2cConfig(const std::string &path,
                                        Llama2cConfig &c) {
  std::ifstream f;
  return openLlama2c(path, f, c);
}

Status kiln::runtime::readLlama2c(const std::string &path, Llama2cConfig &c,
                                  NamedTensors &out) {
  std::ifstream f;
  if (Status s = openLlama2c(path, f, c); !s)
    return s;
  int64_t D = c.dim, Hd = c.hiddenDim, kvDim = D / c.heads * c.kvHeads;
  auto read = [&](Tensor &t) {
    return static_cast<bool>(f.read(static_cast<char *>(t.data()),
                                    static_cast<std::streamsize>(t.bytes())));
  };
  // Stacked [layers, ...] arrays are split into one tensor per layer.
  auto perLayer = [&](const std::string &suffix,
                      std::vector<int64_t> shape) -> Status {
    for (int32_t l = 0; l < c.layers; ++l) {
      Tensor t(DType::F32, shape);
      if (!read(t))
        return Status::error(path + ": cannot read " + suffix);
      out.emplace_back("model.layers." + std::to_string(l) + "." + suffix,
                       std::move(t));
    }
    return Status::ok();
  };
  out.clear();
  Tensor emb(DType::F32, {c.vocab, D});
  if (!read(emb))
    return Status::error(path + ": cannot read the token embedding");
  out.emplace_back("model.embed_tokens.weight", std::move(emb));
  const std::pair<const char *, std::vector<int64_t>> layout[] = {
      {"input_layernorm.weight", {D}},
      {"self_attn.q_proj.weight", {D, D}},
      {"self_attn.k_proj.weight", {kvDim, D}},
      {"self_attn.v_proj.weight", {kvDim, D}},
      {"self_attn.o_proj.weight", {D, D}},
      {"post_attention_layernorm.weight", {D}},
      {"mlp.gate_proj.weight", {Hd, D}},
      {"mlp.down_proj.weight", {D, Hd}},
      {"mlp.up_proj.weight", {Hd, D}}};
  for (const auto &[suffix, shape] : layout)
    if (Status s = perLayer(suffix, shape); !s)
      return s;
  Tensor norm(DType::F32, {D});
  if (!read(norm))
    return Status::error(path + ": cannot read the final norm");
  out.emplace_back("model.norm.weight", std::move(norm));
  // Skip the precomputed RoPE tables; kiln computes rotations itself.
  f.seekg(static_cast<std::streamoff>(c.seqLen) * (D / c.heads) * 4,
          std::ios::cur);
  if (!c.sharedClassifier) {
    Tensor cls(DType::F32, {c.vocab, D});
    if (!read(cls))
      return Status::error(path + ": cannot read the classifier");
    out.emplace_back("lm_head.weight", std::move(cls));
  }
  return Status::ok();
}
