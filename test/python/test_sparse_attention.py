"""Sparse attention in compiled models against float64 PyTorch applying the
same pattern as a dense mask (test/python/sparse_reference.py, written from
the pattern definitions), forward and every gradient (q, k, v, and the
bias), for every pattern kind, causal or not, with grouped key/value heads,
a key padding mask that leaves some query rows with no visible key, at
lengths that are not multiples of the 64-row block (T = 1, 63, 200, 517).
Both kiln's blocked kernels and its reference kernels must agree with
PyTorch to 1e-5 (absolute and relative)."""
import sys

import numpy as np
import pytest
import torch

import sparse_reference as ref
from kiln_cli import BUILD

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402

MODEL = """
model attn(T = 65, H = 4, G = 2, D = 16, causal = true) {
  param q: f32[2, T, H * D] = normal(1.0)
  param k: f32[2, T, G * D] = normal(1.0)
  param v: f32[2, T, G * D] = normal(1.0)
  BIAS_PARAM
  fn forward(mask: i32[2, T]) -> f32[2, T, H * D] {
    return attention(q, k, v, heads = H, kv_heads = G, causal = causal,
                     mask = mask BIAS_ARG, pattern = PATTERN)
  }
  fn loss(mask: i32[2, T], g: f32[2, T, H * D]) -> f32 {
    return sum(forward(mask) * g, axis = [0, 1, 2])
  }
}
"""

H, G, D = 4, 2, 16

PATTERNS = [
    dict(kind="sliding_window", window=16, causal=True),
    dict(kind="sliding_window", window=16, causal=False, global_tokens=3),
    dict(kind="block_sparse", block=16, local=1, causal=False, random=2,
         seed=7, **{"global": 1}),
    dict(kind="block_sparse", block=32, local=0, causal=True, random=3,
         seed=1, **{"global": 1}),
    dict(kind="block_sparse", block=64, local=1, causal=True, random=3,
         seed=5, global_tokens=2, **{"global": 0}),
    dict(kind="strided", stride=9, causal=True),
    dict(kind="strided", stride=20, causal=False),
    dict(kind="fixed", stride=32, summary=4, causal=True),
    dict(kind="fixed", stride=16, summary=2, causal=False, global_tokens=1),
]


def name(spec):
    return ref.kiln_syntax(spec).replace(" ", "") + (
        "-causal" if spec["causal"] else "")


def compile_model(spec, T, bias=False):
    text = (MODEL.replace("PATTERN", ref.kiln_syntax(spec))
            .replace("BIAS_PARAM", "param bias: f32[H, T, T] = normal(0.5)"
                     if bias else "")
            .replace("BIAS_ARG", ", bias = bias" if bias else ""))
    return kiln.compile(text, defines=dict(
        T=T, causal="true" if spec["causal"] else "false"), grad="loss",
        seed=3)


def inputs(T, seed):
    rng = np.random.default_rng(seed)
    mask = np.ones((2, T), np.int32)
    mask[1, rng.integers(0, T, T // 3)] = 0
    mask[1, :10] = 0  # early queries of narrow patterns see no key
    g = rng.standard_normal((2, T, H * D)).astype(np.float32)
    return mask, g


def torch_reference(spec, T, params, mask, g):
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in params.items()}
    q = p["q"].view(2, T, H, D).transpose(1, 2)
    k = p["k"].view(2, T, G, D).transpose(1, 2).repeat_interleave(H // G, 1)
    v = p["v"].view(2, T, G, D).transpose(1, 2).repeat_interleave(H // G, 1)
    s = q @ k.transpose(-1, -2) / np.sqrt(D)
    if "bias" in p:
        s = s + p["bias"][None]
    vis = torch.tensor(ref.visibility(spec, T, T, H))[None]
    vis = vis & torch.tensor(mask, dtype=torch.bool)[:, None, None]
    s = s.masked_fill(~vis, float("-inf"))
    pr = torch.softmax(s, -1).nan_to_num(0.0)
    o = (pr @ v).transpose(1, 2).reshape(2, T, H * D)
    (o * torch.tensor(g, dtype=torch.float64)).sum().backward()
    grads = [p[n].grad.numpy() for n in params]
    return o.detach().numpy(), grads, vis


@pytest.mark.parametrize("T", [1, 63, 200, 517])
@pytest.mark.parametrize("spec", PATTERNS, ids=name)
def test_pattern_matches_dense_masked_pytorch(spec, T):
    model = compile_model(spec, T)
    params = model.parameters()
    mask, g = inputs(T, T)
    want_out, want_grads, vis = torch_reference(spec, T, params, mask, g)
    assert want_out.shape == (2, T, H * D)
    for kernels in ("fast", "reference"):
        out = model.run("forward", kernels=kernels, mask=mask)
        np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{kernels} forward")
        loss, *grads = model.run("loss_grad", kernels=kernels, mask=mask, g=g)
        for got, want, n in zip(grads, want_grads, params):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5,
                                       err_msg=f"{kernels} d{n}")
    # Rows that see no key are zeros, and there are such rows (under causal
    # the first queries see only padded keys).
    blind = ~vis.any(-1).numpy()  # [B, H, T]
    if spec["causal"]:
        assert blind.any()
    out = model.run("forward", mask=mask).reshape(2, T, H, D)
    assert not out.transpose(0, 2, 1, 3)[blind].any()


@pytest.mark.parametrize("spec", [PATTERNS[2], PATTERNS[7]], ids=name)
def test_bias_gradient_with_a_pattern(spec):
    T = 200
    model = compile_model(spec, T, bias=True)
    params = model.parameters()
    mask, g = inputs(T, 5)
    want_out, want_grads, _ = torch_reference(spec, T, params, mask, g)
    out = model.run("forward", mask=mask)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
    loss, *grads = model.run("loss_grad", mask=mask, g=g)
    assert list(params) == ["q", "k", "v", "bias"]
    for got, want, n in zip(grads, want_grads, params):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5,
                                   err_msg=f"d{n}")


def test_reference_oracle_matches_the_definitions():
    """Spot checks of the oracle itself against the issue's examples."""
    w = ref.visibility(dict(kind="sliding_window", window=3, causal=True),
                       6, 6, 1)[0]
    assert w[5].tolist() == [False, False, False, True, True, True]
    s = ref.visibility(dict(kind="strided", stride=3, causal=True), 8, 8, 1)
    assert s[0, 7].tolist() == [False, True, False, False, True, True, True,
                                True]
    f = ref.visibility(dict(kind="fixed", stride=4, summary=1, causal=False),
                       8, 8, 1)
    assert f[0, 1].tolist() == [True, True, True, True, False, False, False,
                                True]
    gt = ref.visibility(dict(kind="sliding_window", window=1, causal=False,
                             global_tokens=2), 5, 5, 1)[0]
    assert gt[0].all() and gt[:, 1].all() and not gt[4, 2]
