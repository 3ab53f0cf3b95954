"""Runs the sanitized, runtime-only deploy program over good and corrupted
artifacts and inputs (see runtime-checks.sh). Any sanitizer report, crash or
unexpected exit status fails the check."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

kiln, deploy, deploy_c, deploy_train = sys.argv[1:5]
root = Path(__file__).resolve().parents[1]
env = dict(os.environ, ASAN_OPTIONS="exitcode=99:detect_leaks=1",
           UBSAN_OPTIONS="halt_on_error=1:exitcode=98:print_stacktrace=1")
failures = []


def run(*args):
    return subprocess.run(list(map(str, args)), capture_output=True,
                          text=True, env=env, timeout=300)


with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    models = [
        ("gpt2", ["-D", "n_layer=2", "-D", "n_embd=32", "-D", "n_head=4",
                  "-D", "vocab_size=64", "-D", "n_positions=16"],
         {"tokens": np.array([[1, 5, 9, 3], [2, 2, 7, 60]], np.int32)}),
        ("t5", ["-D", "d_model=32", "-D", "d_kv=8", "-D", "d_ff=48",
                "-D", "num_layers=1", "-D", "num_decoder_layers=1",
                "-D", "num_heads=4", "-D", "vocab_size=40"],
         {"input_ids": np.array([[1, 5, 9, 3, 7]], np.int32),
          "attention_mask": np.array([[1, 1, 1, 0, 0]], np.int32),
          "decoder_input_ids": np.array([[0, 4, 2]], np.int32)}),
    ]
    for name, defines, inputs in models:
        art = d / f"{name}.kart"
        r = run(kiln, "compile", root / "examples" / f"{name}.kiln", *defines,
                "-o", art, "--seed=3")
        assert r.returncode == 0, r.stderr
        args = []
        for k, v in inputs.items():
            np.save(d / f"{k}.npy", v)
            args.append(f"{k}=@{d / (k + '.npy')}")
        r1 = run(kiln, "run", art, *[f"--input={a}" for a in args],
                 f"--output=@{d / 'want.npy'}")
        r2 = run(deploy, art, "forward", *[a.replace("=@", "=") for a in args],
                 "-o", d / "got.npy", "--concurrent=4")
        if r1.returncode or r2.returncode:
            failures.append(f"{name}: run failed:\n{r1.stderr}\n{r2.stderr}")
            continue
        if (d / "want.npy").read_bytes() != (d / "got.npy").read_bytes():
            failures.append(f"{name}: kiln-deploy differs from kiln run")
        print(f"runtime-checks: {name} runs under ASan/UBSan, identical to "
              f"kiln run, also from 4 threads at once")
        # The same through the C API: raw buffers bound without copies.
        raw = []
        for k, v in inputs.items():
            v.tofile(d / f"{k}.bin")
            shape = "x".join(map(str, v.shape))
            raw.append(f"{k}=i32:{shape}:{d / (k + '.bin')}")
        r = run(deploy_c, art, "forward", *raw, "-o", d / "got.bin",
                "--concurrent=4")
        want = np.load(d / "want.npy")
        if r.returncode:
            failures.append(f"{name}: kiln-deploy-c failed:\n{r.stderr}")
        elif (d / "got.bin").read_bytes() != want.tobytes():
            failures.append(f"{name}: kiln-deploy-c differs from kiln run")
        elif "4 threads: every result identical" not in r.stdout:
            failures.append(f"{name}: kiln-deploy-c threads:\n{r.stdout}")
        else:
            print(f"runtime-checks: {name} through the C API (plain C, ASan/"
                  f"UBSan): identical to kiln run, also from 4 threads")
        if name == "t5":
            # The derived prepare and decode: cross-attention memory, and
            # cached attention with the relative position bias, which
            # writes its caches (one run each: concurrent calls would share
            # the cache buffers).
            src = [f"--input={a}" for a in args if "decoder_input" not in a]
            r = run(kiln, "run", art, "--function=prepare", *src,
                    f"--output=@{d / 'memory.0.npy'}",
                    f"--output=@{d / 'memory.1.npy'}")
            failures += [f"t5 prepare: {r.stderr}"] if r.returncode else []
            step = {"positions": np.array([[0, 1, 2]], np.int32),
                    "lengths": np.array([3], np.int32)}
            step.update({f"cache.0.{kv}": np.zeros((1, 6, 32), np.float32)
                         for kv in ("key", "value")})
            for k, v in step.items():
                np.save(d / f"{k}.npy", v)
            dec = args + [f"{k}=@{d / (k + '.npy')}" for k in
                          list(step) + ["memory.0", "memory.1"]]
            dec = [a for a in dec if not a.startswith("input_ids=")]
            r1 = run(kiln, "run", art, "--function=decode",
                     *[f"--input={a}" for a in dec],
                     f"--output=@{d / 'want.npy'}")
            r2 = run(deploy, art, "decode",
                     *[a.replace("=@", "=") for a in dec],
                     "-o", d / "got.npy")
            if r1.returncode or r2.returncode:
                failures.append(f"t5 decode failed:\n{r1.stderr}\n{r2.stderr}")
            elif (d / "want.npy").read_bytes() != (d / "got.npy").read_bytes():
                failures.append("t5: decode under kiln-deploy differs")
            else:
                print("runtime-checks: t5's prepare and decode run under "
                      "ASan/UBSan, identical to kiln run")

        data = art.read_bytes()
        rng = np.random.default_rng(7)
        cases = [data[:n] for n in sorted(set(
            [0, 1, 7, 8, 64, 200] + [len(data) * k // 16 for k in range(1, 16)]))]
        for _ in range(120):
            b = bytearray(data)
            for _ in range(int(rng.integers(1, 4))):
                i = int(rng.integers(0, len(b)))
                b[i] ^= 1 << int(rng.integers(0, 8))
            cases.append(bytes(b))
        for i, c in enumerate(cases):
            bad = d / "bad.kart"
            bad.write_bytes(c)
            r = run(deploy, bad, "forward",
                    *[a.replace("=@", "=") for a in args])
            if r.returncode not in (0, 1) or (r.returncode == 1 and
                                              "error:" not in r.stderr):
                failures.append(f"{name}: corrupted artifact {i}: exit "
                                f"{r.returncode}\n{r.stderr[-3000:]}")
        print(f"runtime-checks: {name}: {len(cases)} corrupted artifacts "
              f"handled cleanly")

    # The C API's generation (key/value cache) against a greedy loop over
    # whole-sequence `kiln run`s and NumPy's argmax.
    art = d / "gpt2.kart"
    prompt = np.array([[1, 5, 9, 3]], np.int32)
    prompt.tofile(d / "prompt.bin")
    r = run(deploy_c, art, "forward", f"tokens=i32:1x4:{d / 'prompt.bin'}",
            "--generate=6")
    got = [line for line in r.stdout.splitlines()
           if line.startswith("generated:")]
    seq = prompt
    for _ in range(6):
        np.save(d / "seq.npy", seq)
        rr = run(kiln, "run", art, f"--input=tokens=@{d / 'seq.npy'}",
                 f"--output=@{d / 'logits.npy'}")
        nxt = int(np.argmax(np.load(d / "logits.npy")[0, -1]))
        seq = np.concatenate([seq, np.array([[nxt]], np.int32)], axis=1)
    want = "generated: " + " ".join(map(str, seq[0, 4:]))
    if r.returncode or got != [want]:
        failures.append(f"C API generation: {got} != {want}\n{r.stderr}")
    else:
        print(f"runtime-checks: C API generation = a greedy loop over kiln "
              f"run ({want[11:]})")
    # Weights through the C API: another seed's loaded into this artifact
    # gives that artifact's results; this one's saved and loaded into the
    # other gives this one's.
    r = run(kiln, "compile", root / "examples" / "gpt2.kiln", *models[0][1],
            "-o", d / "other.kart", "--seed=4",
            f"--save-weights={d / 'other.st'}")
    assert r.returncode == 0, r.stderr
    np.save(d / "tokens.npy", models[0][2]["tokens"])
    models[0][2]["tokens"].tofile(d / "tokens.bin")
    tokens = f"tokens=i32:2x4:{d / 'tokens.bin'}"
    outs = {}
    for name in ("gpt2", "other"):
        rr = run(kiln, "run", d / f"{name}.kart",
                 f"--input=tokens=@{d / 'tokens.npy'}",
                 f"--output=@{d / (name + '-want.npy')}")
        assert rr.returncode == 0, rr.stderr
        outs[name] = np.load(d / f"{name}-want.npy").tobytes()
    checks = [  # (artifact, options, whose results)
        (art, [f"--save-weights={d / 'saved.st'}"], "gpt2"),
        (d / "other.kart", [f"--load-weights={d / 'saved.st'}"], "gpt2"),
        (art, [f"--load-weights={d / 'other.st'}"], "other")]
    for i, (a, options, whose) in enumerate(checks):
        r = run(deploy_c, a, "forward", tokens, "-o", d / "w1.bin", *options)
        if r.returncode or (d / "w1.bin").read_bytes() != outs[whose]:
            failures.append(f"C API weights {options}: exit {r.returncode}, "
                            f"not {whose}'s results\n{r.stderr[-2000:]}")
    print("runtime-checks: weights saved and loaded through the C API give "
          "kiln run's results")
    r = run(deploy_c, art, "forward", tokens, f"--load-weights={d / 'w1.bin'}")
    if r.returncode != 1 or "w1.bin" not in r.stderr:
        failures.append(f"C API, weights that are not safetensors: exit "
                        f"{r.returncode}\n{r.stderr[-2000:]}")

    # Bad arguments through the C API: clean errors naming the problem.
    for args, text in [
            ([d / "missing.kart", "forward"], "missing.kart"),
            ([art, "nope"], "no function 'nope'"),
            ([art, "forward", f"tokenz=i32:1x4:{d / 'prompt.bin'}"],
             "has no input 'tokenz'"),
            ([art, "forward", f"tokens=i32:2x4:{d / 'prompt.bin'}"],
             "expected 32 bytes"),
            ([art, "forward", f"tokens=f32:1x4:{d / 'prompt.bin'}"],
             "input 'tokens' is f32"),
            ([d / "bad.kart", "forward"], "error:")]:
        r = run(deploy_c, *args)
        if r.returncode not in (1, 2) or text not in r.stderr:
            failures.append(f"C API, bad {args[1:]}: exit {r.returncode}\n"
                            f"{r.stderr[-2000:]}")
    print("runtime-checks: the C API reports bad artifacts, names and "
          "inputs with clean errors")

    # Bad inputs through the sanitized runtime.
    (d / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': '<i4'}")
    for args in [["tokens=" + str(d / "bad.npy")],
                 ["tokens=" + str(d / "missing.npy")], [],
                 ["tokens=" + str(d / "want.npy")]]:
        r = run(deploy, art, "forward", *args)
        if r.returncode != 1 or "error:" not in r.stderr:
            failures.append(f"bad input {args}: exit {r.returncode}\n"
                            f"{r.stderr[-2000:]}")
    np.save(d / "oob.npy", np.array([[1, 99]], np.int32))
    r = run(deploy, art, "forward", "tokens=" + str(d / "oob.npy"))
    if r.returncode != 1 or "outside [0, 64)" not in r.stderr:
        failures.append(f"out-of-range id: exit {r.returncode}\n{r.stderr}")

    # Fine-tuning from C++ against the installed package, on one process
    # and data parallel under mpirun; kiln.Trainer (the main build's Python
    # module) is the reference. Open MPI's libraries leak by design at exit
    # (components it unloads), which LeakSanitizer cannot tell from kiln's:
    # leak checks are off for these runs only, the other sanitizers stay.
    art = d / "train.kart"
    r = run(kiln, "compile", root / "examples" / "gpt2.kiln", "-D", "n_layer=2",
            "-D", "n_embd=32", "-D", "n_head=4", "-D", "vocab_size=64",
            "-D", "n_positions=16", "--grad=loss", "--seed=5", "-o", art)
    assert r.returncode == 0, r.stderr
    rows = np.random.default_rng(7).integers(0, 64, (24, 9), dtype=np.int32)
    np.save(d / "rows.npy", rows)
    steps, batch, micro = 4, 8, 2
    train_args = [art, d / "rows.npy", f"--steps={steps}", f"--batch={batch}",
                  f"--micro-batch={micro}"]
    mpi_env = dict(env, ASAN_OPTIONS="exitcode=99:detect_leaks=0",
                   OMPI_ALLOW_RUN_AS_ROOT="1",
                   OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    before = len(failures)
    one = run(deploy_train, *train_args, "-o", d / "one.safetensors")
    if one.returncode:
        failures.append(f"deploy-train: exit {one.returncode}\n"
                        f"{one.stderr[-3000:]}")
    else:
        sys.path.insert(0, str(Path(kiln).resolve().parents[1] / "python"))
        import kiln as kiln_py
        model = kiln_py.load(art)
        trainer = kiln_py.Trainer(model, kiln_py.AdamW(lr=1e-3),
                                  total_steps=steps)
        # Step s, micro-batch k: rows s*batch + k*micro ... (modulo 24).
        want_losses = []
        for s in range(steps):
            picks = [[(s * batch + k * micro + b) % len(rows)
                      for b in range(micro)] for k in range(batch // micro)]
            want_losses.append(trainer.step(
                [{"tokens": rows[p, :-1], "targets": rows[p, 1:]}
                 for p in picks]))
        # Within 1e-4 of kiln.Trainer's weights (a tenth of one AdamW step
        # at lr 1e-3), not bit for bit: the sanitized runtime is another
        # build, and AdamW turns rounding-level differences in a gradient
        # near 0 into differences of a fraction of a step (5e-6 here). Rows
        # in another order move weights by whole steps (2e-3); the losses,
        # which agree to 1e-6, tell them apart from the first step on.
        want = model.parameters()
        got = kiln_py.load(art)
        got.load_weights(d / "one.safetensors")
        got = got.parameters()
        worst = max(float(np.max(np.abs(want[k] - got[k]))) for k in want)
        losses = [float(l.split()[-1]) for l in one.stdout.splitlines()]
        if worst > 1e-4:
            failures.append(f"deploy-train: weights {worst:.3g} from "
                            "kiln.Trainer's")
        if len(losses) != steps or not losses[-1] < losses[0] or \
                max(abs(a - b) for a, b in zip(losses, want_losses)) > 1e-6:
            failures.append(f"deploy-train: losses {losses}, kiln.Trainer's "
                            f"{want_losses}")
        if shutil.which("mpirun"):
            r = subprocess.run(
                ["mpirun", "--oversubscribe", "-np", "2", deploy_train,
                 *map(str, train_args), "-o", str(d / "two.safetensors")],
                capture_output=True, text=True, env=mpi_env, timeout=300)
            if r.returncode:
                failures.append(f"deploy-train on 2 ranks: exit "
                                f"{r.returncode}\n{r.stderr[-3000:]}")
            elif (d / "two.safetensors").read_bytes() != \
                    (d / "one.safetensors").read_bytes():
                failures.append("deploy-train: 2 ranks' weights differ from "
                                "one process's")
            elif r.stdout != one.stdout:
                failures.append("deploy-train: 2 ranks' losses differ")
            elif len(failures) == before:
                print(f"runtime-checks: deploy-train (C++, kiln::mpi): "
                      f"kiln.Trainer's weights to {worst:.2g}, and under "
                      f"mpirun -np 2 one process's bytes")
        elif len(failures) == before:
            print(f"runtime-checks: deploy-train (C++): kiln.Trainer's "
                  f"weights to {worst:.2g} (no mpirun here: 2 ranks skipped)")

for f in failures:
    print("FAIL:", f)
print(f"runtime-checks: {'FAILED' if failures else 'passed'}")
sys.exit(1 if failures else 0)
