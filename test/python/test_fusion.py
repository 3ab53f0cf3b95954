"""The fusion passes against the unfused kernels they replace: every example
model with fusion on and off (kiln.compile(fuse=False)) gives the same
forward results and gradients, and each fused kernel is also checked against
NumPy float64 and PyTorch autograd on shapes that exercise its edge cases.
Tolerances: 2e-5 relative on model outputs and gradients (float32 sums in a
different order); against float64, 1e-5 absolute on values of order one and
1e-5 relative elsewhere."""
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from kiln_cli import BUILD, EXAMPLES, KILN
from test_cpu_numerics import BERT, GPT2, LLAMA, T5

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402


def inputs(arch, cfg, rng):
    V = cfg["vocab_size"]
    ids = lambda *s: rng.integers(0, V, s).astype(np.int32)  # noqa: E731
    if arch in ("gpt2", "llama"):
        return dict(tokens=ids(2, 9), targets=ids(2, 9))
    if arch == "bert":
        mask = np.ones((2, 10), np.int32)
        mask[1, 6:] = 0
        labels = ids(2, 10)
        labels[0, :3] = -100
        return dict(input_ids=ids(2, 10),
                    token_type_ids=rng.integers(0, 2, (2, 10)).astype(np.int32),
                    attention_mask=mask, labels=labels)
    mask = np.ones((2, 11), np.int32)
    mask[0, 8:] = 0
    return dict(input_ids=ids(2, 11), attention_mask=mask,
                decoder_input_ids=ids(2, 6), labels=ids(2, 6))


def kernel_count(model):
    return model.ir("lowered").count("kiln.kernel =")


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert", "t5"])
def test_fused_models_match_unfused(arch):
    cfg = {"gpt2": GPT2, "llama": LLAMA, "bert": BERT, "t5": T5}[arch]
    fused = kiln.compile(EXAMPLES / f"{arch}.kiln", defines=cfg, seed=4,
                         grad="loss")
    plain = kiln.compile(EXAMPLES / f"{arch}.kiln", defines=cfg, seed=4,
                         grad="loss", fuse=False)
    assert kernel_count(fused) < kernel_count(plain)
    x = inputs(arch, cfg, np.random.default_rng(5))
    fwd = {k: v for k, v in x.items() if k not in ("targets", "labels")}
    np.testing.assert_allclose(fused.forward(**fwd), plain.forward(**fwd),
                               rtol=2e-5, atol=2e-5)
    got, want = fused.run("loss_grad", **x), plain.run("loss_grad", **x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


EPILOGUE = """
model epi(C = 24, N = 40) {
  dim B, T
  param fc1 = linear(C, N)
  param fc2 = linear(C, N)
  param fc3 = linear(C, N)
  param fc4 = linear(C, N)
  param proj = linear(N, C)
  fn f(x: f32[B, T, C], r: f32[B, T, N]) -> (f32[B, T, N], f32[B, T, N],
                                            f32[B, T, N], f32[B, T, C]) {
    a = gelu(fc1(x)) + r
    b = silu(fc2(x) * 0.5)
    c = r + relu(fc3(x))
    d = x + proj(gelu_tanh(fc4(x)))
    return a, b, c, d
  }
}
"""


def gelu(x, approx=False):
    if approx:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) *
                                      (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def test_matmul_epilogues_against_float64():
    m = kiln.compile(EPILOGUE)
    lowered = m.ir("lowered")
    for act in ("gelu", "silu", "relu", "gelu_tanh"):
        assert f"activation = #kiln<activation {act}>" in lowered
    assert lowered.count("residual") == 3 and "scale = 5.000000e-01" in lowered
    assert lowered.count('kiln.kernel = "FusedMatmul"') == 5
    assert 'kiln.kernel = "Gelu"' not in lowered
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 24)).astype(np.float32)
    r = rng.standard_normal((2, 5, 40)).astype(np.float32)
    p = {k: v.astype(np.float64) for k, v in m.parameters().items()}
    h = [x.astype(np.float64) @ p[f"fc{i}.weight"].T + p[f"fc{i}.bias"]
         for i in range(1, 5)]
    want = [gelu(h[0]) + r, (h[1] * 0.5) / (1 + np.exp(-h[1] * 0.5)),
            np.maximum(h[2], 0) + r,
            x + gelu(h[3], True) @ p["proj.weight"].T + p["proj.bias"]]
    for g, w in zip(m.run("f", x=x, r=r), want):
        assert np.max(np.abs(g - w)) < 1e-5


