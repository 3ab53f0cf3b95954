"""Every kernel on both paths — oneDNN primitives and the naive references
(KILN_REFERENCE_KERNELS=1) — against NumPy in float64, through a model that
uses each op once. Tolerance 1e-5 (float32 against float64)."""
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kiln_cli import KILN

MODEL = """
model ops(C = 6) {
  dim B, T
  fn f(x: f32[B, T, C], y: f32[T, C], w: f32[C], idx: i32[B, T])
      -> (f32[B, T, C], f32[B, T, C], f32[B, C], f32[B, T, 1], f32[T, B, C],
          f32[B, T, C], f32[B, T, C], f32[B, T, C], f32[B, T, C], f32[C, T, B]) {
    a = softmax(x, axis = 1)
    b = (y - x) / (exp(x) + 1.5) + maximum(x, 0.25) - minimum(y, -0.5)
    c = sum(x, axis = 1) + mean(x, axis = 1) * max(x, axis = 1)
    d = mean(x * x, axis = -1, keepdim = true)
    e = transpose(x, perm = [1, 0, 2])
    g = gelu(x) + gelu_tanh(x) + silu(x) + relu(x) + sigmoid(x) + tanh(x)
    h = log(exp(x) + 1.0) + sqrt(x * x + 1.0) + rsqrt(x * x + 2.0) + (x * x + 1.0) ** 0.5
    i = layernorm(x, w, w, eps = 1e-5) + rmsnorm(x, w, eps = 1e-6)
    p, q = split(concat([x, -x], axis = -1), 2)
    r = cast(idx, f32)
    return a, b, c, d, e, g, h + p - q, i, reshape(r, [B, T, 1]) * x,
           transpose(x, perm = [2, 1, 0])
  }
}
"""


def softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def gelu(x, approx):
    if approx:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) *
                                      (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def layernorm(x, w, b, eps, rms=False):
    m = 0 if rms else x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + (0 if rms else b)


def reference(x, y, w, idx):
    sig = 1 / (1 + np.exp(-x))
    return [
        softmax(x, 1),
        (y - x) / (np.exp(x) + 1.5) + np.maximum(x, 0.25) - np.minimum(y, -0.5),
        x.sum(1) + x.mean(1) * x.max(1),
        (x * x).mean(-1, keepdims=True),
        x.transpose(1, 0, 2),
        gelu(x, False) + gelu(x, True) + x * sig + np.maximum(x, 0) + sig +
        np.tanh(x),
        np.log(np.exp(x) + 1) + np.sqrt(x * x + 1) + 1 / np.sqrt(x * x + 2) +
        (x * x + 1) ** 0.5 + x - (-x),
        layernorm(x, w, w, 1e-5) + layernorm(x, w, None, 1e-6, rms=True),
        idx[..., None].astype(np.float64) * x,
        x.transpose(2, 1, 0),
    ]


@pytest.mark.parametrize("path", ["onednn", "reference"])
def test_every_kernel(tmp_path, path):
    src = tmp_path / "ops.kiln"
    src.write_text(MODEL)
    art = tmp_path / "ops.kart"
    subprocess.run([KILN, "compile", src, "-o", art], check=True)
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((2, 5, 6)).astype(np.float32),
              "y": rng.standard_normal((5, 6)).astype(np.float32),
              "w": (1 + 0.1 * rng.standard_normal(6)).astype(np.float32),
              "idx": rng.integers(-3, 4, (2, 5)).astype(np.int32)}
    args = []
    for k, v in inputs.items():
        np.save(tmp_path / f"{k}.npy", v)
        args.append(f"--input={k}=@{tmp_path / (k + '.npy')}")
    outs = [tmp_path / f"o{i}.npy" for i in range(10)]
    env = dict(os.environ, KILN_REFERENCE_KERNELS="1" if path == "reference"
               else "0")
    subprocess.run([KILN, "run", art, "--function=f", *args,
                    *[f"--output=@{o}" for o in outs]], check=True, env=env)
    want = reference(*[v.astype(np.float64) if v.dtype == np.float32 else v
                       for v in inputs.values()])
    for i, (o, w) in enumerate(zip(outs, want)):
        got = np.load(o)
        assert got.shape == w.shape, (i, got.shape, w.shape)
        err = np.max(np.abs(got - w))
        assert err <= 1e-5, f"result {i}: max error {err:.3g}"
