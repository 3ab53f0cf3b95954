"""Data-parallel `kiln train` under Open MPI's mpirun (docs/distributed.md):
N ranks give one process's weights bit for bit, a checkpoint resumes at
another N, and a rank that fails or dies ends the run on every rank."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from kiln_cli import BUILD, EXAMPLES, KILN, data_file

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402

MPIRUN = shutil.which("mpirun")
pytestmark = pytest.mark.skipif(
    MPIRUN is None, reason="no mpirun (scripts/install-deps.sh installs "
    "Open MPI)")

TINY = ["-D", "n_layer=1", "-D", "n_embd=32", "-D", "n_head=2",
        "-D", "n_positions=16", "-D", "resid_pdrop=0.1"]
# Containers often run as root, which mpirun refuses unless told. The
# ranks of a Python script import the kiln package this test imported.
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           PYTHONPATH=os.pathsep.join(
               [str(BUILD / "python")] +
               [p for p in [os.environ.get("PYTHONPATH")] if p]))


def text(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text(data_file("tinyshakespeare.txt").read_text()[:20000])
    return p


def train_args(tmp_path, *extra, defines=TINY):
    return [KILN, "train", str(EXAMPLES / "gpt2.kiln"), *defines,
            f"--data={text(tmp_path)}", "--seq=16", "--lr=0.003",
            "--seed=3", *extra]


def run(cmd, timeout=240, check=True):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                       timeout=timeout, env=ENV)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def mpirun(n, *cmd, **kw):
    return run([MPIRUN, "--oversubscribe", "-np", str(n), *cmd], **kw)


def losses(path):
    return [json.loads(line)["loss"] for line in open(path)]


def assert_same_weights(a, b):
    pa, pb = kiln.load(a).parameters(), kiln.load(b).parameters()
    assert pa.keys() == pb.keys()
    worst = max(float(np.max(np.abs(pa[k] - pb[k]))) for k in pa)
    assert worst == 0.0, f"largest weight difference {worst}"


def like_one_process(tmp_path, ranks, args, steps, accumulate, *extra):
    """mpirun -np `ranks` kiln train (each rank 2 rows of each micro-batch)
    beside one process accumulating their micro-batches: the same losses
    and weights. Returns the data-parallel run."""
    r = mpirun(ranks, *args(tmp_path, f"--steps={steps}",
                            f"--batch={2 * ranks}",
                            f"--accumulate={accumulate}", *extra,
                            "-o", tmp_path / "dp.kart",
                            f"--metrics={tmp_path / 'dp.jsonl'}"))
    run(args(tmp_path, f"--steps={steps}", "--batch=2",
             f"--accumulate={ranks * accumulate}", "--threads=1",
             "-o", tmp_path / "one.kart",
             f"--metrics={tmp_path / 'one.jsonl'}"))
    assert losses(tmp_path / "dp.jsonl") == losses(tmp_path / "one.jsonl")
    assert_same_weights(tmp_path / "dp.kart", tmp_path / "one.kart")
    return r


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_train_like_one_process_accumulating(tmp_path, ranks):
    # --batch is the global batch: N ranks of 2 rows each are one process
    # accumulating N micro-batches of 2 rows, bit for bit.
    r = like_one_process(tmp_path, ranks, train_args, 12, 1)
    assert f"data parallel on MPI: Open MPI" in r.stderr, r.stderr
    assert f"rank 0 of {ranks}" in r.stderr
    # Rank 0 alone reports: one closing line.
    assert r.stderr.count("kiln train: done") == 1, r.stderr


def test_a_checkpoint_resumes_at_another_rank_count(tmp_path):
    # 2 ranks for 5 steps, then 3 from their checkpoint: one process that
    # splits each step's 6 rows as 2 x 3, then (resumed) as 3 x 2.
    mpirun(2, *train_args(tmp_path, "--steps=10", "--batch=6",
                          "--stop-after=5", f"--checkpoint-dir={tmp_path / 'a'}"))
    r = mpirun(3, KILN, "train", "--resume",
               f"--checkpoint-dir={tmp_path / 'a'}", "-o", tmp_path / "a.kart")
    assert "resumed from" in r.stderr and "at step 5" in r.stderr
    run(train_args(tmp_path, "--steps=10", "--batch=3", "--accumulate=2",
                   "--threads=1", "--stop-after=5",
                   f"--checkpoint-dir={tmp_path / 'b'}"))
    run([KILN, "train", "--resume", f"--checkpoint-dir={tmp_path / 'b'}",
         "--batch=2", "--accumulate=3", "-o", tmp_path / "b.kart"])
    assert_same_weights(tmp_path / "a.kart", tmp_path / "b.kart")
    # Rows per step are what a resume must keep.
    r = run([KILN, "train", "--resume", f"--checkpoint-dir={tmp_path / 'b'}",
             "--batch=4"], check=False)
    assert r.returncode == 1
    assert "the checkpoint was made with batch=2, this run has batch=4" \
        in r.stderr, r.stderr


# One layer of width 160: its larger matrices (102400 and 76800 elements)
# span several of the gradient norm's 65536-element chunks, and with 2
# ranks ZeRO's shard boundary falls inside one (mlp.c_fc.weight).
WIDE = ["-D", "n_layer=1", "-D", "n_embd=160", "-D", "n_head=2",
        "-D", "n_positions=16", "-D", "resid_pdrop=0.1"]


def wide_args(tmp_path, *extra):
    return train_args(tmp_path, *extra, defines=WIDE)


@pytest.mark.parametrize("ranks,zero", [(2, 1), (3, 2)])
def test_zero_trains_like_one_process(tmp_path, ranks, zero):
    r = like_one_process(tmp_path, ranks, wide_args, 4, 2, f"--zero={zero}")
    assert f"ZeRO-{zero} (" in r.stderr and "of optimizer state on this " \
        "rank" in r.stderr, r.stderr


def test_reductions_start_inside_the_backward_pass(tmp_path):
    # The wide model's gradients make several buckets; by default most
    # start reducing while the backward pass runs, with --no-overlap none
    # do; the losses are the same.
    rows = {}
    for name, extra in (("on", []), ("off", ["--no-overlap"])):
        mpirun(2, *wide_args(tmp_path, "--steps=3", "--batch=4",
                             f"--metrics={tmp_path / name}.jsonl", "-o",
                             tmp_path / f"{name}.kart", *extra))
        rows[name] = [json.loads(line) for line in
                      open(tmp_path / f"{name}.jsonl")]
    assert [r["loss"] for r in rows["on"]] == [r["loss"] for r in rows["off"]]
    for r in rows["on"]:
        assert r["reductions"] > 2
        assert 0 < r["reductions_in_backward"] <= r["reductions"], r
    assert all(r["reductions_in_backward"] == 0 for r in rows["off"])


def test_a_zero_checkpoint_resumes_at_another_rank_count_and_stage(tmp_path):
    # ZeRO-1 on 2 ranks for 3 steps, then ZeRO-2 on 3 ranks from the
    # checkpoint (which rank 0 gathered whole), against the same without
    # ZeRO: the same checkpoint files, the same weights.
    for name, zero in (("a", ["--zero=1", "--zero=2"]), ("b", ["--zero=0", "--zero=0"])):
        ck = tmp_path / name
        mpirun(2, *wide_args(tmp_path, "--steps=6", "--batch=6",
                             "--stop-after=3", f"--checkpoint-dir={ck}",
                             *zero[:1]))
        mpirun(3, KILN, "train", "--resume", f"--checkpoint-dir={ck}",
               "-o", tmp_path / f"{name}.kart", *zero[1:])
    for f in ("model.safetensors", "optimizer.safetensors"):
        a = (tmp_path / "a" / "step-00000003" / f).read_bytes()
        assert a == (tmp_path / "b" / "step-00000003" / f).read_bytes(), f
    assert_same_weights(tmp_path / "a.kart", tmp_path / "b.kart")


def test_zero_alone_says_so(tmp_path):
    r = run(train_args(tmp_path, "--steps=1", "--batch=2", "--zero=1",
                       "-o", tmp_path / "alone.kart"))
    assert "--zero=1 with one rank: there is nothing to shard" in r.stderr
    r = run(train_args(tmp_path, "--steps=1", "--batch=2", "--zero=3",
                       "-o", tmp_path / "alone.kart"), check=False)
    assert r.returncode == 2 and "--zero" in r.stderr, r.stderr


def test_rank_0_compiles_and_sends_its_artifact(tmp_path):
    # Rank 1 is given a model path that does not exist: it compiles nothing
    # and trains rank 0's artifact, the same run as two ordinary ranks.
    args = train_args(tmp_path, "--steps=3", "--batch=4")[3:]
    model = EXAMPLES / "gpt2.kiln"
    run([MPIRUN, "--oversubscribe", "-np", "1", KILN, "train", model, *args,
         "-o", tmp_path / "a.kart", ":", "-np", "1", KILN, "train",
         tmp_path / "nowhere" / "gpt2.kiln", *args, "-o", tmp_path / "a.kart"])
    mpirun(2, KILN, "train", model, *args, "-o", tmp_path / "b.kart")
    assert_same_weights(tmp_path / "a.kart", tmp_path / "b.kart")
    # A model rank 0 cannot compile: its error, once; every rank ends.
    odd = ["-D", "n_embd=33", "-D", "n_head=2"]
    r = mpirun(2, *train_args(tmp_path, "--steps=3", "--batch=4",
                              defines=odd), check=False)
    assert r.returncode != 0
    assert r.stderr.count("not divisible by heads") == 1, r.stderr
    assert "rank 0 could not compile" in r.stderr, r.stderr


def test_data_parallel_alone_says_so(tmp_path):
    # --data-parallel outside mpirun: MPI starts as one rank, which trains
    # as one process would, with a warning.
    r = run(train_args(tmp_path, "--steps=2", "--batch=2", "--data-parallel",
                       "-o", tmp_path / "alone.kart"))
    assert "warning: --data-parallel with one rank: this process trains " \
        "alone" in r.stderr, r.stderr
    assert (tmp_path / "alone.kart").is_file()


def test_a_batch_that_does_not_split_is_refused(tmp_path):
    r = mpirun(3, *train_args(tmp_path, "--steps=2", "--batch=4"),
               check=False)
    assert r.returncode != 0
    assert "--batch=4 is the global batch; it must split evenly over the 3 " \
        "ranks" in r.stderr, r.stderr


def test_a_failing_rank_ends_the_run_on_every_rank(tmp_path):
    # Rank 1 cannot read its data while rank 0 waits for it in a collective.
    good = train_args(tmp_path, "--steps=50", "--batch=2")
    bad = [a if not a.startswith("--data=") else
           f"--data={tmp_path / 'missing.txt'}" for a in good]
    start = time.monotonic()
    r = run([MPIRUN, "--oversubscribe", "-np", "1", *good, ":",
             "-np", "1", *bad], timeout=120, check=False)
    assert r.returncode != 0
    assert "missing.txt" in r.stderr, r.stderr
    assert time.monotonic() - start < 60


def test_a_rank_that_dies_ends_the_run(tmp_path):
    # Rank 1 is killed mid-run (SIGKILL: no chance to say anything); rank 0
    # must not wait for it forever.
    long = train_args(tmp_path, "--steps=100000", "--batch=2")
    start = time.monotonic()
    r = run([MPIRUN, "--oversubscribe", "-np", "1", *long, ":",
             "-np", "1", "timeout", "-s", "KILL", "4", *long],
            timeout=120, check=False)
    assert r.returncode != 0
    assert time.monotonic() - start < 60, r.stderr


SCRIPT = r'''
import sys
import numpy as np
import kiln

comm = kiln.mpi()
N, r = comm.size, comm.rank
src = sys.argv[1]
defines = dict(n_layer=1, n_embd=32, n_head=2, n_positions=16, vocab_size=37,
               resid_pdrop=0.1)
dp = kiln.compile(src, defines=defines, grad="loss", threads=1)
one = kiln.compile(src, defines=defines, grad="loss", threads=1)
opt = lambda: kiln.AdamW(lr=3e-3, weight_decay=0.1)
tdp = kiln.Trainer(dp, opt(), total_steps=6, seed=4, communicator=comm)
tone = kiln.Trainer(one, opt(), total_steps=6, seed=4)
# ZeRO-2: this rank's shard of the moments and gradients, the same result.
zm = kiln.compile(src, defines=defines, grad="loss", threads=1)
tz = kiln.Trainer(zm, opt(), total_steps=6, seed=4, communicator=comm, zero=2)
first, end = tz.shard_range
assert tz.optimizer_state_bytes == (end - first) * 8, tz.shard_range
assert tz.optimizer_state_bytes < tone.optimizer_state_bytes
rng = np.random.default_rng(9)
for step in range(6):
    x = rng.integers(0, 37, size=(2 * N, 8), dtype=np.int32)
    y = rng.integers(0, 37, size=(2 * N, 8), dtype=np.int32)
    mine = {"tokens": x[2 * r:2 * r + 2], "targets": y[2 * r:2 * r + 2]}
    a = tdp.step(mine)
    b = tone.step([{"tokens": x[2 * k:2 * k + 2],
                    "targets": y[2 * k:2 * k + 2]} for k in range(N)])
    z = tz.step(mine)
    assert a == b == z, (step, a, b, z)
pa, pb, pz = dp.parameters(), one.parameters(), zm.parameters()
worst = max(float(np.max(np.abs(pa[k] - pb[k]))) for k in pa)
assert worst == 0.0, worst
worst = max(float(np.max(np.abs(pz[k] - pb[k]))) for k in pz)
assert worst == 0.0, worst
path = tdp.save_checkpoint(sys.argv[2])
comm.barrier()
print(f"rank {r} of {N}: {comm!r}; identical weights; checkpoint {path.name}")
'''


def test_the_python_trainer_on_mpi(tmp_path):
    script = tmp_path / "dp.py"
    script.write_text(SCRIPT)
    r = mpirun(2, "/usr/bin/python3", script, EXAMPLES / "gpt2.kiln",
               tmp_path / "ck")
    for rank in range(2):
        assert f"rank {rank} of 2: <kiln.Communicator MPI: Open MPI" \
            in r.stdout, r.stdout + r.stderr
    assert r.stdout.count("identical weights; checkpoint step-00000006") == 2
    # One checkpoint, as one process writes it.
    assert (tmp_path / "ck" / "latest").read_text().strip() == \
        "step-00000006"


def test_an_exception_on_one_rank_ends_the_python_run(tmp_path):
    # Rank 1 raises while rank 0 waits at a barrier: kiln.mpi()'s hook
    # prints the traceback and aborts every rank.
    script = tmp_path / "fail.py"
    script.write_text(
        "import kiln\n"
        "comm = kiln.mpi()\n"
        "if comm.rank == 1:\n"
        "    raise RuntimeError('rank 1 cannot go on')\n"
        "comm.barrier()\n"
        "print('rank', comm.rank, 'passed the barrier')\n")
    start = time.monotonic()
    r = mpirun(2, "/usr/bin/python3", script, timeout=120, check=False)
    assert r.returncode != 0
    assert "RuntimeError: rank 1 cannot go on" in r.stderr, r.stderr
    assert "passed the barrier" not in r.stdout
    assert time.monotonic() - start < 60