def test_fused_matmul_reference_kernel_matches_onednn(tmp_path):
    """KILN_REFERENCE_KERNELS=1 runs the naive fused matmul (and every other
    reference kernel); the oneDNN post-op path must agree with it."""
    src = tmp_path / "epi.kiln"
    src.write_text(EPILOGUE)
    art = tmp_path / "epi.kart"
    subprocess.run([KILN, "compile", src, "-o", art], check=True)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", rng.standard_normal((3, 4, 24), np.float32))
    np.save(tmp_path / "r.npy", rng.standard_normal((3, 4, 40), np.float32))
    results = {}
    for mode in ("0", "1"):
        outs = [tmp_path / f"o{mode}{i}.npy" for i in range(4)]
        env = dict(os.environ, KILN_REFERENCE_KERNELS=mode)
        subprocess.run([KILN, "run", art, "--function=f",
                        f"--input=x=@{tmp_path / 'x.npy'}",
                        f"--input=r=@{tmp_path / 'r.npy'}",
                        *[f"--output=@{o}" for o in outs]],
                       check=True, env=env, capture_output=True)
        results[mode] = [np.load(o) for o in outs]
    for a, b in zip(results["0"], results["1"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


CE = """
model ce(V = 37, C = 8) {
  dim B, T
  param head = linear(C, V)
  param ln = layernorm(C)
  fn loss(x: f32[B, T, C], r: f32[B, T, C], t: i32[B, T]) -> f32 {
    return cross_entropy(head(ln(x + r)), t, ignore_index = -100)
  }
}
"""


def test_softmax_cross_entropy_and_norm_grads_match_autograd():
    """softmax_cross_entropy (with ignored positions), add_norm and norm_grad
    in one gradient function, against PyTorch autograd in float64."""
    m = kiln.compile(CE, seed=2, grad="loss")
    lowered = m.ir("lowered")
    for op in ("SoftmaxCrossEntropy", "AddNorm", "NormGrad"):
        assert f'kiln.kernel = "{op}"' in lowered
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 7, 8)).astype(np.float32)
    r = rng.standard_normal((3, 7, 8)).astype(np.float32)
    t = rng.integers(0, 37, (3, 7)).astype(np.int32)
    t[0, :4] = -100
    loss, *grads = m.run("loss_grad", x=x, r=r, t=t)
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in m.parameters().items()}
    h = torch.nn.functional.layer_norm(
        torch.tensor(x + r, dtype=torch.float64), (8,), p["ln.weight"],
        p["ln.bias"], 1e-5)
    logits = h @ p["head.weight"].T + p["head.bias"]
    want = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 37), torch.tensor(t, dtype=torch.long).reshape(-1),
        ignore_index=-100)
    want.backward()
    assert abs(float(loss) - want.item()) < 1e-5
    for name, g in zip(m.parameters(), grads):
        assert np.max(np.abs(g - p[name].grad.numpy())) < 1e-5, name


BROADCAST = """
model bc(C = 6) {
  dim B, T
  fn f(x: f32[B, T, C], row: f32[C], col: f32[B, T, 1], y: f32[T, 1])
      -> f32[B, T, C] {
    return tanh(x * row + col) * 2.0 - exp(y - x) / (col * col + 1.0)
  }
}
"""


