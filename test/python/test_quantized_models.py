"""Models compiled with quantized weights (kiln compile --quantize=).

A small GPT-2 is compiled with each format. Its quantized matmuls are
checked against the model whose f32 weights are the dequantized ones (the
same weights, computed densely: the float64 reference of kiln's own
numerics tests agrees with that model), against the reference kernels
(dequantize everything, then the naive matmul), forward and through the
input gradient. Its checkpoint round-trips in bitsandbytes' / kiln's tensor
names, and what cannot be quantized says why.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from kiln_cli import (BUILD, EXAMPLES, kiln as kiln_cli, read_safetensors,
                      write_safetensors)

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402

GPT = EXAMPLES / "gpt2.kiln"
SMALL = {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 96,
         "n_positions": 32}
RNG = np.random.default_rng(3)
TOKENS = RNG.integers(0, 96, size=(2, 16)).astype(np.int32)
TARGETS = RNG.integers(0, 96, size=(2, 16)).astype(np.int32)
SPECS = ["int8", "int4:group=32", "nf4", "nf4:double=false"]
MATRICES = ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
            "mlp.c_proj.weight"]


def token_quantized(x, levels=127):
    """x as kiln's int8 matmuls see it: each row's int8 codes (x times
    L/absmax in f32, rounded half to even) times its scale absmax/L; L is
    127 where oneDNN has VNNI (this machine), 63 otherwise."""
    x = np.asarray(x, np.float32)
    top = np.float32(levels)
    absmax = np.abs(x).max(axis=-1, keepdims=True)
    inv = np.where(absmax > 0, top / np.maximum(absmax, 1e-30),
                   0).astype(np.float32)
    q = np.clip(np.rint(x * inv), -levels, levels)
    return q.astype(np.float64) * (absmax / top).astype(np.float64)


def close_in_norm(got, want, tol):
    """The activations' int8 rounding moves every value a little: compare
    as vectors."""
    err = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)
    assert err <= tol, err


def dense_twin(model, tmp_path, **kw):
    """The f32 model whose weights are `model`'s dequantized values."""
    path = tmp_path / "dequantized.safetensors"
    write_safetensors(path, model.parameters())
    return kiln.compile(GPT, defines=SMALL, weights=path, **kw)


@pytest.mark.parametrize("spec", SPECS)
def test_forward_matches_the_dequantized_model(spec, tmp_path):
    q = kiln.compile(GPT, defines=SMALL, quantize=spec)
    f = dense_twin(q, tmp_path)
    got, want = q.forward(tokens=TOKENS), f.forward(tokens=TOKENS)
    if spec == "int8":  # the activations are quantized per token too
        close_in_norm(got, want, 2e-2)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ref = q.run("forward", kernels="reference", tokens=TOKENS)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # Only the linear layers' weights are quantized, and they decode to
    # values near the initial f32 ones.
    plain = kiln.compile(GPT, defines=SMALL).parameters()
    for name, w in q.parameters().items():
        quantized = any(name.endswith(m) for m in MATRICES)
        if quantized:
            step = np.abs(plain[name]).max() * (0.35 if "nf4" in spec
                                                else 0.1)
            assert np.abs(w - plain[name]).max() <= step, name
        else:
            np.testing.assert_array_equal(w, plain[name], err_msg=name)


@pytest.mark.parametrize("spec", SPECS)
def test_tied_embeddings_quantized_on_request(spec, tmp_path):
    """`*.weight` picks GPT-2's tied wte too (its rows dequantized as the
    embedding gathers them, the output projection through the quantized
    matmul) and passes over norms' weights and wpe (read by a slice)."""
    q = kiln.compile(GPT, defines=SMALL, quantize=spec,
                     quantize_params=["*.weight"])
    f = dense_twin(q, tmp_path)
    got, want = q.forward(tokens=TOKENS), f.forward(tokens=TOKENS)
    if spec == "int8":
        close_in_norm(got, want, 2e-2)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ref = q.run("forward", kernels="reference", tokens=TOKENS)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    params = kiln_cli("compile", GPT, *[f"-D{k}={v}" for k, v in
                                        SMALL.items()],
                      f"--quantize={spec}", "--quantize-params=*.weight",
                      "--emit=params").stdout
    storage = {m.group(1): m.group(2) for m in re.finditer(
        r"^(\S+)\s+\[.*?\]\s+\S+\s+[\d,]+\s+(\S+)", params, re.M)}
    assert storage["wte.weight"].startswith(spec.split(":")[0])
    assert storage["wpe.weight"] == "f32" == storage["h.0.ln_1.weight"]


