"""Gradients derived by kiln-autodiff (kiln compile --grad=loss) and run on
the CPU runtime. Each rule is checked against PyTorch autograd in float64
(tolerance 1e-5) and against float64 central differences of the same
function along a random direction (tolerance 1e-5); a composite is also
checked against central differences of kiln's own float32 loss."""
import subprocess

import numpy as np
import pytest
import torch

from kiln_cli import KILN, write_safetensors

# name: (expression of p [4, 6], q and r [6, 4]; its PyTorch twin; q's shape)
RULES = {
    "add": ("p + q", lambda p, q, r: p + q, (4, 6)),
    "sub": ("p - q", lambda p, q, r: p - q, (4, 6)),
    "mul": ("p * q", lambda p, q, r: p * q, (4, 6)),
    "div": ("p / (q * q + 1.0)", lambda p, q, r: p / (q * q + 1.0), (4, 6)),
    "broadcast": ("p * q - q", lambda p, q, r: p * q - q, (6,)),
    "neg": ("-p * q", lambda p, q, r: -p * q, (4, 6)),
    "exp": ("exp(p * 0.5) * q", lambda p, q, r: torch.exp(p * 0.5) * q,
            (4, 6)),
    "tanh": ("tanh(p) * q", lambda p, q, r: torch.tanh(p) * q, (4, 6)),
    "sigmoid": ("sigmoid(p) * q", lambda p, q, r: torch.sigmoid(p) * q,
                (4, 6)),
    "matmul": ("p @ q", lambda p, q, r: p @ q, (6, 6)),
    "matmul_tb": ("matmul(p, q, transpose_b = true)",
                  lambda p, q, r: p @ q.T, (6, 6)),
    "matmul_ta": ("matmul(r, q, transpose_a = true)",
                  lambda p, q, r: r.T @ q, (6, 6)),
    "matmul_both": ("matmul(r, q, transpose_a = true, transpose_b = true)",
                    lambda p, q, r: r.T @ q.T, (6, 6)),
    "transpose": ("transpose(transpose(p) * q)",
                  lambda p, q, r: (p.T * q).T, (6, 4)),
    "log": ("log(p * p + 1.0) * q", lambda p, q, r: torch.log(p * p + 1) * q,
            (4, 6)),
    "sqrt": ("sqrt(p * p + q * q + 0.5)",
             lambda p, q, r: torch.sqrt(p * p + q * q + 0.5), (4, 6)),
    "rsqrt": ("rsqrt(p * p + 0.5) * q",
              lambda p, q, r: torch.rsqrt(p * p + 0.5) * q, (4, 6)),
    "silu": ("silu(p) * q", lambda p, q, r: torch.nn.functional.silu(p) * q,
             (4, 6)),
    "pow": ("(p * p + 1.0) ** (q * 0.5)",
            lambda p, q, r: (p * p + 1.0) ** (q * 0.5), (4, 6)),
    "pow_scalar": ("p ** 3 + q", lambda p, q, r: p ** 3 + q, (4, 6)),
    "softmax": ("softmax(p * q, axis = 0) * 3.0",
                lambda p, q, r: torch.softmax(p * q, dim=0) * 3.0, (4, 6)),
    "layernorm": ("layernorm(p * 3.0, q, q * 0.5, eps = 1e-5)",
                  lambda p, q, r: torch.nn.functional.layer_norm(
                      p * 3.0, (6,), q, q * 0.5, 1e-5), (6,)),
    "rmsnorm": ("rmsnorm(p * 3.0, q, eps = 1e-6) * 2.0",
                lambda p, q, r: (p * 3.0) * torch.rsqrt(
                    (p * 3.0).pow(2).mean(-1, keepdim=True) + 1e-6) * q * 2.0,
                (6,)),
    "gelu_tanh": ("gelu_tanh(p * 2.0) * q",
                  lambda p, q, r: torch.nn.functional.gelu(
                      p * 2.0, approximate="tanh") * q, (4, 6)),
    "relu": ("relu(p) * q", lambda p, q, r: torch.relu(p) * q, (4, 6)),
    "gelu": ("gelu(p * 2.0) * q",
             lambda p, q, r: torch.nn.functional.gelu(p * 2.0) * q, (4, 6)),
    "embedding": ("r[t] @ transpose(r) + p",
                  lambda p, q, r, t: r[t] @ r.T + p, (4, 6)),
    "reshape": ("reshape(reshape(p, [6, 4]) * r, [4, 6]) + q",
                lambda p, q, r: (p.reshape(6, 4) * r).reshape(4, 6) + q,
                (4, 6)),
    "slice_concat": ("concat([p[0:2] * 2.0, p[1:3]], axis = 0) * q",
                     lambda p, q, r: torch.cat([p[0:2] * 2.0, p[1:3]], 0) * q,
                     (4, 6)),
    "concat_last": ("concat([p[0:4] * q, transpose(r[0:2])], axis = -1)",
                    lambda p, q, r: torch.cat([p * q, r[0:2].T], 1),
                    (4, 6)),
    "split": ("""a, b = split(p, 2, axis = 1)
    return cross_entropy(concat([b * 2.0, a * q], axis = 1), t)""",
              lambda p, q, r: torch.cat(
                  [p[:, 3:] * 2.0, p[:, :3] * q], 1), (4, 3)),
    "split_unused": ("""a, b = split(p, 2, axis = 0)
    return cross_entropy(concat([a, a * q], axis = 0), t)""",
                     lambda p, q, r: torch.cat([p[:2], p[:2] * q], 0),
                     (2, 6)),
    "sum": ("p * sum(q, axis = 0) + sum(p * p, axis = -1, keepdim = true)",
            lambda p, q, r: p * q.sum(0) + (p * p).sum(-1, keepdim=True),
            (4, 6)),
    "mean": ("p - mean(p * q, axis = [0, 1])",
             lambda p, q, r: p - (p * q).mean(), (4, 6)),
    "max": ("p * max(q, axis = -1, keepdim = true)",
            lambda p, q, r: p * q.amax(-1, keepdim=True), (4, 6)),
    "rope": ("reshape(rope(reshape(p * q, [1, 4, 6]), 2, theta = 100.0), "
             "[4, 6])", lambda p, q, r: rope_ref(p * q, 2, 100.0, False),
             (4, 6)),
    "rope_half": ("reshape(rope(reshape(p * q, [1, 4, 6]), 6, style = half), "
                  "[4, 6])",
                  lambda p, q, r: rope_ref(p * q, 6, 10000.0, True), (4, 6)),
    "attention": ("""x = reshape(p, [1, 4, 6])
    y = reshape(q, [1, 4, 6])
    o = attention(x * 2.0, y, x * y, heads = 2, causal = true)
    return cross_entropy(reshape(o, [4, 6]) * 3.0, t)""",
                  lambda p, q, r: attention_ref(p * 2.0, q, p * q, 2, 2,
                                                True) * 3.0, (4, 6)),
    "attention_mask_bias": ("""x = reshape(p, [1, 4, 6])
    o = attention(x, x * 2.0, x, heads = 2, mask = reshape(t, [1, 4]),
                  bias = q)
    return cross_entropy(reshape(o, [4, 6]) * 3.0, t)""",
                            lambda p, q, r, t: attention_ref(
                                p, p * 2.0, p, 2, 2, False, mask=t, bias=q)
                            * 3.0, (2, 4, 4)),
    "attention_gqa": ("""x = reshape(p, [1, 4, 6])
    k, v = split(reshape(transpose(r), [1, 4, 6]), 2)
    o = attention(x, k, v * 2.0, heads = 2, kv_heads = 1, causal = true)
    return cross_entropy(concat([reshape(o, [4, 6])], axis = 0) * 3.0, t)""",
                      lambda p, q, r: attention_ref(
                          p, r.T.reshape(4, 6)[:, :3],
                          r.T.reshape(4, 6)[:, 3:] * 2.0, 2, 1, True) * 3.0,
                      (4, 6)),
}


