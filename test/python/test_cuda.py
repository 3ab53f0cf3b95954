"""The CUDA backend from Python: `target=` stores the nvcc-compiled kernels
in the artifact without changing what the CPU computes (docs/cuda.md)."""
import os
import shutil

import numpy as np
import pytest

from kiln_cli import EXAMPLES
from kiln_cli import kiln as kiln_cli

import kiln

TINY = {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 8,
        "vocab_size": 11}

NVCC = os.environ.get("KILN_NVCC") or (
    "/usr/local/cuda/bin/nvcc" if os.access("/usr/local/cuda/bin/nvcc", os.X_OK)
    else shutil.which("nvcc"))


@pytest.mark.skipif(not NVCC, reason="no nvcc (the CUDA toolkit) here")
def test_cpu_and_cuda_target_runs_on_the_cpu_as_before():
    cpu = kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY)
    both = kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY,
                        target="cpu,cuda")
    tokens = np.array([[1, 2, 3, 4]], dtype=np.int32)
    np.testing.assert_array_equal(cpu.forward(tokens=tokens),
                                  both.forward(tokens=tokens))


def test_bad_targets_are_refused():
    with pytest.raises(kiln.CompileError,
                       match='target="cpu,cpu": a target is cpu, cuda or '
                             'cpu,cuda'):
        kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY, target="cpu,cpu")


@pytest.mark.skipif(not NVCC, reason="no nvcc (the CUDA toolkit) here")
def test_a_gpu_without_a_driver_is_a_clear_error(tmp_path):
    model = kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY,
                         target="cpu,cuda")
    model.save(tmp_path / "m.kart")
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this machine has an NVIDIA driver: scripts/gpu-check.sh")
    with pytest.raises(RuntimeError,
                       match='device="cuda": no CUDA driver on this machine'):
        kiln.load(tmp_path / "m.kart", device="cuda")
    with pytest.raises(RuntimeError,
                       match='device="tpu": a device is cpu, cuda or cuda:N'):
        kiln.load(tmp_path / "m.kart", device="tpu")


def test_train_on_a_missing_gpu_says_so_before_compiling(tmp_path):
    """`kiln train MODEL.kiln --device=cuda` compiled the CUDA kernels
    (minutes of nvcc for a real model) before finding out that there is no
    driver. The device is now opened first: nvcc (here a stand-in that
    leaves a mark) never runs."""
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this machine has an NVIDIA driver: scripts/gpu-check.sh")
    mark = tmp_path / "nvcc-ran"
    nvcc = tmp_path / "nvcc"
    nvcc.write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    nvcc.chmod(0o755)
    text = tmp_path / "text.txt"
    text.write_text("hello world, " * 50)
    defines = [a for k, v in TINY.items() for a in ("-D", f"{k}={v}")]
    for device, message in [("cuda", "--device=cuda: no CUDA driver"),
                            ("cuda:1", "--device=cuda:1: no CUDA driver"),
                            ("tpu", "--device=tpu: a device is cpu, cuda or "
                                    "cuda:N")]:
        r = kiln_cli("train", EXAMPLES / "gpt2.kiln", *defines, f"--data={text}",
                 "--steps=1", "--batch=1", "--seq=4", f"--device={device}",
                 check=False, env={**os.environ, "KILN_NVCC": str(nvcc)})
        assert r.returncode == 1, r.stderr
        assert message in r.stderr, r.stderr
        assert not mark.exists(), f"--device={device}: nvcc ran"
