"""The example models at their published default sizes (GPT-2 124M,
BERT-base, T5-small) against the PyTorch references, with the same random
weights. Tolerance 1e-3 on logits: float32 sums over 768-3072 terms in
twelve layers drift more than at the small test sizes (seen: ~1e-5)."""
import numpy as np
import pytest

import reference_models as ref
from kiln_cli import EXAMPLES, compile_model, run
from test_cpu_numerics import parameter_table

TOL = 1e-3


def weights(model, seed):
    table = parameter_table(model, {})
    rng = np.random.default_rng(seed)
    w = {}
    for name, shape in table.items():
        norm = "norm" in name.lower() or ".ln_" in name or \
            name.startswith("ln_f")
        if norm and name.endswith("weight"):
            a = 1.0 + 0.05 * rng.standard_normal(shape, np.float32)
        else:
            a = 0.02 * rng.standard_normal(shape, np.float32)
        w[name] = a.astype(np.float32)
    return w


def test_gpt2_124m(tmp_path):
    w = weights("gpt2.kiln", 1)
    art = compile_model(tmp_path, EXAMPLES / "gpt2.kiln", weights=w)
    tokens = np.random.default_rng(2).integers(0, 50257, (1, 8)).astype(np.int32)
    (logits,) = run(tmp_path, art, {"tokens": tokens})
    cfg = dict(n_embd=768, n_head=12, n_layer=12)
    err = np.max(np.abs(logits - ref.gpt2(w, cfg, tokens).numpy()))
    print(f"max abs error {err:.2e}")
    assert err <= TOL, err


def test_bert_base(tmp_path):
    w = weights("bert.kiln", 3)
    art = compile_model(tmp_path, EXAMPLES / "bert.kiln", weights=w)
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 30522, (1, 8)).astype(np.int32)
    types = np.zeros((1, 8), np.int32)
    mask = np.array([[1, 1, 1, 1, 1, 1, 0, 0]], np.int32)
    (logits,) = run(tmp_path, art, {"input_ids": ids, "token_type_ids": types,
                                    "attention_mask": mask})
    cfg = dict(hidden_size=768, num_attention_heads=12, num_hidden_layers=12)
    err = np.max(np.abs(logits - ref.bert(w, cfg, ids, types, mask).numpy()))
    print(f"max abs error {err:.2e}")
    assert err <= TOL, err


def test_t5_small(tmp_path):
    w = weights("t5.kiln", 5)
    art = compile_model(tmp_path, EXAMPLES / "t5.kiln", weights=w)
    rng = np.random.default_rng(6)
    ids = rng.integers(0, 32128, (1, 9)).astype(np.int32)
    mask = np.ones((1, 9), np.int32)
    dec = rng.integers(0, 32128, (1, 5)).astype(np.int32)
    (logits,) = run(tmp_path, art, {"input_ids": ids, "attention_mask": mask,
                                    "decoder_input_ids": dec})
    cfg = dict(num_heads=8, num_layers=6, num_decoder_layers=6, d_model=512,
               layer_norm_epsilon=1e-6, relative_attention_num_buckets=32,
               relative_attention_max_distance=128)
    err = np.max(np.abs(logits - ref.t5(w, cfg, ids, mask, dec).numpy()))
    print(f"max abs error {err:.2e}")
    assert err <= TOL, err
