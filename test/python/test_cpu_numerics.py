"""Forward passes of the four example architectures on kiln's CPU runtime
match independent PyTorch implementations with the same weights.

Tolerance: max |kiln - reference| <= 1e-4 on float32 logits (the reference
computes in float64)."""
import numpy as np
import pytest
import torch

import reference_models as ref
from kiln_cli import EXAMPLES, compile_model, kiln, run

TOL = 1e-4


def parameter_table(model, defines):
    args = ["compile", EXAMPLES / model, "--emit=params"]
    for k, v in defines.items():
        args += ["-D", f"{k}={v}"]
    rows = kiln(*args).stdout.splitlines()[1:-1]
    table = {}
    for row in rows:
        name, rest = row.split(None, 1)
        shape = [int(d) for d in rest[rest.index("[") + 1:rest.index("]")]
                 .split(",") if d.strip()]
        table[name] = shape
    return table


def random_weights(table, seed):
    rng = np.random.default_rng(seed)
    w = {}
    for name, shape in table.items():
        if name.endswith("norm.weight") or "LayerNorm.weight" in name or \
                name.endswith("ln_1.weight") or name.endswith("ln_2.weight") \
                or name.endswith("ln_f.weight"):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            a = 0.2 * rng.standard_normal(shape)
        w[name] = a.astype(np.float32)
    return w


def check(got, want):
    """Compares with the reference model and returns the error."""
    err = float(np.max(np.abs(got - want.numpy())))
    assert err <= TOL, f"max abs error {err:.3g} > {TOL}"
    return err


GPT2 = dict(vocab_size=97, n_positions=32, n_embd=48, n_layer=2, n_head=4)
LLAMA = dict(vocab_size=61, hidden_size=48, intermediate_size=80,
             num_hidden_layers=2, num_attention_heads=6,
             num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5)
BERT = dict(vocab_size=83, hidden_size=48, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=96,
            max_position_embeddings=32, type_vocab_size=2)
T5 = dict(vocab_size=71, d_model=48, d_kv=12, d_ff=64, num_layers=2,
          num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=32,
          relative_attention_max_distance=128, layer_norm_epsilon=1e-6)


def test_gpt2(tmp_path):
    w = random_weights(parameter_table("gpt2.kiln", GPT2), 1)
    art = compile_model(tmp_path, EXAMPLES / "gpt2.kiln", GPT2, w)
    tokens = np.random.default_rng(2).integers(0, 97, (2, 11)).astype(np.int32)
    (logits,) = run(tmp_path, art, {"tokens": tokens})
    assert logits.shape == (2, 11, 97)
    check(logits, ref.gpt2(w, GPT2, tokens))


def test_gpt2_loss_matches_torch_cross_entropy(tmp_path):
    w = random_weights(parameter_table("gpt2.kiln", GPT2), 3)
    art = compile_model(tmp_path, EXAMPLES / "gpt2.kiln", GPT2, w)
    rng = np.random.default_rng(4)
    tokens = rng.integers(0, 97, (3, 7)).astype(np.int32)
    targets = rng.integers(0, 97, (3, 7)).astype(np.int32)
    (loss,) = run(tmp_path, art, {"tokens": tokens, "targets": targets},
                  function="loss")
    want = torch.nn.functional.cross_entropy(
        ref.gpt2(w, GPT2, tokens).reshape(-1, 97),
        torch.as_tensor(targets, dtype=torch.long).reshape(-1))
    assert loss.shape == ()
    assert abs(float(loss) - float(want)) <= TOL


def test_llama_grouped_query_rope(tmp_path):
    w = random_weights(parameter_table("llama.kiln", LLAMA), 5)
    art = compile_model(tmp_path, EXAMPLES / "llama.kiln", LLAMA, w)
    tokens = np.random.default_rng(6).integers(0, 61, (2, 9)).astype(np.int32)
    (logits,) = run(tmp_path, art, {"tokens": tokens})
    check(logits, ref.llama(w, LLAMA, tokens))


def test_bert_with_padding(tmp_path):
    w = random_weights(parameter_table("bert.kiln", BERT), 7)
    art = compile_model(tmp_path, EXAMPLES / "bert.kiln", BERT, w)
    rng = np.random.default_rng(8)
    ids = rng.integers(0, 83, (2, 10)).astype(np.int32)
    types = rng.integers(0, 2, (2, 10)).astype(np.int32)
    mask = np.ones((2, 10), np.int32)
    mask[1, 6:] = 0
    (logits,) = run(tmp_path, art, {"input_ids": ids, "token_type_ids": types,
                                    "attention_mask": mask})
    check(logits, ref.bert(w, BERT, ids, types, mask))


