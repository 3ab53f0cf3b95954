"""LoRA adapters (kiln compile/train --lora) on quantized and f32 bases.

The adapters' forward and gradients are checked against a float64 PyTorch
model built from the dequantized base weights; a LoRA GPT-2 against the f32
model whose weights are the merged W + (alpha/r) B A; training updates the
adapters only; adapters round-trip through PEFT's files; and bad specs,
targets and adapter files give clear errors.
"""
import json
import sys

import numpy as np
import pytest
import torch

from kiln_cli import (BUILD, EXAMPLES, data_file, kiln as kiln_cli,
                      read_safetensors, write_safetensors)

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402

MLP = """
model mlp(K = 64) {
  dim B
  param fc1 = linear(K, 96)
  param fc2 = linear(96, 32)
  fn forward(x: f32[B, K]) -> f32[B, 32] { return fc2(gelu(fc1(x))) }
  fn loss(x: f32[B, K], t: f32[B, 32]) -> f32 {
    return mean(sum((forward(x) - t) * (forward(x) - t), 1))
  }
}
"""
GPT = EXAMPLES / "gpt2.kiln"
SMALL = {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 96,
         "n_positions": 32}
PREFIX = "base_model.model."
RNG = np.random.default_rng(5)


def write_adapter(path, shapes, rank, alpha, scale=0.2):
    """A PEFT adapter directory with random A and B for each target
    (name -> (out, in)), as PEFT's save_pretrained lays it out."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for target, (out, inp) in shapes.items():
        module = target[:-len(".weight")]
        tensors[f"{PREFIX}{module}.lora_A.weight"] = (
            RNG.standard_normal((rank, inp)) * scale).astype(np.float32)
        tensors[f"{PREFIX}{module}.lora_B.weight"] = (
            RNG.standard_normal((out, rank)) * scale).astype(np.float32)
    write_safetensors(path / "adapter_model.safetensors", tensors)
    (path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": alpha,
         "target_modules": [t[:-len(".weight")] for t in shapes],
         "fan_in_fan_out": False, "bias": "none"}))
    return {k[len(PREFIX):]: v for k, v in tensors.items()}


@pytest.mark.parametrize("base", ["nf4", "int4:group=32", None])
def test_forward_and_adapter_gradients_match_float64_torch(base, tmp_path):
    rank, alpha = 4, 8.0
    adapters = write_adapter(tmp_path / "a", {"fc1.weight": (96, 64),
                                              "fc2.weight": (32, 96)},
                             rank, alpha)
    m = kiln.compile(MLP, quantize=base, adapter=tmp_path / "a",
                     grad="loss")
    assert m.lora == {"rank": rank, "alpha": alpha,
                      "targets": ["fc1.weight", "fc2.weight"]}
    p = m.parameters()
    for name, value in adapters.items():
        np.testing.assert_array_equal(p[name], value)

    x = RNG.standard_normal((5, 64)).astype(np.float32)
    t = RNG.standard_normal((5, 32)).astype(np.float32)
    T = {k: torch.tensor(v, dtype=torch.float64, requires_grad="lora" in k)
         for k, v in p.items()}
    s = alpha / rank

    def linear(h, name):
        y = h @ T[f"{name}.weight"].T + T[f"{name}.bias"]
        a, b = T[f"{name}.lora_A.weight"], T[f"{name}.lora_B.weight"]
        return y + s * (h @ a.T) @ b.T

    X, Tt = torch.tensor(x, dtype=torch.float64), torch.tensor(
        t, dtype=torch.float64)
    y = linear(torch.nn.functional.gelu(linear(X, "fc1")), "fc2")
    np.testing.assert_allclose(m.forward(x=x), y.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    loss = ((y - Tt) ** 2).sum(1).mean()
    loss.backward()
    # loss_grad returns the loss and the trainable parameters' gradients:
    # the adapters', in parameter order; frozen weights have none.
    out = m.run("loss_grad", x=x, t=t)
    trained = [n for n in p if ".lora_" in n]
    assert len(out) == 1 + len(trained)
    got = dict(zip(["loss"] + trained, out))
    np.testing.assert_allclose(got["loss"], loss.item(), rtol=1e-5)
    # 1e-5 relative to each gradient's largest element (f32 sums of
    # terms up to 20 cancel to values near 0 in a few elements).
    for name in adapters:
        want = T[name].grad.numpy()
        np.testing.assert_allclose(got[name], want, rtol=1e-5,
                                   atol=1e-5 * np.abs(want).max(),
                                   err_msg=name)


def test_gpt2_with_adapters_equals_its_merged_weights(tmp_path):
    base = kiln.compile(GPT, defines=SMALL, quantize="nf4")
    shapes = {n: w.shape for n, w in base.parameters().items()
              if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))}
    rank, alpha = 8, 16.0
    adapters = write_adapter(tmp_path / "a", shapes, rank, alpha, scale=0.1)
    m = kiln.compile(GPT, defines=SMALL, quantize="nf4",
                     lora="rank=8,alpha=16", adapter=tmp_path / "a")
    merged = {}
    for name, w in base.parameters().items():
        if name in shapes:
            module = name[:-len(".weight")]
            w = (w.astype(np.float64) + alpha / rank *
                 adapters[f"{module}.lora_B.weight"].astype(np.float64) @
                 adapters[f"{module}.lora_A.weight"].astype(np.float64))
        merged[name] = w.astype(np.float32)
    write_safetensors(tmp_path / "merged.safetensors", merged)
    f = kiln.compile(GPT, defines=SMALL, weights=tmp_path / "merged.safetensors")
    tokens = RNG.integers(0, 96, (2, 16)).astype(np.int32)
    np.testing.assert_allclose(m.forward(tokens=tokens),
                               f.forward(tokens=tokens), rtol=1e-4, atol=1e-4)


def test_training_updates_only_the_adapters(tmp_path):
    out = tmp_path / "trained.kart"
    kiln_cli("train", GPT, f"--data={data_file('tinyshakespeare.txt')}",
             "-D", "n_layer=1", "-D", "n_embd=64", "-D", "n_head=2",
             "-D", "n_positions=32", "--quantize=nf4",
             "--lora=rank=4,alpha=8,targets=*.c_attn.weight,*.c_fc.weight",
             "--steps=6", "--batch=4", "--seq=32", "--eval-every=0",
             f"--save-adapter={tmp_path / 'adapter'}", "-o", out)
    trained = kiln.load(out)
    assert trained.lora["targets"] == ["h.0.attn.c_attn.weight",
                                       "h.0.mlp.c_fc.weight"]
    # The same model before training: same seed, same initial values.
    vocab = trained.parameters()["wte.weight"].shape[0]
    before = kiln.compile(GPT, defines={"n_layer": 1, "n_embd": 64,
                                        "n_head": 2, "n_positions": 32,
                                        "vocab_size": vocab},
                          quantize="nf4",
                          lora="rank=4,alpha=8,targets=*.c_attn.weight,"
                               "*.c_fc.weight").parameters()
    for name, w in trained.parameters().items():
        if ".lora_B." in name:  # starts at zero, so it must have moved
            assert np.abs(w).max() > 0, name
        elif ".lora_" not in name:
            np.testing.assert_array_equal(w, before[name], err_msg=name)

    # PEFT's files: names, shapes, config.
    files = read_safetensors(tmp_path / "adapter" /
                             "adapter_model.safetensors")
    assert sorted(files) == sorted(
        PREFIX + n for n in trained.parameters() if ".lora_" in n)
    config = json.loads((tmp_path / "adapter" /
                         "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    assert config["lora_alpha"] == 8 and not config["fan_in_fan_out"]
    assert config["target_modules"] == ["h.0.attn.c_attn", "h.0.mlp.c_fc"]
    # Read back (its config sets --lora): the same outputs.
    again = kiln.compile(GPT, defines={"n_layer": 1, "n_embd": 64,
                                       "n_head": 2, "n_positions": 32,
                                       "vocab_size": vocab},
                         quantize="nf4", adapter=tmp_path / "adapter")
    tokens = RNG.integers(0, vocab, (1, 12)).astype(np.int32)
    np.testing.assert_array_equal(again.forward(tokens=tokens),
                                  trained.forward(tokens=tokens))


@pytest.mark.parametrize("args,message", [
    (["--lora=rank=0"], "rank=0 in 'rank=0' is not a whole number from 1 to "
                        "4096"),
    (["--lora=size=3"], "unknown key 'size' in 'size=3' (expected rank, "
                        "alpha, targets)"),
    (["--lora=alpha=-1"], "alpha=-1 in 'alpha=-1' is not a positive number"),
    (["--lora=targets=wte.weight"],
     "'kiln.embedding' reads parameter 'wte.weight'; adapters go beside "
     "weights read only as linear layers read them"),
    (["--lora=targets=nothing.*"],
     "no parameter the targets match is a linear layer's weight"),
])
def test_bad_lora_requests(args, message):
    r = kiln_cli("compile", GPT, "-D", "n_layer=1", "-o", "/dev/null", *args,
                 check=False)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr


def test_bad_adapter_files(tmp_path):
    def compile_with(adapter, lora=None):
        with pytest.raises(kiln.CompileError) as e:
            kiln.compile(MLP, adapter=adapter, lora=lora)
        return str(e.value)

    good = tmp_path / "good"
    write_adapter(good, {"fc1.weight": (96, 64)}, 4, 8)
    assert "asks for rank 2" in compile_with(good, "rank=2,alpha=8")
    assert "adapter_config.json" in compile_with(tmp_path / "missing")

    bad = tmp_path / "half"
    write_adapter(bad, {"fc1.weight": (96, 64)}, 4, 8)
    t = read_safetensors(bad / "adapter_model.safetensors")
    del t[PREFIX + "fc1.lora_B.weight"]
    write_safetensors(bad / "adapter_model.safetensors", t)
    assert "'fc1.weight' has lora_A but not lora_B" in compile_with(bad)

    wrong = tmp_path / "rank"
    write_adapter(wrong, {"fc1.weight": (96, 64)}, 4, 8)
    t = read_safetensors(wrong / "adapter_model.safetensors")
    t[PREFIX + "fc1.lora_A.weight"] = np.zeros((3, 64), np.float32)
    write_safetensors(wrong / "adapter_model.safetensors", t)
    assert "expected f32 [r, in] with r = 4" in compile_with(wrong)

    shape = tmp_path / "shape"
    write_adapter(shape, {"fc1.weight": (96, 32)}, 4, 8)
    assert "adapter 'fc1.lora_A.weight' is" in compile_with(shape)

    for field, value, message in [
            ("peft_type", "PREFIX_TUNING", "peft_type is 'PREFIX_TUNING'"),
            ("fan_in_fan_out", True, "fan_in_fan_out is true"),
            ("r", 0, "'r' (the rank) must be a whole number"),
            ("lora_alpha", "x", "'lora_alpha' must be a positive number")]:
        d = tmp_path / field
        write_adapter(d, {"fc1.weight": (96, 64)}, 4, 8)
        config = json.loads((d / "adapter_config.json").read_text())
        config[field] = value
        (d / "adapter_config.json").write_text(json.dumps(config))
        assert message in compile_with(d), field
    broken = tmp_path / "json"
    write_adapter(broken, {"fc1.weight": (96, 64)}, 4, 8)
    (broken / "adapter_config.json").write_text("{\"r\": 4,")
    assert "not JSON" in compile_with(broken)


def test_adapters_go_into_artifacts(tmp_path):
    write_adapter(tmp_path / "a", {"fc1.weight": (96, 64)}, 4, 8)
    src = tmp_path / "mlp.kiln"
    src.write_text(MLP)
    r = kiln_cli("compile", src, "--emit=mlir", f"--adapter={tmp_path / 'a'}",
                 check=False)
    assert r.returncode != 0
    assert "weights, adapters, tokenizers, external weights and train steps " \
           "apply to artifacts" in r.stderr, r.stderr


def test_save_adapter_needs_adapters(tmp_path):
    m = kiln.compile(MLP)
    assert m.lora is None
    with pytest.raises(Exception, match="no LoRA adapters"):
        m.save_adapter(tmp_path / "a")


def test_merge_folds_the_adapters_into_the_base(tmp_path):
    base = kiln.compile(GPT, defines=SMALL, quantize="nf4")
    shapes = {n: w.shape for n, w in base.parameters().items()
              if n.endswith(("c_attn.weight", "c_fc.weight"))}
    write_adapter(tmp_path / "a", shapes, 4, 8.0, scale=0.1)
    m = kiln.compile(GPT, defines=SMALL, quantize="nf4",
                     adapter=tmp_path / "a")
    m.save(tmp_path / "lora.kart")
    tokens = RNG.integers(0, 96, (2, 16)).astype(np.int32)
    # kiln inspect: the stored size by storage, the trained count, the
    # adapters.
    text = kiln_cli("inspect", tmp_path / "lora.kart").stdout
    stored = {n: w for n, w in m.parameters().items()}
    trained = sum(w.size for n, w in stored.items() if ".lora_" in n)
    assert f"({trained} trained)" in text
    assert "; nf4:block=64,double=true " in text and "; f32 " in text
    assert "lora: rank 4, alpha 8, 4 adapted weights" in text

    # f32: the model's source compiles from it without --lora, and computes
    # what the adapted model does.
    r = kiln_cli("merge", tmp_path / "lora.kart", "-o",
                 tmp_path / "merged.safetensors")
    assert "merged 4 adapters (rank 4, alpha 8)" in r.stdout
    merged = read_safetensors(tmp_path / "merged.safetensors")
    assert not any(".lora_" in n for n in merged)
    f = kiln.compile(GPT, defines=SMALL,
                     weights=tmp_path / "merged.safetensors")
    np.testing.assert_allclose(f.forward(tokens=tokens),
                               m.forward(tokens=tokens), rtol=1e-4,
                               atol=1e-4)
    # Weights without adapters stay as they were (NF4 checkpoints here).
    assert "h.0.attn.c_proj.weight.quant_state.bitsandbytes__nf4" in merged

    # Re-quantized: the merged f32 weight in NF4, kept as it is when compiled
    # with the same --quantize.
    m.merge_adapters(tmp_path / "nf4.safetensors", quantize="nf4")
    q = kiln.compile(GPT, defines=SMALL, quantize="nf4",
                     weights=tmp_path / "nf4.safetensors")
    name = "h.1.mlp.c_fc.weight"
    want = kiln.dequantize(kiln.quantize(merged[name], "nf4", name=name),
                           name)
    np.testing.assert_array_equal(q.parameters()[name], want)

    r = kiln_cli("merge", tmp_path / "lora.kart", "-o", tmp_path / "x.bin",
                 check=False)
    assert r.returncode == 2 and "-o FILE.safetensors" in r.stderr
    base.save(tmp_path / "plain.kart")
    r = kiln_cli("merge", tmp_path / "plain.kart", "-o",
                 tmp_path / "y.safetensors", check=False)
    assert r.returncode == 1 and "no LoRA adapters to merge" in r.stderr


def test_optimizer_moments_in_a_memory_mapped_file(tmp_path):
    """--optimizer-state: the moments live in a file; training is bit for
    bit what it is with them in RAM, and the file holds them."""
    src = MLP
    x = RNG.standard_normal((8, 64)).astype(np.float32)
    t = RNG.standard_normal((8, 32)).astype(np.float32)
    runs = {}
    for where in ("ram", "file"):
        m = kiln.compile(src, grad="loss", quantize="nf4", lora="rank=4")
        tr = kiln.Trainer(m, kiln.AdamW(lr=1e-2), total_steps=5,
                          optimizer_state=tmp_path / "m.bin"
                          if where == "file" else None)
        for _ in range(5):
            tr.step({"x": x, "t": t})
        runs[where] = m.parameters()
        if where == "file":
            tr.save_checkpoint(tmp_path / "ck")
    for name in runs["ram"]:
        np.testing.assert_array_equal(runs["file"][name], runs["ram"][name],
                                      err_msg=name)
    # The file: each trained parameter's m then v, in parameter order.
    data = np.fromfile(tmp_path / "m.bin", np.float32)
    trained = [(n, w.size) for n, w in runs["file"].items() if ".lora_" in n]
    assert data.size == 2 * sum(size for _, size in trained)
    saved = read_safetensors(next((tmp_path / "ck").glob("step-*")) /
                             "optimizer.safetensors")
    at = 0
    for name, size in trained:
        for moment in ("exp_avg/", "exp_avg_sq/"):
            np.testing.assert_array_equal(data[at:at + size],
                                          saved[moment + name].ravel())
            at += size
    assert np.abs(data).max() > 0

    with pytest.raises(ValueError, match="cannot create the optimizer state"):
        kiln.Trainer(kiln.compile(src, grad="loss"), kiln.AdamW(),
                     optimizer_state=tmp_path / "no" / "such" / "dir.bin")


def test_recompute_gives_the_same_adapter_gradients():
    """--recompute (gradient checkpointing) recomputes each block's
    activations, adapters' ops included: the same gradients."""
    tokens = RNG.integers(0, 96, (2, 16)).astype(np.int32)
    got = [kiln.compile(GPT, defines=SMALL, quantize="nf4", lora="rank=4",
                        grad="loss", recompute=recompute)
           .run("loss_grad", tokens=tokens, targets=tokens)
           for recompute in (False, True)]
    assert len(got[0]) == len(got[1]) > 1
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