@pytest.mark.parametrize("spec", ["int8", "nf4"])
def test_gradients_flow_through_quantized_weights(spec, tmp_path):
    q = kiln.compile(GPT, defines=SMALL, quantize=spec, grad="loss")
    f = dense_twin(q, tmp_path, grad="loss")
    got = q.run("loss_grad", tokens=TOKENS, targets=TARGETS)
    want = f.run("loss_grad", tokens=TOKENS, targets=TARGETS)
    ref = q.run("loss_grad", kernels="reference", tokens=TOKENS,
                targets=TARGETS)
    # The quantized weights are frozen: loss_grad has no gradient for them
    # (the dense twin has), but the gradient flows through them to the
    # layers below.
    names = ["loss"] + list(q.parameters())
    trained = [n for n in names
               if not any(n.endswith(m) for m in MATRICES)]
    assert len(got) == len(ref) == len(trained)
    want = [w for n, w in zip(names, want) if n in trained]
    for name, g, w, r in zip(trained, got, want, ref):
        if spec == "int8":  # forward through per-token int8 activations
            close_in_norm(g, w, 5e-2)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6,
                                       err_msg=name)
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("width", [72, 128])
def test_batches_of_one_row_and_odd_shapes(width):
    """Decoding's few rows (in registers for int4, and for NF4 when its
    blocks tile the rows: width 128; int8 quantizes each row of x), and
    weights whose rows are not a multiple of the tiles."""
    src = """
model m(K = 72) {
  dim B
  param fc = linear(K, 100)
  fn forward(x: f32[B, K]) -> f32[B, 100] { return fc(x) }
  fn back(x: f32[B, 100]) -> f32[B, K] { return x @ fc.weight }
}
"""
    for spec in SPECS:
        q = kiln.compile(src, defines={"K": width}, quantize=spec,
                         quantize_params=["fc.weight"])
        w = q.parameters()["fc.weight"]
        b = q.parameters()["fc.bias"]
        for rows in (1, 3, 4, 5):
            x = RNG.standard_normal((rows, width)).astype(np.float32)
            xs = token_quantized(x) if spec == "int8" else x
            np.testing.assert_allclose(q.forward(x=x), xs @ w.T + b,
                                       rtol=1e-5, atol=1e-5)
            y = RNG.standard_normal((rows, 100)).astype(np.float32)
            np.testing.assert_allclose(q.back(x=y), y @ w, rtol=1e-5,
                                       atol=1e-5)


INT8_WITHOUT_VNNI = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import kiln
src = '''
model m(K = 256) {
  dim B
  param fc = linear(K, 64, bias = false)
  fn forward(x: f32[B, K]) -> f32[B, 64] { return fc(x) }
}
'''
q = kiln.compile(src, quantize="int8", seed=1)
rng = np.random.default_rng(0)
# Full-range codes of one sign in each row: every pair of products is as
# large as it gets, which overflows 16-bit pair sums.
x = np.abs(rng.standard_normal((5, 256))).astype(np.float32) + 1
x[1] *= -1
w = q.parameters()["fc.weight"]
np.save(sys.argv[2], np.stack([q.forward(x=x),
                               q.run("forward", kernels="reference", x=x)]))
