"""kiln.quantize / kiln.dequantize against independent references.

NF4: a reference of bitsandbytes' algorithm written here from its
description (absmax per block of the flattened tensor, x times the f32
reciprocal, the 15 decision thresholds, two codes a byte high nibble
first; double quantization with the mean subtracted and bitsandbytes'
dynamic map, built with torch as bitsandbytes builds it and searched as its
CUDA kernel searches) — kiln's bytes must equal it exactly. int8 and int4
against NumPy formulations of the documented rules. Bad inputs raise
ValueError naming the tensor or field.
"""
import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kiln_cli import BUILD

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402

NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
    0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], np.float32)
# bitsandbytes' dQuantizeNF4 decision values (its tree, flattened).
THRESHOLDS = np.array([
    -0.8480964004993439, -0.6106329262256622, -0.4599952697753906,
    -0.33967943489551544, -0.23460740596055984, -0.13791173323988914,
    -0.045525018125772476, 0.03979014977812767, 0.1202552504837513,
    0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
    0.5016634166240692, 0.6427869200706482, 0.8614784181118011], np.float32)


DYNAMIC_MAP = """
import sys, torch
data = []
for i in range(7):
    boundaries = torch.linspace(0.1, 1, 2 ** i + 1)
    means = (boundaries[:-1] + boundaries[1:]) / 2.0
    data += ((10 ** (-6 + i)) * means).tolist()
    data += (-(10 ** (-6 + i)) * means).tolist()
data += [0, 1.0]
data.sort()
sys.stdout.buffer.write(torch.Tensor(data).numpy().tobytes())
"""


