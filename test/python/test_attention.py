"""The blocked (flash) attention kernels against the naive per-row reference
(KILN_REFERENCE_KERNELS=1) and against PyTorch autograd in float64, forward
and backward, at lengths around the 64-row block size (partial blocks,
causal diagonals), with Tq != Tk (causal alignment at the end), grouped
key/value heads, a padding mask, and a fully masked batch row. Tolerance
1e-5 (absolute, and relative for the summed loss) against the reference,
2e-5 absolute against float64."""
import os
import subprocess

import numpy as np
import pytest
import torch

import kiln_cli
from kiln_cli import KILN

MODEL = """
model attn(TQ = 65, TK = 65, H = 4, G = 2, D = 16, causal = true) {
  dim B
  param q: f32[2, TQ, H * D] = normal(1.0)
  param k: f32[2, TK, G * D] = normal(1.0)
  param v: f32[2, TK, G * D] = normal(1.0)
  fn forward(mask: i32[2, TK]) -> f32[2, TQ, H * D] {
    return attention(q, k, v, heads = H, kv_heads = G, causal = causal,
                     mask = mask)
  }
  fn loss(mask: i32[2, TK], g: f32[2, TQ, H * D]) -> f32 {
    return sum(forward(mask) * g, axis = [0, 1, 2])
  }
}
"""

CASES = [dict(TQ=1, TK=1), dict(TQ=63, TK=63), dict(TQ=64, TK=64),
         dict(TQ=65, TK=65), dict(TQ=130, TK=200), dict(TQ=70, TK=70, G=4),
         dict(TQ=90, TK=150, causal="false")]


def run(tmp, defines, reference, mask, g):
    art = tmp / "a.kart"
    subprocess.run([KILN, "compile", tmp / "attn.kiln", "--grad=loss",
                    *[a for k, v in defines.items() for a in ("-D", f"{k}={v}")],
                    "--seed=3", "-o", art], check=True)
    np.save(tmp / "mask.npy", mask)
    np.save(tmp / "g.npy", g)
    env = dict(os.environ, KILN_REFERENCE_KERNELS="1" if reference else "0")
    outs = [tmp / f"o{i}.npy" for i in range(5)]
    subprocess.run([KILN, "run", art, f"--input=mask=@{tmp / 'mask.npy'}",
                    f"--output=@{outs[0]}"], check=True, env=env,
                   capture_output=True)
    subprocess.run([KILN, "run", art, "--function=loss_grad",
                    f"--input=mask=@{tmp / 'mask.npy'}",
                    f"--input=g=@{tmp / 'g.npy'}",
                    *[f"--output=@{o}" for o in outs[1:]]],
                   check=True, env=env, capture_output=True)
    return [np.load(o) for o in outs]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(
    f"{k}={v}" for k, v in c.items()))
def test_flash_attention_matches_reference(tmp_path, case):
    (tmp_path / "attn.kiln").write_text(MODEL)
    cfg = dict(TQ=65, TK=65, H=4, G=2, D=16)
    cfg.update(case)
    rng = np.random.default_rng(1)
    mask = np.ones((2, cfg["TK"]), np.int32)
    mask[1, rng.integers(0, cfg["TK"], cfg["TK"] // 3)] = 0
    g = rng.standard_normal((2, cfg["TQ"], cfg["H"] * cfg["D"])).astype(
        np.float32)
    fast = run(tmp_path, case, False, mask, g)
    ref = run(tmp_path, case, True, mask, g)
    for a, b in zip(fast, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_flash_attention_matches_autograd(tmp_path):
    """A long causal case with Tq < Tk and a fully masked second batch row
    (its output and gradients are zero) against float64 autograd."""
    (tmp_path / "attn.kiln").write_text(MODEL)
    TQ, TK, H, G, D = 150, 190, 4, 2, 16
    defines = dict(TQ=TQ, TK=TK)
    rng = np.random.default_rng(2)
    mask = np.ones((2, TK), np.int32)
    mask[1] = 0
    g = rng.standard_normal((2, TQ, H * D)).astype(np.float32)
    out, loss, dq, dk, dv = run(tmp_path, defines, False, mask, g)
    art = tmp_path / "a.kart"
    subprocess.run([KILN, "compile", tmp_path / "attn.kiln", "-D", f"TQ={TQ}",
                    "-D", f"TK={TK}", "--seed=3",
                    f"--save-weights={tmp_path / 'w.safetensors'}", "-o", art],
                   check=True)
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in kiln_cli.read_safetensors(tmp_path / "w.safetensors")
         .items()}
    q = p["q"].view(2, TQ, H, D).transpose(1, 2)
    k = p["k"].view(2, TK, G, D).transpose(1, 2).repeat_interleave(H // G, 1)
    v = p["v"].view(2, TK, G, D).transpose(1, 2).repeat_interleave(H // G, 1)
    s = q @ k.transpose(-1, -2) / np.sqrt(D)
    vis = torch.ones(TQ, TK, dtype=torch.bool).tril(TK - TQ)
    vis = vis[None, None] & torch.tensor(mask, dtype=torch.bool)[:, None, None]
    s = s.masked_fill(~vis, float("-inf"))
    pr = torch.softmax(s, -1).nan_to_num(0.0)
    o = (pr @ v).transpose(1, 2).reshape(2, TQ, H * D)
    (o * torch.tensor(g, dtype=torch.float64)).sum().backward()
    assert np.max(np.abs(out - o.detach().numpy())) < 2e-5
    assert not out[1].any()
    for got, name in ((dq, "q"), (dk, "k"), (dv, "v")):
        assert np.max(np.abs(got - p[name].grad.numpy())) < 2e-5, name
