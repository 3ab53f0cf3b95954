"""Crash safety, kept so: `kiln train` killed with SIGKILL at 20 random
moments (many of them inside checkpoint writes: it checkpoints every step)
and resumed each time ends byte for byte where an uninterrupted run ends;
an interrupted `kiln compile -o` or `--save-weights` never leaves a file
that loads as something else — the file is the old one or the new one,
whole."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

from kiln_cli import BUILD, EXAMPLES, KILN, data_file

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402

TINY = ["-D", "n_layer=1", "-D", "n_embd=32", "-D", "n_head=2",
        "-D", "n_positions=16"]


def text(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text(data_file("tinyshakespeare.txt").read_text()[:20000])
    return p


def appeared(where, marker):
    """A trigger for killed_at: an entry whose name holds `marker` is in the
    directory `where` (a write in progress: its temporary file or
    directory)."""
    return lambda: where.is_dir() and any(marker in e
                                          for e in os.listdir(where))


def replaced(path):
    """A trigger for killed_at: `path` is no longer the file it is now (a
    write renamed its new version over it)."""
    before = path.stat().st_ino
    return lambda: path.exists() and path.stat().st_ino != before


def killed_at(cmd, delay, cwd, trigger=None):
    """Starts `cmd` in `cwd` and SIGKILLs it after `delay` seconds, or, with
    a `trigger`, `delay` seconds after the trigger first holds; returns the
    exit status."""
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd=cwd)
    if trigger:
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline:
            if trigger():
                break
            time.sleep(0.0005)
    try:
        p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
    return p.wait()


def test_twenty_kills_then_resume_end_like_an_uninterrupted_run(tmp_path):
    # The same command in two directories (the artifact records it): one
    # run whole, one killed and resumed.
    steps = 800  # about 7 ms each here: the kills spread over the run
    train = [KILN, "train", EXAMPLES / "gpt2.kiln", *TINY,
             f"--data={text(tmp_path)}", f"--steps={steps}", "--batch=4",
             "--seq=16", "--checkpoint-every=1", "--keep-checkpoints=2",
             "--seed=5", "--threads=1", "--checkpoint-dir=ck", "-o",
             "out.kart"]
    wd, cd = tmp_path / "whole", tmp_path / "cut"
    wd.mkdir()
    cd.mkdir()
    whole = subprocess.run([str(c) for c in train], capture_output=True,
                           text=True, timeout=600, cwd=wd)
    assert whole.returncode == 0, whole.stderr
    rng = random.Random(19)
    ck = cd / "ck"
    finished, kills = False, 0
    for kill in range(20):
        resume = ["--resume"] if (ck / "latest").exists() else []
        # Every other kill lands inside a checkpoint write: just after its
        # temporary directory appears.
        if kill % 2:
            status = killed_at(train + resume, rng.uniform(0, 0.004), cd,
                               appeared(ck, ".incomplete-"))
        else:
            status = killed_at(train + resume, rng.uniform(0.1, 0.6), cd)
        if status == 0:  # it reached the end before the kill
            finished = True
            break
        assert status == -signal.SIGKILL, f"kill {kill}: exit {status}"
        kills += 1
    assert kills >= 15, f"only {kills} kills landed before the run ended"
    if not finished:
        r = subprocess.run([str(c) for c in train + ["--resume"]],
                           capture_output=True, text=True, timeout=600, cwd=cd)
        assert r.returncode == 0, r.stderr
    # The last checkpoint's files byte for byte; the trained artifacts'
    # weights bit for bit (their histories differ by the --resume).
    last = f"step-{steps:08d}"
    for f in ("model.safetensors", "optimizer.safetensors"):
        assert (ck / last / f).read_bytes() == \
            (wd / "ck" / last / f).read_bytes(), f
    a, b = kiln.load(cd / "out.kart"), kiln.load(wd / "out.kart")
    pa, pb = a.parameters(), b.parameters()
    assert pa.keys() == pb.keys()
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    assert a.history[-1].replace(" --resume:", ":") == b.history[-1]
    assert not [p for p in ck.iterdir() if p.name.startswith(".incomplete")]


def test_an_interrupted_compile_or_weights_write_is_old_or_new(tmp_path):
    # Two different artifacts and weight files (seeds 1 and 2); each write of
    # the second over the first is killed at a random moment: the file is
    # then the first or the second, byte for byte.
    model = EXAMPLES / "gpt2.kiln"
    big = ["-D", "n_layer=4", "-D", "n_embd=256", "-D", "n_head=4",
           "-D", "vocab_size=2000", "-D", "n_positions=64"]
    # (The artifact records its command: the same file names everywhere.)
    def compile_cmd(seed):
        return [KILN, "compile", model, *big, f"--seed={seed}", "-o",
                "out.kart", "--save-weights=out.st"]
    versions = {}
    for seed in (1, 2):
        d = tmp_path / f"v{seed}"
        d.mkdir()
        took = time.monotonic()
        r = subprocess.run([str(c) for c in compile_cmd(seed)], cwd=d,
                           capture_output=True, text=True, timeout=300)
        took = time.monotonic() - took
        assert r.returncode == 0, r.stderr
        versions[seed] = ((d / "out.kart").read_bytes(),
                          (d / "out.st").read_bytes())
    assert versions[1][0] != versions[2][0]
    run = tmp_path / "run"
    run.mkdir()
    rng = random.Random(7)
    outcomes = set()
    for kill in range(10):
        art, weights = run / "out.kart", run / "out.st"
        art.write_bytes(versions[1][0])
        weights.write_bytes(versions[1][1])
        # The weights are written first, then the artifact. A third of the
        # kills at a random moment; a third while the weights are being
        # written (both files then old); a third just after the new weights
        # are renamed into place (the weights then new), so that both
        # outcomes come up whatever this machine's speed.
        if kill % 3 == 0:
            killed_at(compile_cmd(2), rng.uniform(0.3, 1.1) * took, run)
        elif kill % 3 == 1:
            killed_at(compile_cmd(2), 0, run, appeared(run, ".tmp-"))
        else:
            killed_at(compile_cmd(2), rng.uniform(0, 0.005), run,
                      replaced(weights))
        a, w = art.read_bytes(), weights.read_bytes()
        assert a in (versions[1][0], versions[2][0]), f"kill {kill}: artifact"
        assert w in (versions[1][1], versions[2][1]), f"kill {kill}: weights"
        outcomes.add((a == versions[2][0], w == versions[2][1]))
        # A killed write may leave its temporary file (NAME.tmp-XXXXXX),
        # never anything under the real name.
        for p in run.iterdir():
            if p.name.startswith(("out.kart.", "out.st.")):
                assert ".tmp-" in p.name, p.name
                os.unlink(p)
    # Kills fell both before and after a write.
    assert (False, False) in outcomes and \
        any(w for _, w in outcomes), outcomes