@functools.lru_cache(None)
def dynamic_map():
    """bitsandbytes' create_dynamic_map(signed=True), built with torch as
    bitsandbytes builds it. torch's float32 linspace rounds differently per
    CPU kernel, so it runs where torch picks its AVX2 kernels, x86-64's
    default (and the map kiln writes)."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2")
    out = subprocess.run([sys.executable, "-c", DYNAMIC_MAP], env=env,
                         check=True, capture_output=True).stdout
    return np.frombuffer(out, np.float32)


def search(code, x):
    """bitsandbytes' dQuantize<0>: binary search from entry 127, then the
    nearer neighbour by the f32 midpoint."""
    f = np.float32
    pivot, upper_pivot, lower_pivot = 127, 255, 0
    lower, upper = f(-1), f(1)
    val = code[pivot]
    i = 64
    while i > 0:
        if x > val:
            lower_pivot, lower, pivot = pivot, val, pivot + i
        else:
            upper_pivot, upper, pivot = pivot, val, pivot - i
        val = code[pivot]
        i >>= 1
    if upper_pivot == 255:
        upper = code[upper_pivot]
    if lower_pivot == 0:
        lower = code[lower_pivot]
    if x > val:
        return upper_pivot if x > f((upper + val) * f(0.5)) else pivot
    return lower_pivot if x < f((lower + val) * f(0.5)) else pivot


def nf4_reference(w, block=64, nested=True):
    flat = w.astype(np.float32).ravel()
    n = flat.size
    blocks = -(-n // block)
    padded = np.zeros(blocks * block, np.float32)
    padded[:n] = flat
    absmax = np.abs(padded.reshape(blocks, block)).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.float32(1.0) / absmax
        x = (padded.reshape(blocks, block) * r[:, None]).ravel()
    codes = np.searchsorted(THRESHOLDS, x, side="left").astype(np.uint8)
    codes[np.isnan(x)] = 0
    if n % 2 == 0:
        codes = codes[:n]
    else:
        codes = codes[:n + 1]
    packed = ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8)
    out = {"weight": packed.reshape(-1, 1), "weight.quant_map": NF4}
    state = {"quant_type": "nf4", "blocksize": block, "dtype": "float32",
             "shape": list(w.shape)}
    if not nested:
        out["weight.absmax"] = absmax
    else:
        offset = np.float32(absmax.astype(np.float64).mean())
        centred = (absmax - offset).astype(np.float32)
        code = dynamic_map()
        groups = -(-blocks // 256)
        nested_absmax = np.zeros(groups, np.float32)
        q = np.zeros(blocks, np.uint8)
        for g in range(groups):
            part = centred[g * 256:(g + 1) * 256]
            m = np.abs(part).max()
            nested_absmax[g] = m
            with np.errstate(divide="ignore"):
                rg = np.float32(1.0) / m
            with np.errstate(invalid="ignore"):
                for j, v in enumerate(part):
                    q[g * 256 + j] = search(code, np.float32(v * rg))
        out["weight.absmax"] = q
        out["weight.nested_absmax"] = nested_absmax
        out["weight.nested_quant_map"] = code
        state.update(nested_blocksize=256, nested_dtype="float32",
                     nested_offset=float(offset))
    out["weight.quant_state.bitsandbytes__nf4"] = np.frombuffer(
        json.dumps(state).encode(), np.uint8)
    return out


def assert_same(got, want):
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert np.array_equal(got[k], want[k]), k


RNG = np.random.default_rng(7)


@pytest.mark.parametrize("shape,block,nested", [
    ((256, 192), 64, True),     # 768 blocks: three nested groups
    ((7, 9), 64, True),         # a partial block and an odd count
    ((3, 100), 128, False),
    ((64, 64), 4096, True),
])
def test_nf4_bytes_equal_the_reference(shape, block, nested):
    w = (RNG.standard_normal(shape) * 0.02).astype(np.float32)
    if w.size >= 2 * block:
        w.ravel()[:block] = 0  # an all-zero block: codes of NaN
    spec = f"nf4:block={block},double={'true' if nested else 'false'}"
    got = kiln.quantize(w, spec)
    assert_same(got, nf4_reference(w, block, nested))


def test_dynamic_map_is_bitsandbytes():
    got = kiln.quantize(np.ones((4, 64), np.float32), "nf4")
    assert np.array_equal(got["weight.nested_quant_map"], dynamic_map())


def test_nf4_dequantizes_as_bitsandbytes():
    w = (RNG.standard_normal((32, 96)) * 0.1).astype(np.float32)
    for nested in (True, False):
        t = kiln.quantize(w, f"nf4:double={str(nested).lower()}",
                          name="h.0.mlp.c_fc.weight")
        back = kiln.dequantize(t, "h.0.mlp.c_fc.weight")
        p = "h.0.mlp.c_fc.weight"
        packed = t[p].ravel()
        codes = np.stack([packed >> 4, packed & 15], 1).ravel()[:w.size]
        if nested:
            state = json.loads(bytes(t[p + ".quant_state.bitsandbytes__nf4"]))
            absmax = (t[p + ".nested_quant_map"][t[p + ".absmax"]] *
                      np.repeat(t[p + ".nested_absmax"], 256)[
                          :t[p + ".absmax"].size] +
                      np.float32(state["nested_offset"])).astype(np.float32)
        else:
            absmax = t[p + ".absmax"]
        want = NF4[codes] * np.repeat(absmax, 64)[:w.size]
        np.testing.assert_array_equal(back.ravel(), want)
        assert back.shape == w.shape
        # NF4's error on normal weights: the level gaps, at most ~0.16 x absmax.
        assert np.abs(back - w).max() <= 0.17 * np.abs(w).max()


def test_a_stored_map_is_the_one_used():
    """A file's own 8-bit map decodes it (bitsandbytes' map differs in the
    last bits between torch's CPU kernels)."""
    w = (RNG.standard_normal((16, 64))).astype(np.float32)
    t = kiln.quantize(w, "nf4")
    t["weight.nested_quant_map"] = (t["weight.nested_quant_map"] *
                                    np.float32(0.999)).astype(np.float32)
    state = json.loads(bytes(t["weight.quant_state.bitsandbytes__nf4"]))
    absmax = (t["weight.nested_quant_map"][t["weight.absmax"]] *
              t["weight.nested_absmax"][0] +
              np.float32(state["nested_offset"])).astype(np.float32)
    packed = t["weight"].ravel()
    codes = np.stack([packed >> 4, packed & 15], 1).ravel()
    np.testing.assert_array_equal(
        kiln.dequantize(t).ravel(), NF4[codes] * np.repeat(absmax, 64))


def test_int8_per_channel():
    w = (RNG.standard_normal((12, 50)) * 0.5).astype(np.float32)
    w[3] = 0
    t = kiln.quantize(w, "int8", name="fc.weight")
    scale = np.abs(w).max(axis=1) / np.float32(127)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(scale[:, None] > 0, np.rint(w / scale[:, None]), 0)
    np.testing.assert_array_equal(t["fc.weight.scale"], scale)
    np.testing.assert_array_equal(t["fc.weight"],
                                  np.clip(q, -127, 127).astype(np.int8))
    back = kiln.dequantize(t, "fc.weight")
    np.testing.assert_array_equal(back, t["fc.weight"] * scale[:, None])
    assert np.abs(back - w).max() <= scale.max() / 2 * 1.0001