def rope_ref(x, hd, theta, half):
    """Rotary embedding of x [T, C] in float64, positions 0..T-1."""
    T, C = x.shape
    out = x.clone()
    for h in range(C // hd):
        for i in range(hd // 2):
            ang = torch.arange(T, dtype=torch.float64) * theta ** (-2.0 * i / hd)
            i0 = h * hd + (i if half else 2 * i)
            i1 = h * hd + (i + hd // 2 if half else 2 * i + 1)
            a, b = x[:, i0], x[:, i1]
            out[:, i0] = a * torch.cos(ang) - b * torch.sin(ang)
            out[:, i1] = a * torch.sin(ang) + b * torch.cos(ang)
    return out


def attention_ref(q, k, v, H, Hkv, causal, mask=None, bias=None):
    """Multi-head attention of [T, C] tensors in float64."""
    T, D = q.shape[0], q.shape[1] // H
    Dv = v.shape[1] // Hkv
    outs = []
    for h in range(H):
        hk = h // (H // Hkv)
        s = q[:, h * D:(h + 1) * D] @ k[:, hk * D:(hk + 1) * D].T / D ** 0.5
        if bias is not None:
            s = s + bias[h]
        if causal:
            s = s.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        if mask is not None:
            s = s.masked_fill(torch.as_tensor(mask == 0)[None, :],
                              float("-inf"))
        outs.append(torch.softmax(s, -1) @ v[:, hk * Dv:(hk + 1) * Dv])
    return torch.cat(outs, 1)


def model(expr, q_shape):
    q = ", ".join(map(str, q_shape))
    body = expr if "return" in expr else f"return cross_entropy({expr}, t)"
    return f"""
model op() {{
  dim B
  param p: f32[4, 6] = normal(0.5)
  param q: f32[{q}] = normal(0.5)
  param r: f32[6, 4] = normal(0.5)
  fn loss(t: i32[4]) -> f32 {{
    {body}
  }}
}}
"""


def kiln_grads(tmp_path, expr, q_shape, w, targets):
    src = tmp_path / "m.kiln"
    src.write_text(model(expr, q_shape))
    ws = tmp_path / "w.safetensors"
    write_safetensors(ws, w)
    art = tmp_path / "m.kart"
    subprocess.run([KILN, "compile", src, "--grad=loss", f"--weights={ws}",
                    "-o", art], check=True)
    np.save(tmp_path / "t.npy", targets)
    outs = [tmp_path / f"g{i}.npy" for i in range(4)]
    subprocess.run([KILN, "run", art, "--function=loss_grad",
                    f"--input=t=@{tmp_path / 't.npy'}",
                    *[f"--output=@{o}" for o in outs]], check=True)
    return [np.load(o) for o in outs]


def weights(rng, q_shape):
    return {"p": (0.5 * rng.standard_normal((4, 6))).astype(np.float32),
            "q": (0.5 * rng.standard_normal(q_shape)).astype(np.float32),
            "r": (0.5 * rng.standard_normal((6, 4))).astype(np.float32)}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_vjp_rule(tmp_path, rule):
    expr, fn, q_shape = RULES[rule]
    rng = np.random.default_rng(sorted(RULES).index(rule))
    w = weights(rng, q_shape)
    targets = rng.integers(0, 6, (4,)).astype(np.int32)
    loss, *got = kiln_grads(tmp_path, expr, q_shape, w, targets)
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in w.items()}
    args = [t["p"], t["q"], t["r"]]
    if fn.__code__.co_argcount == 4:
        args.append(torch.as_tensor(targets, dtype=torch.long))
    want = torch.nn.functional.cross_entropy(
        fn(*args), torch.as_tensor(targets, dtype=torch.long))
    want.backward()
    assert abs(float(loss) - float(want)) <= 1e-5
    for g, name in zip(got, ["p", "q", "r"]):
        ref = t[name].grad
        ref = np.zeros_like(g) if ref is None else ref.numpy()
        assert np.max(np.abs(g - ref)) <= 1e-5, name

    # Central differences in float64 of the same function (no autograd):
    # along a random unit direction d over p, q and r, (L(w + h d) -
    # L(w - h d)) / 2h with h = 1e-5 against kiln's sum(grad * d).
    d = {k: rng.standard_normal(v.shape) for k, v in w.items()}
    norm = np.sqrt(sum(float(np.sum(v * v)) for v in d.values()))
    h = 1e-5

    def loss_at(sign):
        x = {k: torch.tensor(w[k].astype(np.float64) + sign * h * d[k] / norm)
             for k in w}
        a = [x["p"], x["q"], x["r"]] + args[3:]
        return float(torch.nn.functional.cross_entropy(
            fn(*a), torch.as_tensor(targets, dtype=torch.long)))

    with torch.no_grad():
        fd = (loss_at(1) - loss_at(-1)) / (2 * h)
    analytic = sum(float(np.sum(g.astype(np.float64) * d[k])) / norm
                   for g, k in zip(got, ["p", "q", "r"]))
    assert abs(fd - analytic) <= 1e-5 * max(1.0, abs(fd)), (fd, analytic)


def test_finite_differences(tmp_path):
    """Central differences of kiln's own float32 loss agree with kiln's
    gradient (step 1e-2, tolerance 2e-3)."""
    expr = "p / (q * q + 1.0) + tanh(p) * sigmoid(q)"
    rng = np.random.default_rng(5)
    w = weights(rng, (4, 6))
    t = rng.integers(0, 6, (4,)).astype(np.int32)
    _, gp, gq, _ = kiln_grads(tmp_path, expr, (4, 6), w, t)
    eps = 1e-2
    for name, g, (i, j) in [("p", gp, (0, 0)), ("p", gp, (3, 5)),
                            ("q", gq, (1, 3))]:
        vals = []
        for s in (+1, -1):
            w2 = {k: v.copy() for k, v in w.items()}
            w2[name][i, j] += s * eps
            vals.append(float(kiln_grads(tmp_path, expr, (4, 6), w2, t)[0]))
        fd = (vals[0] - vals[1]) / (2 * eps)
        assert abs(fd - g[i, j]) <= 2e-3, (name, i, j, fd, g[i, j])


def test_mlp_on_sequences(tmp_path):
    """A [B, T, D] input through linear layers: weight gradients sum over the
    broadcast batch; everything against PyTorch autograd."""
    src = tmp_path / "mlp.kiln"
    src.write_text("""
model mlp(D = 8, H = 16, K = 5) {
  dim B, T
  param l1 = linear(D, H)
  param l2 = linear(H, K)
  param unused: f32[3] = ones()
  fn loss(x: f32[B, T, D], y: i32[B, T]) -> f32 {
    h = tanh(l1(x))
    return cross_entropy(l2(h * sigmoid(h) - exp(-h) / (h * h + 1.0)), y)
  }
}
""")
    rng = np.random.default_rng(3)
    w = {"l1.weight": 0.3 * rng.standard_normal((16, 8)),
         "l1.bias": 0.1 * rng.standard_normal(16),
         "l2.weight": 0.3 * rng.standard_normal((5, 16)),
         "l2.bias": 0.1 * rng.standard_normal(5), "unused": np.ones(3)}
    w = {k: v.astype(np.float32) for k, v in w.items()}
    ws = tmp_path / "w.safetensors"
    write_safetensors(ws, w)
    art = tmp_path / "mlp.kart"
    subprocess.run([KILN, "compile", src, "--grad=loss", f"--weights={ws}",
                    "-o", art], check=True)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    y = rng.integers(0, 5, (2, 3)).astype(np.int32)
    y[1, 2] = -100  # ignored position
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    outs = [tmp_path / f"o{i}.npy" for i in range(6)]
    subprocess.run([KILN, "run", art, "--function=loss_grad",
                    f"--input=x=@{tmp_path / 'x.npy'}",
                    f"--input=y=@{tmp_path / 'y.npy'}",
                    *[f"--output=@{o}" for o in outs]], check=True)
    got = [np.load(o) for o in outs]
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in w.items()}
    h = torch.tanh(torch.as_tensor(x, dtype=torch.float64) @ t["l1.weight"].T
                   + t["l1.bias"])
    z = (h * torch.sigmoid(h) - torch.exp(-h) / (h * h + 1)) @ \
        t["l2.weight"].T + t["l2.bias"]
    loss = torch.nn.functional.cross_entropy(
        z.reshape(-1, 5), torch.as_tensor(y, dtype=torch.long).reshape(-1),
        ignore_index=-100)
    loss.backward()
    assert abs(float(got[0]) - float(loss)) <= 1e-5
    for g, name in zip(got[1:], ["l1.weight", "l1.bias", "l2.weight",
                                 "l2.bias"]):
        assert np.max(np.abs(g - t[name].grad.numpy())) <= 1e-5, name
    assert not got[5].any()  # a parameter the loss does not use


def test_missing_rule_is_a_clear_error(tmp_path):
    src = tmp_path / "m.kiln"
    src.write_text("""
model m() {
  dim B
  param w: f32[4, 4] = normal(0.5)
  fn loss(t: i32[4]) -> f32 {
    return cross_entropy(maximum(w, 0.0), t)
  }
}
""")
    r = subprocess.run([KILN, "compile", src, "--grad=loss"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "m.kiln:6:33: error: kiln-autodiff: no gradient rule for " \
           "'kiln.max' yet; the loss depends on it" in r.stderr
    r = subprocess.run([KILN, "compile", src, "--grad=forward"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "the model has no function 'forward' to differentiate; it has: " \
        "loss" in r.stderr
