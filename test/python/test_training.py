"""kiln train: optimizer steps against torch.optim, the learning-rate
schedule, gradient accumulation and clipping, determinism, checkpoints and
exact resumption, and clear errors for bad input."""
import json
import math
import os
import re
import signal
import struct
import subprocess
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference_models as ref
from kiln_cli import EXAMPLES, KILN, data_file, kiln, read_safetensors

# Every window of this text is the same: with --eval-fraction=0 and
# --seq=16 a 17-character file has one window, so each batch is known.
TEXT = "hello kiln world!"
TINY = dict(n_positions=16, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0,
            embd_pdrop=0)


def defines(cfg):
    out = []
    for k, v in cfg.items():
        out += ["-D", f"{k}={v}"]
    return out


def vocab(text):
    return sorted(set(text))


def train(tmp_path, *flags, data=TEXT, cfg=TINY, check=True, name="run"):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "data.txt").write_text(data)
    r = subprocess.run([KILN, "train", EXAMPLES / "gpt2.kiln",
                        f"--data={d / 'data.txt'}", *defines(cfg),
                        f"--checkpoint-dir={d / 'ck'}",
                        f"--metrics={d / 'm.jsonl'}", *map(str, flags)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode >= 0, f"kiln crashed with signal {-r.returncode}"
    if check:
        assert r.returncode == 0, r.stderr
    return d, r


def final_weights(d):
    latest = (d / "ck" / "latest").read_text().strip()
    return read_safetensors(d / "ck" / latest / "model.safetensors")


def metrics(d):
    return [json.loads(line) for line in (d / "m.jsonl").read_text().splitlines()]


def initial_weights(tmp_path, seed):
    w0 = tmp_path / "w0.safetensors"
    kiln("compile", EXAMPLES / "gpt2.kiln", *defines(TINY), "-D",
         f"vocab_size={len(vocab(TEXT))}", f"--seed={seed}",
         f"--save-weights={w0}", "-o", tmp_path / "init.kart")
    return {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
            for k, v in read_safetensors(w0).items()}


def torch_loss(w, batch):
    ids = [vocab(TEXT).index(c) for c in TEXT]
    tokens = torch.tensor([ids[:16]] * batch)
    targets = torch.tensor([ids[1:17]] * batch)
    logits = ref.gpt2(w, dict(TINY, vocab_size=len(vocab(TEXT))), tokens)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                           targets.reshape(-1))


def groups(w, decay):
    return [{"params": [p for p in w.values() if p.dim() >= 2],
             "weight_decay": decay},
            {"params": [p for p in w.values() if p.dim() < 2],
             "weight_decay": 0.0}]


def test_adamw_matches_torch(tmp_path):
    """10 AdamW steps (decoupled weight decay on matrices) against
    torch.optim.AdamW from the same initial weights and batches."""
    d, _ = train(tmp_path, "--steps=10", "--batch=2", "--seq=16",
                 "--eval-fraction=0", "--lr=1e-2", "--warmup=0",
                 "--min-lr-ratio=1", "--clip=0", "--weight-decay=0.1",
                 "--seed=4")
    w = initial_weights(tmp_path, 4)
    opt = torch.optim.AdamW(groups(w, 0.1), lr=1e-2)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = torch_loss(w, 2)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    got = final_weights(d)
    worst = max(float(np.max(np.abs(got[k] - w[k].detach().numpy())))
                for k in w)
    assert worst <= 2e-4, worst
    m = metrics(d)
    assert [r["step"] for r in m] == list(range(1, 11))
    np.testing.assert_allclose([r["loss"] for r in m], losses, rtol=1e-4)
    assert all(r["lr"] == pytest.approx(1e-2) for r in m)


def test_sgd_momentum_clipping_and_accumulation(tmp_path):
    """SGD with momentum and coupled weight decay, global-norm clipping at
    0.5, against torch.optim.SGD + clip_grad_norm_; two micro-batches of one
    row give the same update as one batch of two (gradients are averaged)."""
    flags = ["--steps=6", "--seq=16", "--eval-fraction=0", "--lr=0.1",
             "--warmup=0", "--min-lr-ratio=1", "--clip=0.5",
             "--optimizer=sgd", "--momentum=0.9", "--weight-decay=0.01",
             "--seed=2"]
    d, _ = train(tmp_path, *flags, "--batch=2")
    w = initial_weights(tmp_path, 2)
    opt = torch.optim.SGD(groups(w, 0.01), lr=0.1, momentum=0.9)
    norms = []
    for _ in range(6):
        opt.zero_grad()
        torch_loss(w, 2).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(list(w.values()),
                                                          0.5)))
        opt.step()
    got = final_weights(d)
    worst = max(float(np.max(np.abs(got[k] - w[k].detach().numpy())))
                for k in w)
    assert worst <= 1e-4, worst
    np.testing.assert_allclose([r["grad_norm"] for r in metrics(d)], norms,
                               rtol=1e-3)
    assert norms[0] > 0.5  # clipping was active
    d2, _ = train(tmp_path, *flags, "--batch=1", "--accumulate=2",
                  name="accumulated")
    got2 = final_weights(d2)
    assert max(float(np.max(np.abs(got2[k] - got[k]))) for k in got) <= 1e-5


