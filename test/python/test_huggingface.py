"""Hugging Face model directories (config.json + model.safetensors or
shards) compile with `--weights=DIR` and match PyTorch.

The checkpoints are written here, with Hugging Face's tensor names and
layouts (GPT2LMHeadModel's Conv1D [in, out] weights and causal-mask
buffers, LlamaForCausalLM's rotate-half q/k rows, BertForMaskedLM's
`bert.` prefix, pooler and tied decoder, T5ForConditionalGeneration's
`layer.N` sublayers). GPT-2 and Llama are checked against PyTorch models
written here in Hugging Face's own conventions (Conv1D products, rotate_half
RoPE), so the importer's transposes and row permutation are checked against
the convention they undo; BERT and T5 differ from kiln's examples in names
only and are checked against reference_models.py.

Tolerance: max |kiln - reference| <= 1e-4 on float32 logits (the reference
computes in float64 from the same, possibly f16/bf16-rounded, weights)."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference_models as ref
from kiln_cli import (EXAMPLES, bfloat16_bits, data_file, kiln, run,
                      write_safetensors)
from test_cpu_numerics import TOL, parameter_table, random_weights

# ---- writing directories ----------------------------------------------------


def write_dir(d, config, tensors, bf16=(), shards=None):
    """A Hugging Face directory: config.json and model.safetensors, or
    `shards` files with model.safetensors.index.json."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config, indent=2))
    if not shards:
        write_safetensors(d / "model.safetensors", tensors, bf16)
        return
    names = list(tensors)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::shards]}
        write_safetensors(d / file, part, bf16)
        weight_map.update({n: file for n in part})
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}))


def compile_dir(tmp, model, d, *extra, check=True):
    out = tmp / f"{model}.kart"
    r = kiln("compile", EXAMPLES / f"{model}.kiln", "-o", out,
             f"--weights={d}", *extra, check=check)
    return out if check else r


def max_error(got, want):
    err = float(np.max(np.abs(got - want.numpy())))
    assert err <= TOL, f"max abs error {err:.3g} > {TOL}"
    return err


def f64(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


# ---- GPT-2 --------------------------------------------------------------------

GPT2_CONFIG = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
               "vocab_size": 50257, "n_positions": 32, "n_embd": 16,
               "n_layer": 2, "n_head": 2, "n_inner": None,
               "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
               "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
               "tie_word_embeddings": True, "torch_dtype": "float32"}


def gpt2_hf_weights(cfg, seed):
    rng = np.random.default_rng(seed)
    C, V, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]

    def r(*shape, mean=0.0):
        return (mean + 0.2 * rng.standard_normal(shape)).astype(np.float32)
    w = {"transformer.wte.weight": r(V, C), "transformer.wpe.weight": r(P, C)}
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        w.update({p + "ln_1.weight": r(C, mean=1), p + "ln_1.bias": r(C),
                  # Conv1D: [in, out].
                  p + "attn.c_attn.weight": r(C, 3 * C),
                  p + "attn.c_attn.bias": r(3 * C),
                  p + "attn.c_proj.weight": r(C, C),
                  p + "attn.c_proj.bias": r(C),
                  p + "ln_2.weight": r(C, mean=1), p + "ln_2.bias": r(C),
                  p + "mlp.c_fc.weight": r(C, 4 * C),
                  p + "mlp.c_fc.bias": r(4 * C),
                  p + "mlp.c_proj.weight": r(4 * C, C),
                  p + "mlp.c_proj.bias": r(C),
                  # Buffers older transformers versions saved.
                  p + "attn.bias": np.tril(np.ones((P, P), np.float32))
                  [None, None],
                  p + "attn.masked_bias": np.array(-1e4, np.float32)})
    w["transformer.ln_f.weight"] = r(C, mean=1)
    w["transformer.ln_f.bias"] = r(C)
    w["lm_head.weight"] = w["transformer.wte.weight"]  # tied
    return w


