"""kiln on a shared machine: training and generation with every core free,
and with one core taken by another busy process; writes docs/threads.md.

    /usr/bin/python3 bench/threads.py [--repeat 3] [--out docs/threads.md]

Five thread settings, each in the same run:

- kiln's default: one thread per core; unless the user chose a policy,
  kiln looks at the machine when it starts: waiting threads sleep at once
  (OMP_WAIT_POLICY=PASSIVE) when other work is running, and spin as long as
  OpenMP's default (GOMP_SPINCOUNT=300000) when the cores are free;
- short spins (GOMP_SPINCOUNT=1000) always;
- sleeping waits (OMP_WAIT_POLICY=PASSIVE): every wait sleeps at once, and
  every parallel region pays a wake-up;
- long spins: libgomp's own default (it spins up to 300,000 times before
  it sleeps; GOMP_SPINCOUNT=300000 reproduces it);
- --threads=1.

Workloads: 30 training steps of the demo's character-level GPT (4 layers,
128 wide, batch 16 x 64; the sum of the step times kiln train reports, so
compilation is not counted), 200 greedy tokens from stories260K and 64 from
a Llama of stories110M's shape (random weights, as bench/decoding.py writes
them; about a hundred parallel regions per token) — the decoding rates kiln
generate reports, tokens/s. Each figure is the median of --repeat runs.
The busy process is a Python loop that never sleeps. Data sets are read
from ../shared/data or $KILN_DATA.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from decoding import write_checkpoint  # bench/decoding.py
from performance import data_file  # bench/performance.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
KILN = ROOT / "build" / "bin" / "kiln"

SETTINGS = [
    ("kiln default (chosen at start)", {}, []),
    ("short spins (GOMP_SPINCOUNT=1000)", {"GOMP_SPINCOUNT": "1000"}, []),
    ("sleeping waits (OMP_WAIT_POLICY=PASSIVE)",
     {"OMP_WAIT_POLICY": "PASSIVE"}, []),
    ("long spins (libgomp's default)", {"GOMP_SPINCOUNT": "300000"}, []),
    ("--threads=1", {}, ["--threads=1"]),
]


def environment(extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                        "OMP_NUM_THREADS")}
    env.update(extra)
    return env


def train_seconds(d, env, flags):
    metrics = d / "m.jsonl"
    subprocess.run([KILN, "train", ROOT / "examples" / "gpt2.kiln",
                    f"--data={d / 'text.txt'}", "-D", "n_layer=4", "-D",
                    "n_embd=128", "-D", "n_head=4", "-D", "n_positions=64",
                    "--steps=30", "--batch=16", "--seq=64",
                    "--eval-fraction=0", f"--metrics={metrics}", "-o",
                    d / "t.kart", *flags], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return sum(r["step_ms"] for r in rows) / 1000


def decode_rate(d, env, flags, big=False):
    what = ([d / "big.kart", "--max-tokens=64", "--prompt-ids=1,306,4966,263"]
            if big else [d / "s.kart", "--max-tokens=200",
                         "--prompt=Once upon a time"])
    r = subprocess.run([KILN, "generate", *what, "--temperature=0", *flags],
                       env=env, check=True, text=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    m = re.search(r"decode ([0-9.]+) tokens/s", r.stderr)
    if not m:
        raise SystemExit(f"no decoding rate in: {r.stderr}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "threads.md")
    ap.add_argument("--from-json", action="store_true",
                    help="rewrite the page from docs/images/threads.json "
                    "without measuring")
    args = ap.parse_args()
    raw = args.out.parent / "images" / "threads.json"
    if args.from_json:
        res = json.loads(raw.read_text())
        args.repeat = res.get("repeat", args.repeat)
        report(args, res)
        return
    text = data_file("tinyshakespeare.txt").read_text()[:200000]
    if not KILN.exists():
        subprocess.run([ROOT / "scripts" / "build.sh"], check=True)
    res = dict(cores=os.cpu_count(), date=time.strftime("%Y-%m-%d"),
               repeat=args.repeat, results=[])
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "text.txt").write_text(text)
        subprocess.run([KILN, "compile", ROOT / "examples" / "llama.kiln",
                        f"--weights={data_file('stories260K.bin')}",
                        f"--tokenizer={data_file('tok512.bin')}", "-o",
                        d / "s.kart"], check=True)
        write_checkpoint(d / "big.bin")
        subprocess.run([KILN, "compile", ROOT / "examples" / "llama.kiln",
                        f"--weights={d / 'big.bin'}", "-o", d / "big.kart"],
                       check=True)
        for loaded in (False, True):
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]
                                    ) if loaded else None
            try:
                for name, extra, flags in SETTINGS:
                    env = environment(extra)
                    tr = statistics.median(train_seconds(d, env, flags)
                                           for _ in range(args.repeat))
                    ge = statistics.median(decode_rate(d, env, flags)
                                           for _ in range(args.repeat))
                    big = statistics.median(decode_rate(d, env, flags, True)
                                            for _ in range(args.repeat))
                    row = dict(loaded=loaded, setting=name, train_s=tr,
                               decode_tps=ge, decode_110m_tps=big)
                    print(row, flush=True)
                    res["results"].append(row)
            finally:
                if busy:
                    busy.kill()
                    busy.wait()
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(res, indent=1))
    report(args, res)


def report(args, res):
    def at(name, loaded):
        return next(r for r in res["results"]
                    if r["setting"] == name and r["loaded"] == loaded)
    L = ["# kiln on a shared machine\n",
         f"Generated by `bench/threads.py` on {res['date']}, "
         f"{res['cores']} cores. Medians of {args.repeat} runs. \"Loaded\": "
         f"another process keeps one core busy the whole time.\n",
         "| setting | 30 training steps, idle | loaded | decoding "
         "stories260K (tokens/s), idle | loaded | decoding 110M (tokens/s), "
         "idle | loaded |", "|---|---|---|---|---|---|---|"]
    for name, _, _ in SETTINGS:
        idle, busy = at(name, False), at(name, True)
        L.append(f"| {name} | {idle['train_s']:.2f} s | "
                 f"{busy['train_s']:.2f} s | {idle['decode_tps']:.0f} | "
                 f"{busy['decode_tps']:.0f} | "
                 f"{idle['decode_110m_tps']:.1f} | "
                 f"{busy['decode_110m_tps']:.1f} |")
    L.append("")
    default, short, sleep, spin = (SETTINGS[i][0] for i in range(4))

    def ratio(a, b, loaded, key):
        return at(a, loaded)[key] / at(b, loaded)[key]
    L.append(
        "kiln's default against the setting it picks: decoding the 110M "
        f"model {ratio(default, spin, False, 'decode_110m_tps'):.2f}x as "
        "fast as long spins idle and "
        f"{ratio(default, sleep, True, 'decode_110m_tps'):.2f}x as fast as "
        "sleeping waits loaded; training steps take "
        f"{ratio(default, spin, False, 'train_s'):.2f}x the long spins' "
        f"time idle and {ratio(default, sleep, True, 'train_s'):.2f}x the "
        "sleeping waits' time loaded. What the choice wins: long spins "
        f"decode {ratio(spin, sleep, False, 'decode_110m_tps'):.2f}x as "
        "fast as sleeping waits idle, and sleeping waits "
        f"{ratio(sleep, spin, True, 'decode_110m_tps'):.2f}x as fast as "
        "long spins loaded (training: "
        f"{ratio(spin, sleep, True, 'train_s'):.2f}x the time with long "
        "spins loaded). Short spins lose to one or the other in both. kiln "
        "looks at the machine only when it starts: a program whose cores "
        "will be shared later can choose sleeping waits with "
        "`OMP_WAIT_POLICY=PASSIVE`.\n")
    L.append("kiln's kernels and oneDNN share one OpenMP pool with a thread "
             "per core. Threads that spin long while they wait for the others "
             "take a core the busy process also wants, and every barrier "
             "then waits for the scheduler. Threads that sleep at once hand "
             "the core back, but every parallel region then pays a wake-up "
             "(a futex call, slow on a virtual machine), and a decoding step "
             "runs about a hundred small regions. So unless the user chose "
             "a policy (`OMP_WAIT_POLICY` or `GOMP_SPINCOUNT`), kiln looks "
             "at `/proc/stat` when it starts (the CLI, and `import kiln`): "
             "if other tasks are runnable in each of five samples a "
             "millisecond apart, it sets `OMP_WAIT_POLICY=PASSIVE`; "
             "otherwise `GOMP_SPINCOUNT=300000`, OpenMP's default (waiting "
             "threads spin up to about 3 ms, which bridges the gaps between "
             "a step's kernels). `--threads=N` "
             "(Python: `threads=N`) sets the count. The default count is "
             "kiln's own — "
             "`OMP_NUM_THREADS` when set, else every core — and is applied "
             "around each call: another library lowering OpenMP's count on "
             "the same thread (importing PyTorch sets it to its own choice, "
             "1 on the development machine) does not make kiln "
             "single-threaded, and the caller's setting is restored after "
             "the call.\n")
    args.out.write_text("\n".join(L))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