def test_learning_rate_schedule(tmp_path):
    """Linear warmup, then cosine decay to lr * min_lr_ratio."""
    d, _ = train(tmp_path, "--steps=10", "--batch=1", "--seq=16",
                 "--eval-fraction=0", "--lr=1e-2", "--warmup=3",
                 "--min-lr-ratio=0.1")
    want = []
    for s in range(10):
        if s < 3:
            want.append(1e-2 * (s + 1) / 3)
        else:
            p = (s - 3) / 7
            want.append(1e-3 + 0.5 * (1 + math.cos(math.pi * p)) * 9e-3)
    np.testing.assert_allclose([r["lr"] for r in metrics(d)], want,
                               rtol=1e-5)


def text_sample():
    return data_file("tinyshakespeare.txt").read_text()[:20000]


def test_determinism_and_exact_resume(tmp_path):
    """Same seed and threads give byte-identical weights; a run stopped at
    step 6 and resumed from its checkpoint ends byte-identical to the run
    that never stopped (dropout on, so its RNG state is part of the test)."""
    cfg = dict(TINY, resid_pdrop=0.1, embd_pdrop=0.1)
    flags = ["--steps=12", "--batch=4", "--seq=16", "--seed=7",
             "--threads=2", "--eval-every=4"]
    a, _ = train(tmp_path, *flags, data=text_sample(), cfg=cfg, name="a")
    b, _ = train(tmp_path, *flags, data=text_sample(), cfg=cfg, name="b")
    wa = (a / "ck" / "step-00000012" / "model.safetensors").read_bytes()
    assert wa == (b / "ck" / "step-00000012" / "model.safetensors").read_bytes()
    c, r = train(tmp_path, *flags, "--stop-after=6", data=text_sample(),
                 cfg=cfg, name="c")
    assert "stopped after step 6" in r.stderr
    assert (c / "ck" / "latest").read_text().strip() == "step-00000006"
    c, r = train(tmp_path, *flags, "--resume", data=text_sample(), cfg=cfg,
                 name="c")
    assert "resumed from" in r.stderr and "at step 6" in r.stderr
    assert wa == (c / "ck" / "step-00000012" / "model.safetensors").read_bytes()
    assert (a / "ck" / "step-00000012" / "optimizer.safetensors").read_bytes() \
        == (c / "ck" / "step-00000012" / "optimizer.safetensors").read_bytes()
    assert [r["step"] for r in metrics(c)] == list(range(1, 13))
    state = json.loads((c / "ck" / "step-00000012" /
                        "trainer_state.json").read_text())
    assert state["step"] == 12 and state["seed"] == 7
    # Only the newest two checkpoints are kept.
    assert sorted(p.name for p in (c / "ck").iterdir()) == \
        ["gpt2-trained.kart", "latest", "step-00000006", "step-00000012"]