def gpt2_hf_reference(w, cfg, tokens):
    """GPT2LMHeadModel's forward, with Conv1D's x @ W + b."""
    def g(n):
        return f64(w["transformer." + n])

    def conv1d(prefix, x):
        return x @ g(prefix + ".weight") + g(prefix + ".bias")

    def ln(prefix, x):
        return F.layer_norm(x, x.shape[-1:], g(prefix + ".weight"),
                            g(prefix + ".bias"), cfg["layer_norm_epsilon"])
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    C, H = cfg["n_embd"], cfg["n_head"]
    x = g("wte.weight")[tokens] + g("wpe.weight")[:tokens.shape[1]]
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        q, k, v = conv1d(p + "attn.c_attn", ln(p + "ln_1", x)).split(C, -1)
        a = ref.attention(q, k, v, H, H, 1 / math.sqrt(C // H), causal=True)
        x = x + conv1d(p + "attn.c_proj", a)
        h = F.gelu(conv1d(p + "mlp.c_fc", ln(p + "ln_2", x)),
                   approximate="tanh")
        x = x + conv1d(p + "mlp.c_proj", h)
    return ln("ln_f", x) @ g("wte.weight").T


def test_gpt2_directory_with_its_tokenizer(tmp_path):
    d = tmp_path / "gpt2"
    w = gpt2_hf_weights(GPT2_CONFIG, 1)
    write_dir(d, GPT2_CONFIG, w)
    for f in ("encoder.json", "vocab.bpe"):
        shutil.copy(data_file(f"gpt2-tokenizer/{f}"), d / f)
    art = compile_dir(tmp_path, "gpt2", d)
    tokens = np.random.default_rng(2).integers(0, 50257, (2, 9)) \
        .astype(np.int32)
    (logits,) = run(tmp_path, art, {"tokens": tokens})
    assert logits.shape == (2, 9, 50257)
    max_error(logits, gpt2_hf_reference(w, GPT2_CONFIG, tokens))
    # The directory's tokenizer came along: GPT-2's ids for a known text.
    ids = kiln("tokenize", f"--tokenizer={art}", "Hello world").stdout.split()
    assert ids == ["15496", "995"]


# ---- Llama --------------------------------------------------------------------

LLAMA_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                "vocab_size": 67, "hidden_size": 48, "intermediate_size": 80,
                "num_hidden_layers": 2, "num_attention_heads": 6,
                "num_key_value_heads": 2, "max_position_embeddings": 64,
                "rms_norm_eps": 1e-5, "rope_theta": 500.0,
                "hidden_act": "silu", "rope_scaling": None,
                "tie_word_embeddings": True, "attention_bias": False}


def llama_hf_weights(cfg, seed):
    rng = np.random.default_rng(seed)
    C, F_, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = C // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd

    def r(*shape, mean=0.0):
        return (mean + 0.2 * rng.standard_normal(shape)).astype(np.float32)
    w = {"model.embed_tokens.weight": r(V, C), "model.norm.weight": r(C, mean=1)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w.update({p + "input_layernorm.weight": r(C, mean=1),
                  p + "self_attn.q_proj.weight": r(C, C),
                  p + "self_attn.k_proj.weight": r(kv, C),
                  p + "self_attn.v_proj.weight": r(kv, C),
                  p + "self_attn.o_proj.weight": r(C, C),
                  p + "post_attention_layernorm.weight": r(C, mean=1),
                  p + "mlp.gate_proj.weight": r(F_, C),
                  p + "mlp.up_proj.weight": r(F_, C),
                  p + "mlp.down_proj.weight": r(C, F_),
                  p + "self_attn.rotary_emb.inv_freq":
                      (1.0 / cfg["rope_theta"] ** (np.arange(0, hd, 2) / hd))
                      .astype(np.float32)})
    return w


def llama_hf_reference(w, cfg, tokens):
    """LlamaForCausalLM's forward: RoPE rotates the two halves of each head
    (rotate_half) of the stored q/k rows."""
    def g(n):
        return f64(w[n])

    def lin(n, x):
        return x @ g(n + ".weight").T

    def rms(n, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) +
                               cfg["rms_norm_eps"]) * g(n + ".weight")

    def rope(x, heads):
        B, T, _ = x.shape
        x = x.view(B, T, heads, -1)
        hd = x.shape[-1]
        inv = cfg["rope_theta"] ** (-torch.arange(0, hd, 2,
                                                  dtype=torch.float64) / hd)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None]
        emb = torch.cat([ang, ang], -1)[None, :, None, :]
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        rot = torch.cat([-x2, x1], -1)
        return (x * emb.cos() + rot * emb.sin()).reshape(B, T, -1)
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    x = g("model.embed_tokens.weight")[tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(p + "input_layernorm", x)
        q = rope(lin(p + "self_attn.q_proj", h), H)
        k = rope(lin(p + "self_attn.k_proj", h), Hkv)
        v = lin(p + "self_attn.v_proj", h)
        a = ref.attention(q, k, v, H, Hkv, 1 / math.sqrt(q.shape[-1] // H),
                          causal=True)
        x = x + lin(p + "self_attn.o_proj", a)
        h = rms(p + "post_attention_layernorm", x)
        x = x + lin(p + "mlp.down_proj", F.silu(lin(p + "mlp.gate_proj", h)) *
                    lin(p + "mlp.up_proj", h))
    classifier = "lm_head.weight" if "lm_head.weight" in w else \
        "model.embed_tokens.weight"
    return rms("model.norm", x) @ g(classifier).T


def test_llama_sharded_bf16_directory(tmp_path):
    """Three shards, bfloat16 weights (converted to f32 on import), grouped
    query attention, rope_theta from config.json."""
    w = llama_hf_weights(LLAMA_CONFIG, 3)
    stored = {n: bfloat16_bits(a) for n, a in w.items()}
    widened = {n: (b.astype(np.uint32) << 16).view(np.float32)
               for n, b in stored.items()}
    d = tmp_path / "llama"
    write_dir(d, LLAMA_CONFIG, stored, bf16=set(stored), shards=3)
    art = compile_dir(tmp_path, "llama", d)
    tokens = np.random.default_rng(4).integers(0, 67, (2, 11)).astype(np.int32)
    (logits,) = run(tmp_path, art, {"tokens": tokens})
    max_error(logits, llama_hf_reference(widened, LLAMA_CONFIG, tokens))


def test_llama_untied_classifier(tmp_path):
    """Most Llama checkpoints have their own classifier, lm_head.weight;
    LlamaConfig's default is untied, so a config.json without
    tie_word_embeddings means untied too."""
    cfg = {k: v for k, v in LLAMA_CONFIG.items()
           if k != "tie_word_embeddings"}
    w = llama_hf_weights(cfg, 5)
    w["lm_head.weight"] = np.random.default_rng(6).standard_normal(
        (cfg["vocab_size"], cfg["hidden_size"])).astype(np.float32)
    write_dir(tmp_path / "d", cfg, w)
    art = compile_dir(tmp_path, "llama", tmp_path / "d")
    tokens = np.random.default_rng(7).integers(0, 67, (1, 8)).astype(np.int32)
    (logits,) = run(tmp_path, art, {"tokens": tokens})
    max_error(logits, llama_hf_reference(w, cfg, tokens))
    # Untied, but the checkpoint has no lm_head.weight: named.
    del w["lm_head.weight"]
    write_dir(tmp_path / "d", cfg, w)
    r = compile_dir(tmp_path, "llama", tmp_path / "d", check=False)
    assert r.returncode == 1 and "lm_head.weight" in r.stderr, r.stderr


# ---- BERT and T5: names only ------------------------------------------------

BERT_CONFIG = {"model_type": "bert", "architectures": ["BertForMaskedLM"],
               "vocab_size": 40, "hidden_size": 32, "num_hidden_layers": 2,
               "num_attention_heads": 4, "intermediate_size": 64,
               "max_position_embeddings": 24, "type_vocab_size": 2,
               "layer_norm_eps": 1e-12, "hidden_act": "gelu",
               "hidden_dropout_prob": 0.1,
               "position_embedding_type": "absolute"}

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "!",
              "the", "a", "cat", "dog", "sat", "on", "mat", "hello", "world",
              "##s", "##ed", "run", "##ning", "is", "was", "and", "to", "of",
              "in", "it", "big", "small", "red", "blue", "green", "house",
              "tree", "sun", "moon", "star", "sky", "sea"]


def bert_to_hf(w):
    """kiln's names (BertForMaskedLM without "bert.") to Hugging Face's,
    with the TensorFlow-era gamma/beta and the tensors kiln drops."""
    out = {}
    for n, a in w.items():
        if n.startswith("cls."):
            out[n] = a
            continue
        n = n.replace("LayerNorm.weight", "LayerNorm.gamma") \
             .replace("LayerNorm.bias", "LayerNorm.beta")
        out["bert." + n] = a
    C = w["embeddings.word_embeddings.weight"].shape[1]
    P = w["embeddings.position_embeddings.weight"].shape[0]
    rng = np.random.default_rng(0)
    out["bert.embeddings.position_ids"] = np.arange(P, dtype=np.int64)[None]
    out["bert.pooler.dense.weight"] = rng.standard_normal((C, C)) \
        .astype(np.float32)
    out["bert.pooler.dense.bias"] = np.zeros(C, np.float32)
    out["cls.seq_relationship.weight"] = np.zeros((2, C), np.float32)
    out["cls.seq_relationship.bias"] = np.zeros(2, np.float32)
    out["cls.predictions.decoder.weight"] = \
        w["embeddings.word_embeddings.weight"]
    out["cls.predictions.decoder.bias"] = w["cls.predictions.bias"]
    return out


def test_bert_f16_directory_with_vocab(tmp_path):
    defines = {k: v for k, v in BERT_CONFIG.items()
               if isinstance(v, (int, float)) and k != "layer_norm_eps"}
    w = random_weights(parameter_table("bert.kiln", defines), 6)
    w = {n: a.astype(np.float16) for n, a in w.items()}  # stored as F16
    d = tmp_path / "bert"
    write_dir(d, BERT_CONFIG, bert_to_hf(w))
    (d / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n")
    (d / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    art = compile_dir(tmp_path, "bert", d)
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 40, (2, 10)).astype(np.int32)
    types = rng.integers(0, 2, (2, 10)).astype(np.int32)
    mask = np.ones((2, 10), np.int32)
    mask[1, 7:] = 0
    (logits,) = run(tmp_path, art, {"input_ids": ids, "token_type_ids": types,
                                    "attention_mask": mask})
    wide = {n: a.astype(np.float64) for n, a in w.items()}
    max_error(logits, ref.bert(wide, BERT_CONFIG, ids, types, mask))
    got = kiln("tokenize", f"--tokenizer={art}", "The cats sat!").stdout
    assert got.split() == ["2", "8", "10", "17", "12", "7", "3"]


T5_CONFIG = {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"],
             "vocab_size": 53, "d_model": 32, "d_kv": 8, "d_ff": 48,
             "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4,
             "relative_attention_num_buckets": 32,
             "relative_attention_max_distance": 128,
             "layer_norm_epsilon": 1e-6, "dropout_rate": 0.1,
             "feed_forward_proj": "relu", "tie_word_embeddings": True,
             "is_encoder_decoder": True, "decoder_start_token_id": 2}


def t5_to_hf(w):
    """kiln's role names to T5ForConditionalGeneration's layer.N names."""
    sub = {"encoder": {"SelfAttention": 0, "attn_layer_norm": 0,
                       "DenseReluDense": 1, "ff_layer_norm": 1},
           "decoder": {"SelfAttention": 0, "attn_layer_norm": 0,
                       "EncDecAttention": 1, "cross_layer_norm": 1,
                       "DenseReluDense": 2, "ff_layer_norm": 2}}
    out = {}
    for n, a in w.items():
        parts = n.split(".")
        if parts[1] == "relative_attention_bias":
            out[f"{parts[0]}.block.0.layer.0.SelfAttention."
                "relative_attention_bias.weight"] = a
        elif parts[1] == "block":
            stack, i, role = parts[0], parts[2], parts[3]
            j = sub[stack][role]
            rest = ".".join(parts[4:])
            if role.endswith("layer_norm"):
                out[f"{stack}.block.{i}.layer.{j}.layer_norm.{rest}"] = a
            else:
                out[f"{stack}.block.{i}.layer.{j}.{role}.{rest}"] = a
        else:
            out[n] = a
    for tied in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                 "lm_head.weight"):
        out[tied] = w["shared.weight"]
    return out


def test_t5_directory(tmp_path):
    defines = {k: v for k, v in T5_CONFIG.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    w = random_weights(parameter_table("t5.kiln", defines), 8)
    d = tmp_path / "t5"
    write_dir(d, T5_CONFIG, t5_to_hf(w))
    art = compile_dir(tmp_path, "t5", d)
    rng = np.random.default_rng(9)
    ids = rng.integers(0, 53, (2, 9)).astype(np.int32)
    mask = np.ones((2, 9), np.int32)
    mask[0, 6:] = 0
    dec = rng.integers(0, 53, (2, 5)).astype(np.int32)
    (logits,) = run(tmp_path, art, {"input_ids": ids, "attention_mask": mask,
                                    "decoder_input_ids": dec})
    max_error(logits, ref.t5(w, T5_CONFIG, ids, mask, dec))
    # Generation: the source is the prompt, the output starts from
    # config.json's decoder_start_token_id, and each greedy token is the
    # reference's argmax.
    source = [7, 19, 4, 33, 12]
    out = kiln("generate", art, "--prompt-ids=" + ",".join(map(str, source)),
               "--max-tokens=8", "--temperature=0")
    seq = [2]
    src = np.array([source], np.int32)
    for _ in range(8):
        want = ref.t5(w, T5_CONFIG, src, np.ones_like(src),
                      np.array([seq], np.int32))
        seq.append(int(np.argmax(want[0, -1])))
    assert out.stdout.split() == [str(t) for t in seq[1:]]


# ---- errors -------------------------------------------------------------------


def small_gpt2_dir(d):
    cfg = dict(GPT2_CONFIG, vocab_size=31)
    w = gpt2_hf_weights(cfg, 11)
    write_dir(d, cfg, w)
    return cfg, w


def fails(tmp_path, model, d, *extra, expect):
    r = compile_dir(tmp_path, model, d, *extra, check=False)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "Assertion" not in r.stderr
    for part in expect if isinstance(expect, tuple) else (expect,):
        assert part in r.stderr, r.stderr


def test_directory_errors(tmp_path):
    d = tmp_path / "g"
    cfg, w = small_gpt2_dir(d)
    # The config sets the hyperparameters; a -D that disagrees is named.
    fails(tmp_path, "gpt2", d, "-D", "n_embd=32",
          expect=("config.json (n_embd=16)", "conflicts"))
    # The wrong example for the directory.
    fails(tmp_path, "llama", d,
          expect="model_type 'gpt2' is a different architecture from model "
                 "'llama'")
    # A tensor missing from the checkpoint, one misshapen.
    del w["transformer.h.1.mlp.c_fc.bias"]
    write_dir(d, cfg, w)
    fails(tmp_path, "gpt2", d, expect="h.1.mlp.c_fc.bias")
    w["transformer.h.1.mlp.c_fc.bias"] = np.zeros(7, np.float32)
    write_dir(d, cfg, w)
    fails(tmp_path, "gpt2", d, expect="h.1.mlp.c_fc.bias")
    # Settings the mapping cannot honour, named by key.
    write_dir(d, dict(cfg, activation_function="relu"), w)
    fails(tmp_path, "gpt2", d, expect=("config.json", "activation_function",
                                       '"relu"'))
    write_dir(d, dict(LLAMA_CONFIG, rope_scaling={"type": "linear",
                                                  "factor": 2.0}), {})
    fails(tmp_path, "llama", d, expect=("config.json", "rope_scaling"))
    (d / "config.json").write_text('{"model_type": "mamba"}')
    fails(tmp_path, "gpt2", d, expect=("model_type 'mamba'", "gpt2, llama"))
    (d / "config.json").write_text('{"n_embd": 16,}')
    fails(tmp_path, "gpt2", d, expect=("config.json", "byte offset"))
    (d / "config.json").unlink()
    fails(tmp_path, "gpt2", d, expect="no config.json")


def test_weight_file_errors(tmp_path):
    d = tmp_path / "g"
    cfg, w = small_gpt2_dir(d)
    (d / "model.safetensors").unlink()
    fails(tmp_path, "gpt2", d, expect="no model.safetensors")
    (d / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not read")
    fails(tmp_path, "gpt2", d, expect=("pytorch_model.bin", "pickle",
                                       "safetensors"))
    (d / "pytorch_model.bin").unlink()
    write_dir(d, cfg, w, shards=2)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    good = json.loads(json.dumps(index))
    # A shard path that leaves the directory.
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../model-00001-of-00002.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    fails(tmp_path, "gpt2", d, expect=("plain file names", first))
    # A tensor the index places in the other shard.
    index = json.loads(json.dumps(good))
    wm = index["weight_map"]
    a = next(n for n in wm if wm[n].startswith("model-00001"))
    b = next(n for n in wm if wm[n].startswith("model-00002"))
    wm[a], wm[b] = wm[b], wm[a]
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    fails(tmp_path, "gpt2", d, expect="is listed in")
    # A missing shard.
    (d / "model.safetensors.index.json").write_text(json.dumps(good))
    (d / "model-00002-of-00002.safetensors").unlink()
    fails(tmp_path, "gpt2", d, expect=("model-00002-of-00002.safetensors",
                                       "not a file"))
    (d / "model.safetensors.index.json").write_text('{"weight_map": []}')
    fails(tmp_path, "gpt2", d, expect='"weight_map"')


def test_python_compiles_a_directory(tmp_path):
    import kiln as kp
    d = tmp_path / "g"
    cfg, w = small_gpt2_dir(d)
    model = kp.compile(EXAMPLES / "gpt2.kiln", weights=d)
    tokens = np.arange(12, dtype=np.int32).reshape(2, 6) % 31
    max_error(model.forward(tokens=tokens), gpt2_hf_reference(w, cfg, tokens))
    with pytest.raises(kp.CompileError, match="model_type 'gpt2'"):
        kp.compile(EXAMPLES / "llama.kiln", weights=d)
