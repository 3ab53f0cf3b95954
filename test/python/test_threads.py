"""Calls from several threads at once (Python releases the GIL): the same
model or different models, forward or training, give exactly the results
of the same calls made one after another, and never corrupt memory."""
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from kiln_cli import BUILD, EXAMPLES

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402

TINY = dict(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=65)


def inputs(n, seed=0):
    """Token batches of varied shapes, so concurrent calls bind different
    sizes (a shared arena or shape table would mix them up)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 65, size=(int(rng.integers(1, 4)),
                                      int(rng.integers(1, 64))),
                         dtype=np.int32) for _ in range(n)]


@pytest.mark.parametrize("models", [1, 4])
def test_concurrent_forward_equals_sequential(models):
    xs = inputs(200)
    ms = [kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY, seed=0)
          for _ in range(models)]
    want = [ms[0].forward(tokens=x) for x in xs]
    for _ in range(2):  # the second round runs on prepacked weights
        with ThreadPoolExecutor(4) as ex:
            got = list(ex.map(lambda i: ms[i % models].forward(tokens=xs[i]),
                              range(len(xs))))
        for i, (w, g) in enumerate(zip(want, got)):
            assert w.shape == g.shape and np.array_equal(w, g), i


def test_concurrent_loss_and_gradients_equal_sequential():
    m = kiln.compile(EXAMPLES / "gpt2.kiln", defines=dict(TINY, resid_pdrop=0,
                                                          embd_pdrop=0),
                     grad="loss", seed=1)
    xs = inputs(24, seed=3)
    batches = [dict(tokens=x[:, :-1], targets=x[:, 1:]) for x in xs
               if x.shape[1] > 1]
    want = [m.run("loss_grad", **b) for b in batches]
    with ThreadPoolExecutor(3) as ex:
        got = list(ex.map(lambda b: m.run("loss_grad", **b), batches))
    for w, g in zip(want, got):
        assert all(np.array_equal(a, b) for a, b in zip(w, g))


def test_forward_while_another_thread_trains():
    """A forward call never sees half-updated weights: every result equals
    the forward of the weights after some whole number of steps."""
    cfg = dict(TINY, resid_pdrop=0, embd_pdrop=0)
    x = inputs(1, seed=5)[0]
    rng = np.random.default_rng(9)
    batches = [dict(tokens=t[:, :-1], targets=t[:, 1:]) for t in
               (rng.integers(0, 65, size=(2, 17), dtype=np.int32)
                for _ in range(12))]

    def trainer(model):
        return kiln.Trainer(model, kiln.AdamW(lr=1e-2), total_steps=12)

    # Sequentially: the forward after each step.
    ref = kiln.compile(EXAMPLES / "gpt2.kiln", defines=cfg, grad="loss",
                       seed=2)
    t = trainer(ref)
    allowed = [ref.forward(tokens=x)]
    for b in batches:
        t.step(b)
        allowed.append(ref.forward(tokens=x))

    m = kiln.compile(EXAMPLES / "gpt2.kiln", defines=cfg, grad="loss", seed=2)
    t = trainer(m)
    seen = []

    def train():
        for b in batches:
            t.step(b)

    def serve():
        for _ in range(40):
            seen.append(m.forward(tokens=x))

    with ThreadPoolExecutor(2) as ex:
        futures = [ex.submit(train), ex.submit(serve)]
        for f in futures:
            f.result()
    assert np.array_equal(m.forward(tokens=x), allowed[-1])
    for y in seen:
        assert any(np.array_equal(y, a) for a in allowed)


def test_waiting_threads_sleep_on_busy_cores():
    """Unless the user chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT),
    the CLI and `import kiln` choose one (OpenMP reads it once, at load):
    OMP_WAIT_POLICY=PASSIVE when other work is running as they start, and
    GOMP_SPINCOUNT=300000, OpenMP's default, when the cores are free."""
    import os
    import subprocess
    import tempfile
    import time
    from kiln_cli import KILN

    names = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    clean = {k: v for k, v in os.environ.items() if k not in names}

    def policy_of_cli(extra):
        env = dict(clean, **extra)
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.Popen([KILN, "compile", EXAMPLES / "gpt2.kiln",
                                  "-D", "n_layer=2", "-o", f"{d}/g.kart"],
                                 env=env,
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            seen = (None, None)
            while p.poll() is None:  # the pid survives kiln's re-exec
                try:
                    environ = open(f"/proc/{p.pid}/environ", "rb").read()
                except OSError:
                    break
                vars = dict(v.split(b"=", 1) for v in environ.split(b"\0")
                            if b"=" in v)
                seen = tuple(vars.get(n.encode()) for n in names)
                if seen != (None, None):
                    break
                time.sleep(0.005)
            p.wait()
            return seen

    code = ("import os, kiln; print(os.environ.get('OMP_WAIT_POLICY'), "
            "os.environ.get('GOMP_SPINCOUNT'))")

    def policy_of_python(extra):
        env = dict(clean, PYTHONPATH=str(BUILD / "python"), **extra)
        return subprocess.run([sys.executable, "-c", code], env=env,
                              capture_output=True, text=True,
                              check=True).stdout.split()

    # Whether this machine is idle now is not the test's to choose: either
    # policy may come without other work, but nothing else.
    assert policy_of_cli({}) in ((b"PASSIVE", None), (None, b"300000"))
    assert policy_of_python({}) in (["PASSIVE", "None"], ["None", "300000"])
    # A busy process on every core: other work is runnable all the time.
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.2)
        assert policy_of_cli({}) == (b"PASSIVE", None)
        assert policy_of_python({}) == ["PASSIVE", "None"]
    finally:
        for b in busy:
            b.kill()
            b.wait()
    assert policy_of_cli({"OMP_WAIT_POLICY": "PASSIVE"}) == (b"PASSIVE", None)
    assert policy_of_cli({"GOMP_SPINCOUNT": "50"}) == (None, b"50")
    assert policy_of_python({"OMP_WAIT_POLICY": "ACTIVE"}) == ["ACTIVE",
                                                                "None"]


def test_thread_count_has_the_cli_limit():
    """threads=100000 reached OpenMP (which fails creating that many); the
    limit is the CLI's, 1 to kiln.MAX_THREADS (4096)."""
    m = kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY, seed=0)
    for bad in [0, -1, 100000, 2.5]:
        with pytest.raises(ValueError, match="from 1 to 4096"):
            m.threads = bad
    m.threads = 4096
    assert m.threads == 4096
    m.threads = None
    assert m.threads is None