def test_fused_elementwise_broadcasts_every_way():
    """Operands that repeat with a period (row), one per row (col, strided)
    and a broadcast in the middle (y), and scalar constants, across several
    tiles of the program."""
    m = kiln.compile(BROADCAST)
    assert m.ir("lowered").count('kiln.kernel = "FusedElementwise"') == 1
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 200, 6)).astype(np.float32)
    row = rng.standard_normal(6).astype(np.float32)
    col = rng.standard_normal((3, 200, 1)).astype(np.float32)
    y = rng.standard_normal((200, 1)).astype(np.float32)
    f = [a.astype(np.float64) for a in (x, row, col, y)]
    want = np.tanh(f[0] * f[1] + f[2]) * 2 - np.exp(f[3] - f[0]) / (
        f[2] * f[2] + 1)
    np.testing.assert_allclose(m.run("f", x=x, row=row, col=col, y=y), want,
                               rtol=1e-5, atol=1e-6)


def test_prepacked_weights_follow_every_update():
    """The second call packs the weights into oneDNN's layout; results agree
    with the first (unpacked) call, and changing the weights (load_weights,
    Trainer steps) makes the next call read the new values, never a stale
    packed copy. (The compiled train_step's in-place updates bump the same
    versions; test_training compares it with the host update.)"""
    cfg = dict(GPT2, n_layer=1)
    m = kiln.compile(EXAMPLES / "gpt2.kiln", defines=cfg, seed=1, grad="loss")
    x = np.random.default_rng(0).integers(0, 97, (2, 7)).astype(np.int32)
    first, second, third = m.forward(tokens=x), m.forward(tokens=x), \
        m.forward(tokens=x)
    np.testing.assert_allclose(second, first, rtol=1e-5, atol=1e-5)
    assert np.array_equal(second, third)
    # Square weights (attn.c_proj) are read transposed forward and plain
    # backward: two packed copies, never one for the other.
    grads = [m.run("loss_grad", tokens=x, targets=x) for _ in range(3)]
    for g1, g2 in zip(grads[0], grads[2]):
        np.testing.assert_allclose(g2, g1, rtol=1e-5, atol=1e-6)

    def fresh(params):
        other = kiln.compile(EXAMPLES / "gpt2.kiln", defines=cfg, seed=2)
        other.load_weights(params)
        return other.forward(tokens=x)

    new = kiln.compile(EXAMPLES / "gpt2.kiln", defines=cfg, seed=7).parameters()
    m.load_weights(new)
    np.testing.assert_allclose(m.forward(tokens=x), fresh(new), rtol=1e-5,
                               atol=1e-5)
    trainer = kiln.Trainer(m, kiln.AdamW(lr=1e-2), total_steps=2)
    for _ in range(2):
        trainer.step({"tokens": x, "targets": x})
        np.testing.assert_allclose(m.forward(tokens=x), fresh(m.parameters()),
                                   rtol=1e-5, atol=1e-5)


def test_logits_gradient_is_written_over_the_logits(tmp_path):
    """softmax_cross_entropy's gradient takes over the logits' storage (the
    arena planner's in-place rule), so the fused plan needs most of a
    [B, T, V] buffer less than the unfused one (without the rule the two
    plans are the same size)."""
    from kiln_cli import kiln as kiln_cli
    src = tmp_path / "ce.kiln"
    src.write_text(CE.replace("V = 37", "V = 5000"))
    arenas = {}
    for name, extra in (("fused", []), ("unfused", ["--no-fuse"])):
        art = tmp_path / f"{name}.kart"
        kiln_cli("compile", src, "--grad=loss", *extra, "-o", art)
        text = kiln_cli("inspect", art, "--dims=B=4,T=16").stdout
        fn = text[text.index("fn loss_grad"):]
        # "arena 1.4 MiB (1466240 bytes)", or "arena 384 bytes" when small.
        arenas[name] = int(re.search(
            r"memory at B=4,T=16: arena (?:[\d.]+ \w+ \()?(\d+) bytes",
            fn).group(1))
    logits = 4 * 16 * 5000 * 4
    assert arenas["fused"] <= arenas["unfused"] - 0.8 * logits, arenas
