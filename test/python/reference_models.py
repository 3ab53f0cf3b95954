"""Independent PyTorch implementations of the four example architectures,
written from the papers / Hugging Face code, taking weights by kiln's
parameter names. They compute in float64 so they serve as the reference."""
import math

import torch
import torch.nn.functional as F


def t(w, name):
    return torch.as_tensor(w[name], dtype=torch.float64)


def linear(w, prefix, x, bias=True):
    y = x @ t(w, prefix + ".weight").T
    return y + t(w, prefix + ".bias") if bias else y


def layernorm(w, prefix, x, eps):
    return F.layer_norm(x, x.shape[-1:], t(w, prefix + ".weight"),
                        t(w, prefix + ".bias"), eps)


def rmsnorm(w, prefix, x, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * \
        t(w, prefix + ".weight")


def attention(q, k, v, heads, kv_heads, scale, causal=False, mask=None,
              bias=None):
    B, Tq, _ = q.shape
    Tk = k.shape[1]
    q = q.view(B, Tq, heads, -1).transpose(1, 2)
    k = k.view(B, Tk, kv_heads, -1).transpose(1, 2)
    v = v.view(B, Tk, kv_heads, -1).transpose(1, 2)
    k = k.repeat_interleave(heads // kv_heads, dim=1)
    v = v.repeat_interleave(heads // kv_heads, dim=1)
    s = q @ k.transpose(-1, -2) * scale
    if bias is not None:
        s = s + bias
    if causal:
        keep = torch.ones(Tq, Tk, dtype=torch.bool).tril(Tk - Tq)
        s = s.masked_fill(~keep, float("-inf"))
    if mask is not None:
        s = s.masked_fill(torch.as_tensor(mask)[:, None, None, :] == 0,
                          float("-inf"))
    p = torch.softmax(s, dim=-1)
    return (p @ v).transpose(1, 2).reshape(B, Tq, -1)


def gpt2(w, cfg, tokens):
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    T = tokens.shape[1]
    C, H, eps = cfg["n_embd"], cfg["n_head"], 1e-5
    x = t(w, "wte.weight")[tokens] + t(w, "wpe.weight")[:T]
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        q, k, v = linear(w, p + "attn.c_attn", layernorm(w, p + "ln_1", x, eps)
                         ).split(C, dim=-1)
        a = attention(q, k, v, H, H, 1 / math.sqrt(C // H), causal=True)
        x = x + linear(w, p + "attn.c_proj", a)
        h = linear(w, p + "mlp.c_fc", layernorm(w, p + "ln_2", x, eps))
        x = x + linear(w, p + "mlp.c_proj", F.gelu(h, approximate="tanh"))
    return layernorm(w, "ln_f", x, eps) @ t(w, "wte.weight").T


def rope_interleaved(x, heads, theta):
    B, T, C = x.shape
    hd = C // heads
    x = x.view(B, T, heads, hd // 2, 2)
    freq = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    a, b = x[..., 0], x[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).view(B, T, C)


def llama(w, cfg, tokens):
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    hd = cfg["hidden_size"] // H
    x = t(w, "model.embed_tokens.weight")[tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rmsnorm(w, p + "input_layernorm", x, eps)
        q = rope_interleaved(linear(w, p + "self_attn.q_proj", h, False), H,
                             theta)
        k = rope_interleaved(linear(w, p + "self_attn.k_proj", h, False), Hkv,
                             theta)
        v = linear(w, p + "self_attn.v_proj", h, False)
        a = attention(q, k, v, H, Hkv, 1 / math.sqrt(hd), causal=True)
        x = x + linear(w, p + "self_attn.o_proj", a, False)
        h = rmsnorm(w, p + "post_attention_layernorm", x, eps)
        g = F.silu(linear(w, p + "mlp.gate_proj", h, False))
        x = x + linear(w, p + "mlp.down_proj",
                       g * linear(w, p + "mlp.up_proj", h, False), False)
    return rmsnorm(w, "model.norm", x, eps) @ t(w, "model.embed_tokens.weight").T


def bert(w, cfg, input_ids, token_type_ids, attention_mask):
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    tt = torch.as_tensor(token_type_ids, dtype=torch.long)
    T = ids.shape[1]
    C, H, eps = cfg["hidden_size"], cfg["num_attention_heads"], 1e-12
    x = (t(w, "embeddings.word_embeddings.weight")[ids] +
         t(w, "embeddings.position_embeddings.weight")[:T] +
         t(w, "embeddings.token_type_embeddings.weight")[tt])
    x = layernorm(w, "embeddings.LayerNorm", x, eps)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        a = attention(linear(w, p + "attention.self.query", x),
                      linear(w, p + "attention.self.key", x),
                      linear(w, p + "attention.self.value", x), H, H,
                      1 / math.sqrt(C // H), mask=attention_mask)
        x = layernorm(w, p + "attention.output.LayerNorm",
                      x + linear(w, p + "attention.output.dense", a), eps)
        h = F.gelu(linear(w, p + "intermediate.dense", x))
        x = layernorm(w, p + "output.LayerNorm",
                      x + linear(w, p + "output.dense", h), eps)
    h = F.gelu(linear(w, "cls.predictions.transform.dense", x))
    h = layernorm(w, "cls.predictions.transform.LayerNorm", h, eps)
    return h @ t(w, "embeddings.word_embeddings.weight").T + \
        t(w, "cls.predictions.bias")


def t5_bucket(rel, bidirectional, num_buckets, max_distance):
    """Hugging Face's T5Attention._relative_position_bucket."""
    buckets = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0).to(torch.long) * num_buckets
        rel = torch.abs(rel)
    else:
        rel = -torch.min(rel, torch.zeros_like(rel))
    max_exact = num_buckets // 2
    small = rel < max_exact
    large = max_exact + (torch.log(rel.float() / max_exact) /
                         math.log(max_distance / max_exact) *
                         (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(small, rel, large)


def t5_bias(w, name, Tq, Tk, bidirectional, cfg):
    rel = torch.arange(Tk)[None, :] - torch.arange(Tq)[:, None]
    b = t5_bucket(rel, bidirectional, cfg["relative_attention_num_buckets"],
                  cfg["relative_attention_max_distance"])
    return t(w, name + ".weight")[b].permute(2, 0, 1)[None]


def t5(w, cfg, input_ids, attention_mask, decoder_input_ids):
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    dec = torch.as_tensor(decoder_input_ids, dtype=torch.long)
    H, eps = cfg["num_heads"], cfg["layer_norm_epsilon"]
    S, T = ids.shape[1], dec.shape[1]
    x = t(w, "shared.weight")[ids]
    bias = t5_bias(w, "encoder.relative_attention_bias", S, S, True, cfg)
    for i in range(cfg["num_layers"]):
        p = f"encoder.block.{i}."
        h = rmsnorm(w, p + "attn_layer_norm", x, eps)
        a = attention(linear(w, p + "SelfAttention.q", h, False),
                      linear(w, p + "SelfAttention.k", h, False),
                      linear(w, p + "SelfAttention.v", h, False), H, H, 1.0,
                      mask=attention_mask, bias=bias)
        x = x + linear(w, p + "SelfAttention.o", a, False)
        h = rmsnorm(w, p + "ff_layer_norm", x, eps)
        x = x + linear(w, p + "DenseReluDense.wo",
                       F.relu(linear(w, p + "DenseReluDense.wi", h, False)),
                       False)
    enc = rmsnorm(w, "encoder.final_layer_norm", x, eps)
    y = t(w, "shared.weight")[dec]
    bias = t5_bias(w, "decoder.relative_attention_bias", T, T, False, cfg)
    for i in range(cfg["num_decoder_layers"]):
        p = f"decoder.block.{i}."
        h = rmsnorm(w, p + "attn_layer_norm", y, eps)
        a = attention(linear(w, p + "SelfAttention.q", h, False),
                      linear(w, p + "SelfAttention.k", h, False),
                      linear(w, p + "SelfAttention.v", h, False), H, H, 1.0,
                      causal=True, bias=bias)
        y = y + linear(w, p + "SelfAttention.o", a, False)
        h = rmsnorm(w, p + "cross_layer_norm", y, eps)
        c = attention(linear(w, p + "EncDecAttention.q", h, False),
                      linear(w, p + "EncDecAttention.k", enc, False),
                      linear(w, p + "EncDecAttention.v", enc, False), H, H,
                      1.0, mask=attention_mask)
        y = y + linear(w, p + "EncDecAttention.o", c, False)
        h = rmsnorm(w, p + "ff_layer_norm", y, eps)
        y = y + linear(w, p + "DenseReluDense.wo",
                       F.relu(linear(w, p + "DenseReluDense.wi", h, False)),
                       False)
    y = rmsnorm(w, "decoder.final_layer_norm", y, eps)
    return (y * cfg["d_model"] ** -0.5) @ t(w, "shared.weight").T
