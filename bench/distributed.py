"""Data-parallel training on this machine: 2 ranks x 1 thread beside one
process x 2 threads, the same global batch; writes docs/distributed-bench.md.

    /usr/bin/python3 bench/distributed.py [--steps 40] [--repeat 3]

The model is the demo's character-level GPT-2 (4 layers, 128 wide) on
tinyshakespeare, --seq=64, global batch 16, AdamW. Step times are the
medians of the step_ms kiln train writes to its metrics file (rank 0's:
every step waits for the slowest rank), after 5 warm-up steps, so the
compilation is not counted; each configuration's figure is the median of
--repeat runs. Configurations:

- one process, 2 threads, --batch=16 (the baseline);
- one process, 1 thread, --batch=8 (one rank's share of the work: the
  ideal 2-rank step is this step, plus communication);
- mpirun -np 2, 1 thread each, --batch=16 (the data-parallel run, equal
  to one process with --batch=8 --accumulate=2, bit for bit), and the
  same with --no-overlap (each micro-batch's gradients reduced after its
  backward pass instead of bucket by bucket during it);
- the same with --accumulate=4 (global 16 x 4), beside one process with
  --batch=16 --accumulate=4: with accumulation each micro-batch's
  all-reduce runs while the next micro-batch computes.

- 2 ranks with --zero=1 and --zero=2 (16 and 16 x 4): the optimizer
  moments (and with 2 the accumulated gradients) sharded; the same
  weights, other collectives (a reduce-scatter, then an all-gather of the
  updated weights).

Optimizer-state memory per rank: the bytes of AdamW moments each rank
holds (kiln.Trainer.optimizer_state_bytes, every rank reporting) with
ZeRO-1 at N = 1, 2 and 3 ranks, beside one process's.

Scaling efficiency = (one rank's share step time) / (2-rank step time).
The communication is rank 0's wait for the reductions per step
(allreduce_ms in the metrics), which includes any time it idles for the
slower rank. With --no-overlap nothing hides the reduction of a step's only
micro-batch, so that wait is the whole of it; the share hidden behind the
backward pass = 1 - wait(overlap) / wait(--no-overlap). With 4
micro-batches the reductions also run while the next micro-batch computes.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from performance import data_file  # bench/performance.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
KILN = ROOT / "build" / "bin" / "kiln"
MODEL = ["-D", "n_layer=4", "-D", "n_embd=128", "-D", "n_head=4",
         "-D", "n_positions=64"]
WARMUP = 5


def env():
    e = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
             OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    e.pop("OMP_NUM_THREADS", None)
    return e


MEMORY_SCRIPT = r'''
import json, sys
import kiln
comm = kiln.mpi()
defines = json.loads(sys.argv[2])
model = kiln.compile(sys.argv[1], defines=defines, grad="loss", threads=1)
t = kiln.Trainer(model, kiln.AdamW(), communicator=comm, zero=1)
with open(f"{sys.argv[3]}.{comm.rank}.json", "w") as f:
    json.dump({"rank": comm.rank, "bytes": t.optimizer_state_bytes,
               "shard": t.shard_range}, f)
'''


def optimizer_memory(tmp, ranks):
    """Every rank's optimizer-state bytes with ZeRO-1 on `ranks` ranks."""
    script = Path(tmp) / "memory.py"
    script.write_text(MEMORY_SCRIPT)
    # The trained model: kiln train's character tokenizer gives
    # tinyshakespeare's 65 symbols.
    defines = {MODEL[i + 1].split("=")[0]: int(MODEL[i + 1].split("=")[1])
               for i in range(0, len(MODEL), 2)}
    defines["vocab_size"] = 65
    e = env()
    e["PYTHONPATH"] = str(ROOT / "build" / "python")
    prefix = Path(tmp) / f"memory-{ranks}"
    subprocess.run(
        [shutil.which("mpirun"), "--oversubscribe", "-np", str(ranks),
         "/usr/bin/python3", str(script), str(ROOT / "examples" / "gpt2.kiln"),
         json.dumps(defines), str(prefix)], check=True, env=e,
        capture_output=True)
    return [json.load(open(f"{prefix}.{r}.json"))["bytes"]
            for r in range(ranks)]


def run(tmp, name, ranks, threads, batch, accumulate, steps, *extra):
    metrics = Path(tmp) / f"{name}.jsonl"
    cmd = [str(KILN), "train", str(ROOT / "examples" / "gpt2.kiln"), *MODEL,
           f"--data={data_file('tinyshakespeare.txt')}", f"--steps={steps}",
           f"--batch={batch}", f"--accumulate={accumulate}", "--seq=64",
           "--lr=3e-3", f"--threads={threads}", "--eval-fraction=0",
           f"--metrics={metrics}", "-o", str(Path(tmp) / f"{name}.kart"),
           "--quiet", *extra]
    if ranks > 1:
        cmd = [shutil.which("mpirun"), "--oversubscribe", "-np", str(ranks),
               *cmd]
    subprocess.run(cmd, check=True, env=env(), capture_output=True)
    rows = [json.loads(line) for line in open(metrics)][WARMUP:]
    step = statistics.median(r["step_ms"] for r in rows)
    wait = statistics.median(r.get("allreduce_ms", 0.0) for r in rows)
    return step, wait


