"""Helpers for driving the kiln CLI from pytest: safetensors and .npy files
in, results out. Written against the file formats, not against kiln's code."""
import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("KILN_BUILD_DIR", ROOT / "build"))
KILN = str(BUILD / "bin" / "kiln")
EXAMPLES = ROOT / "examples"
# The data sets (stories260K, its tokenizer, tinyshakespeare) are not part of
# the repository: they are read from ../shared/data beside the checkout, or
# from $KILN_DATA (docs/data.md).
DATA = Path(os.environ.get("KILN_DATA", ROOT.parent / "shared" / "data"))


def data_file(name):
    """The path of a data file; fails the test, naming the file and where it
    was looked for, when it is absent."""
    path = DATA / name
    if not path.is_file():
        import pytest
        pytest.fail(f"{path} is missing: the tests read the data sets from "
                    f"../shared/data beside the checkout, or from $KILN_DATA "
                    f"(see docs/data.md)", pytrace=False)
    return path

_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32",
           np.dtype(np.int64): "I64", np.dtype(np.float64): "F64",
           np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8",
           np.dtype(np.float16): "F16"}


def bfloat16_bits(a):
    """The bfloat16 bit patterns (uint16) of a float array, rounded to
    nearest even as PyTorch rounds."""
    import torch
    t = torch.as_tensor(np.asarray(a, dtype=np.float32)).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16)


def write_safetensors(path, tensors, bf16=()):
    """Writes {name: ndarray} in the safetensors layout; the uint16 arrays
    named in `bf16` are written as BF16 bit patterns."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dtype = "BF16" if name in bf16 else _DTYPES[a.dtype]
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


_NP = {v: k for k, v in _DTYPES.items()}


def read_safetensors(path):
    """Reads a safetensors file into {name: ndarray}."""
    data = Path(path).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b],
                                  dtype=_NP[info["dtype"]]).reshape(
                                      info["shape"])
    return out


def kiln(*args, check=True, env=None):
    """Runs the kiln CLI; a crash (a signal) always fails the test, and with
    `check` so does a non-zero exit."""
    r = subprocess.run([KILN, *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=900)
    assert r.returncode >= 0, \
        f"kiln {' '.join(map(str, args))} crashed with signal {-r.returncode}"
    if check and r.returncode != 0:
        raise AssertionError(f"kiln {' '.join(map(str, args))} failed "
                             f"({r.returncode}):\n{r.stderr}")
    return r


def compile_model(tmp, model, defines=None, weights=None, seed=None):
    out = Path(tmp) / f"{Path(model).stem}.kart"
    args = ["compile", model, "-o", out]
    for k, v in (defines or {}).items():
        args += ["-D", f"{k}={v}"]
    if weights is not None:
        wpath = Path(tmp) / "weights.safetensors"
        write_safetensors(wpath, weights)
        args.append(f"--weights={wpath}")
    if seed is not None:
        args.append(f"--seed={seed}")
    kiln(*args)
    return out


def run(tmp, artifact, inputs, function="forward", outputs=1,
        reference_kernels=False):
    """Runs a function; `reference_kernels` selects the naive kernels that
    the oneDNN path is checked against."""
    args = ["run", artifact, f"--function={function}"]
    for name, a in inputs.items():
        p = Path(tmp) / f"in_{name}.npy"
        np.save(p, a)
        args.append(f"--input={name}=@{p}")
    outs = [Path(tmp) / f"out{i}.npy" for i in range(outputs)]
    args += [f"--output=@{p}" for p in outs]
    env = dict(os.environ,
               KILN_REFERENCE_KERNELS="1" if reference_kernels else "0")
    kiln(*args, env=env)
    return [np.load(p) for p in outs]