def test_killed_during_checkpoints_never_leaves_a_bad_one(tmp_path):
    """SIGKILL at several moments of a run that checkpoints every step: the
    checkpoint `latest` names always loads, and training resumes from it."""
    d = tmp_path / "kill"
    d.mkdir()
    (d / "data.txt").write_text(text_sample())
    args = [KILN, "train", EXAMPLES / "gpt2.kiln", f"--data={d / 'data.txt'}",
            *defines(dict(TINY, n_embd=64, n_layer=2)), "--steps=400",
            "--batch=4", "--seq=16", f"--checkpoint-dir={d / 'ck'}",
            "--checkpoint-every=1"]
    for delay in (0.6, 0.9, 1.3, 1.7):
        p = subprocess.Popen(args + (["--resume"] if (d / "ck").exists()
                                     else []),
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if not (d / "ck" / "latest").exists():
            continue
        latest = d / "ck" / (d / "ck" / "latest").read_text().strip()
        state = json.loads((latest / "trainer_state.json").read_text())
        weights = read_safetensors(latest / "model.safetensors")
        opt = read_safetensors(latest / "optimizer.safetensors")
        assert int(opt["step"]) == state["step"]
        assert set(weights) and all(np.isfinite(v).all()
                                    for v in weights.values())
    latest = d / "ck" / (d / "ck" / "latest").read_text().strip()
    step = json.loads((latest / "trainer_state.json").read_text())["step"]
    r = subprocess.run(args + ["--resume", f"--stop-after={step + 1}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"at step {step}" in r.stderr
    assert not [p for p in (d / "ck").iterdir()
                if p.name.startswith(".incomplete")]


def test_trained_model_generates_text(tmp_path):
    d, r = train(tmp_path, "--steps=20", "--batch=4", "--seq=16",
                 "--lr=3e-3", data=text_sample(), name="gen")
    art = d / "ck" / "gpt2-trained.kart"
    assert f"wrote {art}" in r.stderr
    out = kiln("generate", art, "--max-tokens=20", "--prompt=ROMEO:",
               "--temperature=0.8", "--seed=3").stdout
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 20 + 1
    assert set(out[:-1]) <= set(text_sample())
    r = kiln("generate", art, "--max-tokens=5", "--prompt=ROMEO@", check=False)
    assert r.returncode == 1
    assert "the character '@' at byte offset 5 is not in the tokenizer's " \
           "vocabulary" in r.stderr


def test_resume_with_nothing_to_do_changes_nothing(tmp_path):
    """Resuming with --steps at or below the checkpoint's step says so and
    writes nothing: the trained artifact, checkpoints and metrics stay."""
    flags = ["--steps=6", "--batch=2", "--seq=16", "--seed=3"]
    d, _ = train(tmp_path, *flags, data=text_sample(), name="done")
    before = {p: p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
    for steps in ("--steps=6", "--steps=4"):
        _, r = train(tmp_path, *flags[1:], steps, "--resume",
                     data=text_sample(), name="done")
        assert "is at step 6 and " + steps + " asks for no more; nothing " \
            "to do" in r.stderr, r.stderr
        assert "final loss" not in r.stderr
        after = {p: p.read_bytes() for p in sorted(d.rglob("*"))
                 if p.is_file()}
        assert after == before


def test_training_an_artifact_keeps_its_tokenizer(tmp_path):
    """kiln train on a compiled .kart without a tokenizer writes a trained
    artifact that carries the tokenizer it learned (kiln generate --prompt
    works on it); with --threads the header names the count."""
    d = tmp_path / "kart"
    d.mkdir()
    (d / "data.txt").write_text(text_sample())
    vocab_size = len(set(text_sample()))
    kiln("compile", EXAMPLES / "gpt2.kiln", *defines(TINY), "-D",
         f"vocab_size={vocab_size}", "--grad=loss", "-o", d / "m.kart")
    r = kiln("train", d / "m.kart", f"--data={d / 'data.txt'}", "--steps=3",
             "--batch=2", "--seq=16", "--threads=1", "-o", d / "t.kart")
    assert f"char tokenizer ({vocab_size} tokens)" in r.stderr
    assert ", 1 threads" in r.stderr
    out = kiln("generate", d / "t.kart", "--prompt=ROMEO:", "--max-tokens=8",
               "--seed=1").stdout
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 8 + 1
    # A model whose vocabulary is smaller than the text's characters.
    kiln("compile", EXAMPLES / "gpt2.kiln", *defines(TINY), "-D",
         "vocab_size=8", "--grad=loss", "-o", d / "small.kart")
    r = kiln("train", d / "small.kart", f"--data={d / 'data.txt'}",
             "--steps=1", "--seq=16", check=False)
    assert r.returncode == 1
    assert f"has {vocab_size} tokens, but the model's vocabulary has 8" in \
        r.stderr
    # The artifact's own tokenizer wins; asking for another is an error.
    r = kiln("train", d / "t.kart", f"--data={d / 'data.txt'}", "--steps=1",
             "--seq=16", "--tokenizer=byte", check=False)
    assert r.returncode == 1
    assert "the artifact has a char tokenizer, not --tokenizer=byte" in \
        r.stderr


def test_finetune_stories260k_with_its_tokenizer(tmp_path):
    """A llama2.c model compiled with its tokenizer trains on text encoded
    by that tokenizer, and the trained artifact still tells stories."""
    art = tmp_path / "s.kart"
    kiln("compile", EXAMPLES / "llama.kiln",
         f"--weights={data_file('stories260K.bin')}",
         f"--tokenizer={data_file('tok512.bin')}", "--grad=loss", "-o", art)
    text = tmp_path / "story.txt"
    text.write_text("Once upon a time, there was a cat. The cat was happy. "
                    * 40)
    r = kiln("train", art, f"--data={text}", "--steps=2", "--batch=2",
             "--seq=32", "--lr=1e-4", "-o", tmp_path / "t.kart")
    assert "llama2c tokenizer (512 tokens)" in r.stderr
    out = kiln("generate", tmp_path / "t.kart", "--prompt=Once upon a time",
               "--temperature=0", "--max-tokens=20").stdout
    assert out.startswith("Once upon a time,")


@pytest.mark.parametrize("flags, message", [
    (["-D", "vocab_size=5"], "tokens, more than -D vocab_size=5"),
    (["--data=/nonexistent.txt"], "/nonexistent.txt: cannot open the file"),
    (["--tokenizer=word"], "word: cannot open the file"),
    (["--steps=0"], "--steps expects an integer from 1 to 1099511627776, got '0'"),
    (["--lr=fast"], "--lr expects a number, got 'fast'"),
    (["--optimizer=adam"], "--optimizer expects adamw or sgd, got 'adam'"),
    (["--seq=100000", "-D", "n_positions=100000"],
     "too few for windows of 100000 tokens"),
    (["--seq=17"], "--seq=17 is longer than the 16 positions the model has "
     "(n_positions=16); use --seq=16 or less, or -D n_positions=17"),
    (["--lr=-1"], "lr must be positive"),
    (["--bogus"], "unknown option '--bogus' for 'kiln train'"),
    (["--threads=0"], "--threads expects an integer from 1 to 4096, got '0'"),
    (["--threads=100000"], "--threads expects an integer from 1 to 4096"),
])
def test_bad_arguments(tmp_path, flags, message):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "data.txt").write_text(text_sample())
    # --seq within the model's 16 positions unless the case sets it.
    seq = [] if any(f.startswith("--seq") for f in flags) else ["--seq=16"]
    # A case's own -D replaces TINY's (a repeated -D is an error).
    tiny = {k: v for k, v in TINY.items()
            if not any(f.startswith(k + "=") for f in flags)}
    r = subprocess.run([KILN, "train", EXAMPLES / "gpt2.kiln",
                        f"--data={d / 'data.txt'}", "--steps=2",
                        *defines(tiny), *seq, *flags],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode in (1, 2), r.stderr
    assert message in r.stderr, r.stderr


def test_bad_inputs(tmp_path):
    # A model whose loss is not loss(tokens, targets).
    r = subprocess.run([KILN, "train", EXAMPLES / "bert.kiln",
                        f"--data={data_file('tinyshakespeare.txt')}",
                        "--steps=1", "-D",
                        "num_hidden_layers=1", "-D", "hidden_size=16", "-D",
                        "num_attention_heads=2", "-D", "intermediate_size=32"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "'kiln train' trains language models" in r.stderr
    # Invalid UTF-8 with the char tokenizer.
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9 " * 100)
    r = subprocess.run([KILN, "train", EXAMPLES / "gpt2.kiln",
                        f"--data={bad}", "--steps=1", *defines(TINY)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "not valid UTF-8 at byte offset 3; use --tokenizer=byte" in r.stderr
    # Resuming with other settings, and from a damaged checkpoint.
    d, _ = train(tmp_path, "--steps=4", "--batch=2", "--seq=16",
                 data=text_sample(), name="res")
    _, r = train(tmp_path, "--steps=8", "--batch=3", "--seq=16", "--resume",
                 data=text_sample(), name="res", check=False)
    assert r.returncode == 1
    assert "the checkpoint was made with batch=2, this run has batch=3" \
        in r.stderr
    latest = d / "ck" / (d / "ck" / "latest").read_text().strip()
    opt = latest / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:100])
    _, r = train(tmp_path, "--steps=8", "--batch=2", "--seq=16", "--resume",
                 data=text_sample(), name="res", check=False)
    assert r.returncode == 1 and "optimizer.safetensors" in r.stderr
    (latest / "trainer_state.json").write_text("{}")
    _, r = train(tmp_path, "--steps=8", "--batch=2", "--seq=16", "--resume",
                 data=text_sample(), name="res", check=False)
    assert r.returncode == 1
    assert "missing or invalid 'step' or 'data_rng'" in r.stderr
    (latest / "trainer_state.json").write_text(
        '{"step": 4, "data_rng": "1", "settings": [1]}')
    _, r = train(tmp_path, "--steps=8", "--batch=2", "--seq=16", "--resume",
                 data=text_sample(), name="res", check=False)
    assert r.returncode == 1
    assert "trainer_state.json: 'settings' should be an object, got an array" \
        in r.stderr
    # `latest` names an entry of the checkpoint directory, never a path
    # that leads out of it.
    for name in ("..", ".", "/etc", ".incomplete-x", "a\x01b"):
        (d / "ck" / "latest").write_text(name + "\n")
        _, r = train(tmp_path, "--steps=8", "--batch=2", "--seq=16",
                     "--resume", data=text_sample(), name="res", check=False)
        assert r.returncode == 1, name
        assert "latest: does not name a checkpoint directory" in r.stderr, name


class SplitMix64:
    """kiln's batch sampler generator (runtime/Random.h), for replaying the
    exact batches of a kiln run in PyTorch."""
    M = (1 << 64) - 1

    def __init__(self, state):
        self.state = state & self.M

    def next(self):
        self.state = (self.state + 0x9e3779b97f4a7c15) & self.M
        z = self.state
        z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & self.M
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & self.M
        return z ^ (z >> 31)


def test_loss_matches_a_pytorch_training_run(tmp_path):
    """The same char-level GPT, initial weights, batches and AdamW schedule
    trained in PyTorch (float64, torch.optim.AdamW, LambdaLR,
    clip_grad_norm_) reaches a final evaluation loss within 5% of kiln's."""
    text = data_file("tinyshakespeare.txt").read_text()[:60000]
    cfg = dict(n_positions=32, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0,
               embd_pdrop=0)
    steps, B, T, lr, warmup, seed = 150, 8, 32, 3e-3, 15, 5
    d, _ = train(tmp_path, f"--steps={steps}", f"--batch={B}", f"--seq={T}",
                 f"--lr={lr}", f"--warmup={warmup}", f"--seed={seed}",
                 "--eval-batches=4", data=text, cfg=cfg, name="ref")
    kiln_eval = metrics(d)[-1]["eval_loss"]

    chars = sorted(set(text))
    V = len(chars)
    ids = np.array([chars.index(c) for c in text])
    held = max(int(len(ids) * 0.1), T + 1)
    split = len(ids) - held
    w0 = tmp_path / "w0.safetensors"
    kiln("compile", EXAMPLES / "gpt2.kiln", *defines(cfg), "-D",
         f"vocab_size={V}", f"--seed={seed}", f"--save-weights={w0}", "-o",
         tmp_path / "init.kart")
    w = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in read_safetensors(w0).items()}
    full = dict(cfg, vocab_size=V)
    opt = torch.optim.AdamW(groups(w, 0.0), lr=lr)

    def schedule(s):
        if s < warmup:
            return (s + 1) / warmup
        p = (s - warmup) / (steps - warmup)
        return 0.1 + 0.5 * (1 + math.cos(math.pi * p)) * 0.9

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    rng = SplitMix64(seed ^ 0x6b696c6e64617461)
    for _ in range(steps):
        starts = [rng.next() % (split - T) for _ in range(B)]
        x = np.stack([ids[s:s + T] for s in starts])
        y = np.stack([ids[s + 1:s + T + 1] for s in starts])
        opt.zero_grad()
        F.cross_entropy(ref.gpt2(w, full, x).reshape(-1, V),
                        torch.as_tensor(y).reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(list(w.values()), 1.0)
        opt.step()
        sched.step()
    windows = (held - 1) // T
    losses = []
    with torch.no_grad():
        for k in range(4):
            starts = [split + ((k * B + b) % windows) * T for b in range(B)]
            x = np.stack([ids[s:s + T] for s in starts])
            y = np.stack([ids[s + 1:s + T + 1] for s in starts])
            losses.append(float(F.cross_entropy(
                ref.gpt2(w, full, x).reshape(-1, V),
                torch.as_tensor(y).reshape(-1))))
    torch_eval = sum(losses) / len(losses)
    print(f"final eval loss: kiln {kiln_eval:.4f}, PyTorch {torch_eval:.4f}")
    assert kiln_eval < 3.0  # it learned something
    assert abs(kiln_eval - torch_eval) <= 0.05 * torch_eval


def arena(art, dims):
    out = kiln("inspect", art, f"--dims={dims}").stdout
    block = out[out.index("fn loss_grad"):]
    # "arena 1.4 MiB (1466240 bytes)", or "arena 384 bytes" when small.
    return int(re.search(r"arena (?:[\d.]+ \w+ \()?(\d+) bytes",
                         block).group(1))


def test_recompute_gives_the_same_gradients_in_less_memory(tmp_path):
    """--recompute recomputes each block's activations in the backward pass:
    the gradients and a training run are bit-identical, the plan smaller."""
    cfg = dict(TINY, n_layer=3, vocab_size=len(vocab(TEXT)))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg["vocab_size"], (4, 16)).astype(np.int32)
    np.save(tmp_path / "x.npy", tokens)
    outs = {}
    # Unfused, the two run the same kernels on the same values, so they agree
    # bit for bit. Fused, recomputed activations have fewer users and fuse
    # further (gelu into its matmul): equal to rounding.
    for name, extra in (("keep", ["--no-fuse"]),
                        ("recompute", ["--recompute", "--no-fuse"]),
                        ("keep_fused", []),
                        ("recompute_fused", ["--recompute"])):
        art = tmp_path / f"{name}.kart"
        kiln("compile", EXAMPLES / "gpt2.kiln", *defines(cfg), "--grad=loss",
             *extra, "--seed=1", "-o", art)
        files = [tmp_path / f"{name}{i}.npy" for i in range(1 + 28 + 12)]
        kiln("run", art, "--function=loss_grad",
             f"--input=tokens=@{tmp_path / 'x.npy'}",
             f"--input=targets=@{tmp_path / 'x.npy'}",
             *[f"--output=@{f}" for f in files[:1 + 4 + 12 * 3]])
        outs[name] = [np.load(f) for f in files[:1 + 4 + 12 * 3]]
        outs[name + "_arena"] = arena(art, "B=16,T=16")
    for a, b in zip(outs["keep"], outs["recompute"]):
        assert np.array_equal(a, b)
    for a, b in zip(outs["keep_fused"], outs["recompute_fused"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert outs["recompute_arena"] < 0.75 * outs["keep_arena"], \
        (outs["recompute_arena"], outs["keep_arena"])
    ir = kiln("compile", EXAMPLES / "gpt2.kiln", *defines(cfg), "--grad=loss",
              "--recompute").stdout
    assert ir.count("kiln.recomputed") > 3 * 10
    # Training with dropout: the same weights either way.
    drop = dict(TINY, n_layer=3, resid_pdrop=0.1, embd_pdrop=0.1)
    flags = ["--steps=4", "--batch=2", "--seq=16", "--seed=3", "--no-fuse"]
    a, _ = train(tmp_path, *flags, data=text_sample(), cfg=drop, name="ka")
    b, _ = train(tmp_path, *flags, "--recompute", data=text_sample(), cfg=drop,
                 name="kb")
    assert (a / "ck" / "step-00000004" / "model.safetensors").read_bytes() == \
        (b / "ck" / "step-00000004" / "model.safetensors").read_bytes()


def test_compiled_train_step_matches_the_host_optimizer(tmp_path):
    """kiln train on a .kiln compiles train_step (forward, backward, global
    norm and in-place kiln.optimizer_update ops) and runs it; an artifact
    with only loss_grad is trained with the host-side update. Same seed,
    same weights, byte for byte, for AdamW and for SGD (dropout and clipping
    on)."""
    cfg = dict(TINY, resid_pdrop=0.1, embd_pdrop=0.1)
    chars = sorted(set(text_sample()))
    for opt in ("adamw", "sgd"):
        flags = ["--steps=5", "--batch=2", "--seq=16", "--seed=9",
                 f"--optimizer={opt}", "--clip=0.5", "--weight-decay=0.1",
                 "--lr=1e-2"]
        a, _ = train(tmp_path, *flags, data=text_sample(), cfg=cfg,
                     name=f"compiled-{opt}")
        art = tmp_path / f"host-{opt}.kart"
        kiln("compile", EXAMPLES / "gpt2.kiln", *defines(cfg), "-D",
             f"vocab_size={len(chars)}", "--grad=loss", "--seed=9", "-o", art)
        assert "fn train_step" not in kiln("inspect", art).stdout
        d = tmp_path / f"host-{opt}"
        d.mkdir()
        (d / "data.txt").write_text(text_sample())
        kiln("train", art, f"--data={d / 'data.txt'}",
             f"--checkpoint-dir={d / 'ck'}", *flags)
        got = (d / "ck" / "step-00000005" / "model.safetensors").read_bytes()
        want = (a / "ck" / "step-00000005" / "model.safetensors").read_bytes()
        assert got == want, opt
    art = a / "ck" / "gpt2-trained.kart"
    assert "fn train_step(" in kiln("inspect", art).stdout


def test_progress_bar_on_a_terminal_and_lines_otherwise(tmp_path):
    """On a terminal stderr shows one progress bar redrawn in place; piped,
    plain lines. --plot writes a valid PNG."""
    import pty
    d = tmp_path / "tty"
    d.mkdir()
    (d / "data.txt").write_text(text_sample())
    args = [KILN, "train", EXAMPLES / "gpt2.kiln", f"--data={d / 'data.txt'}",
            *defines(TINY), "--steps=10", "--batch=2", "--seq=16",
            "--eval-every=5", f"--plot={d / 'loss.png'}", "-o", d / "m.kart"]
    master, slave = pty.openpty()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the terminal closed
            break
        if not data:
            break
        chunks.append(data)
    assert p.wait(timeout=120) == 0
    tty = b"".join(chunks).decode()
    assert "\rstep 3/10 [" in tty and "] loss " in tty and "ETA" in tty
    assert "tok/s" in tty
    piped = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0
    assert "\r" not in piped.stderr
    assert "step 5/10 loss" in piped.stderr and " eval " in piped.stderr
    png = (d / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (900, 540)