def median_of(repeat, *args):
    runs = [run(*args) for _ in range(repeat)]
    return (statistics.median(r[0] for r in runs),
            statistics.median(r[1] for r in runs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" /
                                         "distributed-bench.md"))
    a = ap.parse_args()
    if not shutil.which("mpirun"):
        sys.exit("bench/distributed.py: no mpirun (scripts/install-deps.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        def r(name, ranks, threads, batch, accumulate, *extra):
            return median_of(a.repeat, tmp, name, ranks, threads, batch,
                             accumulate, a.steps, *extra)
        one2, _ = r("one-2t", 1, 2, 16, 1)
        share, _ = r("share-1t", 1, 1, 8, 1)
        dp, dpWait = r("dp", 2, 1, 16, 1)
        dpNo, dpNoWait = r("dp-no-overlap", 2, 1, 16, 1, "--no-overlap")
        one2acc, _ = r("one-2t-acc", 1, 2, 16, 4)
        dpacc, dpaccWait = r("dp-acc", 2, 1, 16, 4)
        z1, z1Wait = r("z1", 2, 1, 16, 1, "--zero=1")
        z2acc, z2accWait = r("z2-acc", 2, 1, 16, 4, "--zero=2")
        memory = {n: optimizer_memory(tmp, n) for n in (1, 2, 3)}
    tokens = 16 * 64
    whole = memory[1][0]
    mib = lambda b: f"{b / 2**20:.2f}"
    memoryRows = [
        f"| {n} | " + ", ".join(mib(b) for b in memory[n]) +
        f" | {mib(whole / n)} | {max(memory[n]) / whole:.1%} |"
        for n in (1, 2, 3)]
    hidden = max(0.0, 1 - dpWait / dpNoWait) if dpNoWait > 0 else 0.0
    lines = [
        "# Data-parallel training on this machine",
        "",
        "Written by `bench/distributed.py` (its docstring says how). The "
        "demo's GPT-2 (4 layers, 128 wide, 0.8M parameters), --seq=64, "
        f"global batch 16, AdamW; medians of {a.repeat} runs of "
        f"{a.steps} steps (first {WARMUP} skipped). 2 cores.",
        "",
        "| run | step ms | tokens/s | all-reduce wait ms |",
        "|---|---:|---:|---:|",
        f"| 1 process x 2 threads, batch 16 | {one2:.1f} | "
        f"{tokens / one2 * 1000:.0f} | - |",
        f"| 1 process x 1 thread, batch 8 (one rank's share) | {share:.1f} | "
        f"{tokens / 2 / share * 1000:.0f} | - |",
        f"| 2 ranks x 1 thread, batch 16 | {dp:.1f} | "
        f"{tokens / dp * 1000:.0f} | {dpWait:.2f} |",
        f"| 2 ranks x 1 thread, batch 16, --no-overlap | {dpNo:.1f} | "
        f"{tokens / dpNo * 1000:.0f} | {dpNoWait:.2f} |",
        f"| 1 process x 2 threads, batch 16 x 4 micro-batches | "
        f"{one2acc:.1f} | {4 * tokens / one2acc * 1000:.0f} | - |",
        f"| 2 ranks x 1 thread, batch 16 x 4 micro-batches | {dpacc:.1f} | "
        f"{4 * tokens / dpacc * 1000:.0f} | {dpaccWait:.2f} |",
        f"| 2 ranks, ZeRO-1, batch 16 | {z1:.1f} | "
        f"{tokens / z1 * 1000:.0f} | {z1Wait:.2f} |",
        f"| 2 ranks, ZeRO-2, batch 16 x 4 micro-batches | {z2acc:.1f} | "
        f"{4 * tokens / z2acc * 1000:.0f} | {z2accWait:.2f} |",
        "",
        "Optimizer state (AdamW's two moments) per rank with ZeRO-1:",
        "",
        "| ranks | MiB on each rank | 1/N of one process | largest rank / "
        "one process |",
        "|---:|---|---:|---:|",
        *memoryRows,
        "",
        "Shards end at the gradient norm's 65536-element chunks (so the "
        "ranks' partial sums add up to one process's norm bit for bit), "
        "which is the rounding here: 256 KiB per moment and rank at most.",
        "",
        f"- 2 ranks x 1 thread vs 1 process x 2 threads: "
        f"{one2 / dp:.2f}x the speed (batch 16), {one2acc / dpacc:.2f}x "
        "(16 x 4).",
        f"- Scaling efficiency (one rank's share / the 2-rank step): "
        f"{share / dp:.0%}.",
        f"- Reductions: rank 0 waits {dpNoWait:.2f} ms per step when they "
        f"start after the backward pass (--no-overlap, {dpNoWait / dpNo:.1%}"
        f" of the step) and {dpWait:.2f} ms when each bucket starts as the "
        f"backward pass computes it: {hidden:.0%} of the communication "
        "hidden behind the backward pass. With 4 micro-batches it waits "
        f"{dpaccWait:.2f} ms for 4 reductions. The wait also holds the time "
        "rank 0 idles for the slower rank (the ranks share 2 cores with "
        "everything else), so the hidden share is a lower bound.",
        "",
    ]
    Path(a.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