def test_int4_groups():
    w = (RNG.standard_normal((5, 70)) * 0.3).astype(np.float32)
    w[1, :14] = 0.25  # a constant group: the range still holds zero
    t = kiln.quantize(w, "int4:group=14")
    g = w.reshape(5, 5, 14)
    lo = np.minimum(g.min(axis=2), 0)
    hi = np.maximum(g.max(axis=2), 0)
    scale = ((hi - lo) / np.float32(15)).astype(np.float32)
    scale[scale <= 0] = 1
    zero = np.clip(np.rint(-lo / scale), 0, 15).astype(np.float32)
    q = np.clip(np.rint(g / scale[..., None]) + zero[..., None], 0,
                15).astype(np.uint8).reshape(5, 70)
    np.testing.assert_array_equal(t["weight.scale"], scale)
    np.testing.assert_array_equal(t["weight.zero_point"], zero)
    np.testing.assert_array_equal(t["weight"], (q[:, 0::2] << 4) | q[:, 1::2])
    state = json.loads(bytes(t["weight.quant_state.kiln__int4"]))
    assert state == {"quant_type": "int4", "group_size": 14, "shape": [5, 70]}
    back = kiln.dequantize(t)
    want = ((q.reshape(5, 5, 14) - zero[..., None]) *
            scale[..., None]).reshape(5, 70)
    np.testing.assert_array_equal(back, want)


@pytest.mark.parametrize("spec,match", [
    ("int3", "unknown quantization 'int3'"),
    ("int4:group=7", "must be even"),
    ("nf4:block=100", "power of two"),
    ("int8:group=4", "not an option of int8"),
])
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        kiln.quantize(np.ones((4, 64), np.float32), spec)


def test_bad_weights():
    with pytest.raises(ValueError, match="expected float32"):
        kiln.quantize(np.ones((4, 64), np.float64), "nf4")
    with pytest.raises(ValueError, match="quantizes matrices"):
        kiln.quantize(np.ones(64, np.float32), "int8")


def test_damaged_checkpoints_name_the_tensor():
    w = (RNG.standard_normal((8, 64))).astype(np.float32)
    good = kiln.quantize(w, "nf4", name="x.weight")

    def fails(change, match):
        t = dict(good)
        change(t)
        with pytest.raises(ValueError, match=match):
            kiln.dequantize(t, "x.weight")

    def drop(key):
        return lambda t: t.pop(key)

    def replace(key, value):
        return lambda t: t.__setitem__(key, value)

    fails(drop("x.weight.nested_absmax"),
          "'x.weight.nested_absmax' is missing")
    fails(replace("x.weight", good["x.weight"][:-1]),
          r"'x.weight' is u8\[255, 1\], expected u8\[256, 1\]")
    fails(replace("x.weight.absmax", good["x.weight.absmax"].astype(
        np.float32)), r"'x.weight.absmax' is f32\[8\], expected u8\[8\]")
    fails(replace("x.weight.quant_map", good["x.weight.quant_map"] * 2),
          "is not the NF4 levels")
    bad_map = good["x.weight.nested_quant_map"].copy()
    bad_map[3] = 1.5
    fails(replace("x.weight.nested_quant_map", bad_map),
          r"has 1.500000 at index 3; an 8-bit map holds values in \[-1, 1\]")
    fails(replace("x.weight.quant_state.bitsandbytes__nf4",
                  np.frombuffer(b'{"quant_type": "nf4", "blocksize": 64',
                                np.uint8)),
          "at byte 37")
    fails(replace("x.weight.quant_state.bitsandbytes__nf4",
                  np.frombuffer(json.dumps(
                      {"quant_type": "nf4", "blocksize": 64,
                       "dtype": "float16", "shape": [8, 64]}).encode(),
                      np.uint8)),
          '"dtype" is "float16"')
    fails(replace("x.weight.quant_state.bitsandbytes__nf4",
                  np.zeros(5000, np.uint8)), "at most 4096")
    with pytest.raises(ValueError, match="'y.weight' is missing"):
        kiln.dequantize(good, "y.weight")