np.save(sys.argv[3], x)
np.save(sys.argv[4], w)
"""


@pytest.mark.parametrize("isa", ["AVX2", "SSE41"])
def test_int8_without_vnni_does_not_saturate(isa, tmp_path):
    """Without VNNI, oneDNN's integer GEMM sums pairs of u8 x s8 products in
    saturating 16 bits: kiln quantizes activations to 7 bits there."""
    out, xs, ws = (tmp_path / f for f in ("y.npy", "x.npy", "w.npy"))
    subprocess.run([sys.executable, "-c", INT8_WITHOUT_VNNI,
                    str(BUILD / "python"), out, xs, ws], check=True,
                   env={**os.environ, "DNNL_MAX_CPU_ISA": isa})
    got, ref = np.load(out)
    want = token_quantized(np.load(xs), levels=63) @ np.load(ws).T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_params_table_shows_storage_and_bytes():
    out = kiln_cli("compile", GPT, "-D", "n_layer=1", "--quantize=nf4",
                   "--emit=params").stdout
    row = next(r for r in out.splitlines()
               if r.startswith("h.0.mlp.c_fc.weight "))
    assert "nf4:block=64,double=true" in row
    n = 768 * 3072
    stored = n // 2 + n // 64 + 4 * (n // 64 // 256) + 4 * 256
    assert f"{stored:,}" in row
    wte = next(r for r in out.splitlines() if r.startswith("wte.weight "))
    assert " f32 " in wte and f"{50257 * 768 * 4:,}" in wte
    assert "bytes stored" in out.splitlines()[-1]


def test_checkpoints_round_trip(tmp_path):
    q = kiln.compile(GPT, defines=SMALL, quantize="nf4")
    path = tmp_path / "q.safetensors"
    q.save_weights(path)
    tensors = read_safetensors(path)
    name = "h.0.mlp.c_fc.weight"
    assert tensors[name].dtype == np.uint8
    assert tensors[name].shape == (64 * 256 // 2, 1)
    state = json.loads(bytes(tensors[name + ".quant_state.bitsandbytes__nf4"]))
    assert state["quant_type"] == "nf4" and state["shape"] == [256, 64]
    np.testing.assert_array_equal(kiln.dequantize(tensors, name),
                                  q.parameters()[name])
    # Read back quantized as it is, or dequantized into an f32 model.
    again = kiln.compile(GPT, defines=SMALL, quantize="nf4", weights=path)
    np.testing.assert_array_equal(again.forward(tokens=TOKENS),
                                  q.forward(tokens=TOKENS))
    dense = kiln.compile(GPT, defines=SMALL, weights=path)
    np.testing.assert_allclose(dense.forward(tokens=TOKENS),
                               q.forward(tokens=TOKENS), rtol=1e-5,
                               atol=1e-5)


def test_quantized_artifacts_are_smaller(tmp_path):
    sizes = {}
    for spec in ["", "int8", "nf4"]:
        out = tmp_path / f"m{spec.replace(':', '_')}.kart"
        args = ["compile", GPT, "-D", "n_layer=2", "-o", out]
        if spec:
            args.append(f"--quantize={spec}")
        kiln_cli(*args)
        sizes[spec] = out.stat().st_size
    # The embedding stays f32: the matmul weights are 14.2M of 39.0M values.
    matrices = 2 * 12 * 768 * 768 * 4  # bytes in f32
    assert sizes[""] - sizes["int8"] > 0.7 * matrices
    assert sizes[""] - sizes["nf4"] > 0.85 * matrices


@pytest.mark.parametrize("args,message", [
    (["--quantize=int5"],
     "--quantize=int5: unknown quantization 'int5' (expected int8, int4 or "
     "nf4)"),
    (["--quantize-params=h.*"],
     "--quantize-params selects what --quantize stores quantized"),
    (["--quantize=nf4", "--quantize-params=wpe.weight"],
     "'kiln.slice' reads parameter 'wpe.weight'; quantized weights feed "
     "matmuls (as the right-hand side) and embeddings only"),
    (["--quantize=nf4", "--quantize-params=h.0.ln_1.weight"],
     "parameter 'h.0.ln_1.weight' is 'tensor<768xf32>'; only f32 matrices that "
     "feed matmuls are quantized"),
    (["--quantize=int4:group=64", "--quantize-params=h.*.ln_1.*"],
     "no parameter the selection matches can be quantized"),
])
def test_bad_quantization_requests(args, message):
    r = kiln_cli("compile", GPT, "-D", "n_layer=1", "-o", "/dev/null", *args,
                 check=False)
    assert r.returncode != 0
    assert message in r.stderr


def test_quantized_weights_are_frozen(tmp_path):
    q = kiln.compile(GPT, defines=SMALL, quantize="int8")
    with pytest.raises(Exception, match="stored quantized .* and frozen"):
        q.load_weights(q.parameters())
    # Its own checkpoint loads (the codes are checked, not replaced); one
    # with other codes does not.
    path = tmp_path / "q.safetensors"
    q.save_weights(path)
    q.load_weights(path)
    t = read_safetensors(path)
    t["h.0.mlp.c_fc.weight.scale"] = t["h.0.mlp.c_fc.weight.scale"] * 2
    write_safetensors(path, t)
    with pytest.raises(Exception, match="'h.0.mlp.c_fc.weight.scale' "
                                        "differs from the model's"):
        q.load_weights(path)


def test_training_resumes_around_quantized_weights(tmp_path):
    """kiln train --quantize writes checkpoints whose quantized weights
    --resume reads back (they are frozen: checked, not replaced)."""
    data = tmp_path / "text.txt"
    data.write_text("to be or not to be, that is the question. " * 200)
    args = ["train", GPT, f"--data={data}", "-D", "n_layer=1", "-D",
            "n_embd=64", "-D", "n_head=2", "-D", "n_positions=32",
            "--batch=4", "--seq=16", "--quantize=nf4",
            f"--checkpoint-dir={tmp_path / 'ck'}", "--checkpoint-every=5",
            "-o", tmp_path / "m.kart"]
    kiln_cli(*args, "--steps=10", "--stop-after=5")
    r = kiln_cli(*args, "--steps=10", "--resume")
    assert "step 10/10" in r.stdout + r.stderr
