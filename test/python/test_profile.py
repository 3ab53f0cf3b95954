"""--profile: Chrome/Perfetto traces of kiln run, train and generate (one
slice per kernel, with op, shapes, source location and bytes), kiln inspect
--profile, and Model.profile in Python."""
import json
import re

import numpy as np
import pytest

import kiln
from kiln_cli import EXAMPLES, kiln as cli

SHAPE = {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 16,
         "vocab_size": 50}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("profile")
    out = d / "gpt2.kart"
    args = ["compile", EXAMPLES / "gpt2.kiln", "-o", out]
    for k, v in SHAPE.items():
        args += ["-D", f"{k}={v}"]
    cli(*args)
    tokens = d / "tokens.npy"
    np.save(tokens, np.arange(2 * 16, dtype=np.int32).reshape(2, 16) % 50)
    return out, tokens


def events(path):
    trace = json.loads(path.read_text())
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def kernels_of(artifact, function):
    """The kernels of `function`, in order, as kiln inspect --plan lists
    them (an independent view of the plan)."""
    text = cli("inspect", artifact, "--plan").stdout
    part = text.split(f"fn {function}(")[1].split("\nfn ")[0]
    return re.findall(r"^    (\w+) ", part, re.M)


def test_run_trace_has_one_slice_per_kernel_per_call(tmp_path, artifact):
    art, tokens = artifact
    trace = tmp_path / "t.json"
    r = cli("run", art, f"--input=tokens={tokens}", "--repeat=2",
            f"--profile={trace}")
    assert f"wrote a trace of" in r.stderr and "ui.perfetto.dev" in r.stderr
    ev = events(trace)
    calls = [e for e in ev if e["cat"] == "call"]
    kernels = [e for e in ev if e["cat"] == "kernel"]
    assert len(calls) == 3 and {c["name"] for c in calls} == {"forward"}
    n = len(kernels) // 3
    assert n > 10 and len(kernels) == 3 * n
    # Each call's kernels run in order inside it, once each.
    for call in calls:
        inside = [k for k in kernels
                  if call["ts"] <= k["ts"] and
                  k["ts"] + k["dur"] <= call["ts"] + call["dur"] + 1e-3]
        assert [k["args"]["kernel"] for k in inside] == list(range(n))
    assert [k["name"] for k in kernels[:n]] == kernels_of(art, "forward")
    for k in kernels:
        assert k["dur"] >= 0 and k["args"]["function"] == "forward"
        assert re.match(r".*gpt2\.kiln:\d+:\d+", k["args"]["location"]), k
    # Shapes and bytes of the token embedding, from first principles.
    emb = next(k for k in kernels if k["name"] == "Embedding")
    assert emb["args"]["shapes"] == \
        "f32[50, 32], i32[2, 16] -> f32[2, 16, 32]"
    assert emb["args"]["bytes"] == (50 * 32 + 2 * 16 + 2 * 16 * 32) * 4


def test_inspect_profile_lists_the_top_kernels(tmp_path, artifact):
    art, tokens = artifact
    trace = tmp_path / "t.json"
    cli("run", art, f"--input=tokens={tokens}", f"--profile={trace}")
    out = cli("inspect", f"--profile={trace}", "--top=3").stdout
    ev = [e for e in events(trace) if e["cat"] == "kernel"]
    total_ms = sum(e["dur"] for e in ev) / 1000
    first = out.splitlines()[0]
    assert first.startswith(f"{len(ev)} kernel slices in 1 calls: "
                            f"{total_ms:.2f} ms in kernels")
    top = out.split("top kernels")[1].split("\n\n")[0].splitlines()[2:]
    assert len(top) == 4 and top[-1].strip().startswith("... and")
    # The slowest row: the slowest (op, line) group of the trace.
    groups = {}
    for e in ev:
        where = e["args"]["location"].split(", ")[0].split(" (")[0]
        key = (e["name"], where.rsplit("/", 1)[-1])
        groups[key] = groups.get(key, 0) + e["dur"]
    (op, where), us = max(groups.items(), key=lambda kv: kv[1])
    row = top[0].split()
    assert float(row[0]) == pytest.approx(us / 1000, abs=0.006)
    assert row[5] == op and row[6] == where
    by_op = out.split("by op:")[1].split("\n\n")[0].splitlines()[2:]
    assert sum(float(r.split()[0]) for r in by_op) == \
        pytest.approx(total_ms, abs=0.01 * len(by_op))


def test_train_and_generate_traces(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    trace = tmp_path / "train.json"
    args = ["train", EXAMPLES / "gpt2.kiln", f"--data={text}", "--steps=2",
            "--batch=2", "--seq=16", "--accumulate=2", "--quiet",
            f"--profile={trace}", "-o", tmp_path / "m.kart"]
    for k, v in SHAPE.items():
        if k != "vocab_size":
            args += ["-D", f"{k}={v}"]
    cli(*args)
    ev = events(trace)
    names = {e["name"] for e in ev if e["cat"] == "call"}
    assert {"loss_grad", "loss"} <= names
    host = [e for e in ev if e["cat"] == "host"]
    assert len(host) == 2 and host[0]["name"] == "optimizer update"
    gen = tmp_path / "gen.json"
    cli("generate", tmp_path / "m.kart", "--max-tokens=5", "--prompt=the",
        "--temperature=0", f"--profile={gen}")
    calls = [e["name"] for e in events(gen) if e["cat"] == "call"]
    assert "decode" in calls


@pytest.mark.parametrize("content, message", [
    ('{"a": 1}', r'not a trace \(no "traceEvents" list'),
    ('{"traceEvents": [{"ph": "X", "name": "Add", "ts": 1, "dur": -2}]}',
     r'event 0 \(byte 17\) has no valid "ts" and "dur"'),
    ('{"traceEvents": [', "at byte offset"),
])
def test_inspect_bad_traces(tmp_path, content, message):
    p = tmp_path / "bad.json"
    p.write_text(content)
    r = cli("inspect", f"--profile={p}", check=False)
    assert r.returncode == 1 and re.search(message, r.stderr), r.stderr


def test_inspect_profile_usage(tmp_path, artifact):
    art, _ = artifact
    r = cli("inspect", art, f"--profile={tmp_path / 'x.json'}", check=False)
    assert r.returncode == 2 and "reads a trace on its own" in r.stderr
    r = cli("inspect", art, "--top=3")
    assert "--top has no effect without --profile" in r.stderr
    r = cli("inspect", f"--profile={tmp_path / 'none.json'}", check=False)
    assert r.returncode == 1 and "none.json" in r.stderr


def test_python_profile(tmp_path):
    model = kiln.compile(EXAMPLES / "gpt2.kiln", defines=SHAPE)
    x = np.zeros((1, 8), np.int32)
    with model.profile(tmp_path / "py.json") as p:
        model.forward(tokens=x)
        model.forward(tokens=x)
    model.forward(tokens=x)  # after the block: not recorded
    ev = events(tmp_path / "py.json")
    assert sum(e["cat"] == "call" for e in ev) == 2
    assert p.slices == len(ev)
    assert "top kernels" in p.summary() and "FusedMatmul" in p.summary()