def test_t5_encoder_decoder(tmp_path):
    w = random_weights(parameter_table("t5.kiln", T5), 9)
    art = compile_model(tmp_path, EXAMPLES / "t5.kiln", T5, w)
    rng = np.random.default_rng(10)
    ids = rng.integers(0, 71, (2, 13)).astype(np.int32)
    mask = np.ones((2, 13), np.int32)
    mask[0, 9:] = 0
    dec = rng.integers(0, 71, (2, 6)).astype(np.int32)
    (logits,) = run(tmp_path, art, {"input_ids": ids, "attention_mask": mask,
                                    "decoder_input_ids": dec})
    assert logits.shape == (2, 6, 71)
    check(logits, ref.t5(w, T5, ids, mask, dec))


def test_one_artifact_serves_every_length(tmp_path):
    w = random_weights(parameter_table("gpt2.kiln", GPT2), 11)
    art = compile_model(tmp_path, EXAMPLES / "gpt2.kiln", GPT2, w)
    for B, T in [(1, 1), (3, 5), (1, 32)]:
        tokens = np.random.default_rng(B * 100 + T).integers(
            0, 97, (B, T)).astype(np.int32)
        (logits,) = run(tmp_path, art, {"tokens": tokens})
        check(logits, ref.gpt2(w, GPT2, tokens))


def test_initialization_is_seeded(tmp_path):
    arts = {}
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        (tmp_path / name).mkdir()
        arts[name] = compile_model(tmp_path / name, EXAMPLES / "gpt2.kiln",
                                   GPT2, seed=seed).read_bytes()
    assert arts["a"] == arts["b"]
    assert arts["a"] != arts["c"]


def test_save_weights_round_trip(tmp_path):
    """Weights saved from one artifact rebuild an artifact identical but for
    its history (the commands differ): the same plan, the same weights."""
    from kiln_cli import kiln as run_kiln
    a = tmp_path / "a.kart"
    w = tmp_path / "w.safetensors"
    b = tmp_path / "b.kart"
    defs = sum([["-D", f"{k}={v}"] for k, v in GPT2.items()], [])
    run_kiln("compile", EXAMPLES / "gpt2.kiln", *defs, "--seed=9", "-o", a,
             f"--save-weights={w}")
    w2 = tmp_path / "w2.safetensors"
    run_kiln("compile", EXAMPLES / "gpt2.kiln", *defs, f"--weights={w}",
             "-o", b, f"--save-weights={w2}")
    assert w.read_bytes() == w2.read_bytes()

    def plan(art):
        text = run_kiln("inspect", art, "--plan").stdout
        return [line for line in text.splitlines()
                if not line.startswith(("history:", "  kiln "))]
    assert plan(a) == plan(b)
    assert "--seed=9" in run_kiln("inspect", a).stdout
    assert "--weights=w.safetensors" in run_kiln("inspect", b).stdout


@pytest.mark.parametrize("model,cfg,inputs", [
    ("gpt2.kiln", GPT2, {"tokens": np.arange(12, dtype=np.int32).reshape(2, 6)}),
    ("llama.kiln", LLAMA, {"tokens": np.arange(10, dtype=np.int32)[None]}),
    ("bert.kiln", BERT, {"input_ids": np.arange(8, dtype=np.int32)[None],
                         "token_type_ids": np.zeros((1, 8), np.int32),
                         "attention_mask": np.ones((1, 8), np.int32)}),
    ("t5.kiln", T5, {"input_ids": np.arange(7, dtype=np.int32)[None],
                     "attention_mask": np.ones((1, 7), np.int32),
                     "decoder_input_ids": np.arange(4, dtype=np.int32)[None]}),
])
def test_onednn_matches_reference_kernels(tmp_path, model, cfg, inputs):
    art = compile_model(tmp_path, EXAMPLES / model, cfg, seed=1)
    (fast,) = run(tmp_path, art, inputs)
    (naive,) = run(tmp_path, art, inputs, reference_kernels=True)
    assert np.max(np.abs(fast - naive)) <= 1e-5
