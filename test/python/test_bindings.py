"""The Python package (`import kiln`): results equal the CLI's bit for bit,
numerics match PyTorch, and every error path raises the documented
exception with a useful message."""
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import reference_models as ref
from kiln_cli import (BUILD, EXAMPLES, KILN, data_file, kiln as kiln_cli,
                      read_safetensors)
from test_cpu_numerics import GPT2, parameter_table, random_weights

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402

TINY = dict(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)


def defines(cfg):
    return [a for k, v in cfg.items() for a in ("-D", f"{k}={v}")]


@pytest.fixture(scope="module")
def model():
    return kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY, seed=3,
                        grad="loss")


def tokens(shape=(2, 5), seed=0):
    return np.random.default_rng(seed).integers(0, 50, shape).astype(np.int32)


def test_results_equal_the_cli_bit_for_bit(tmp_path, model):
    art = tmp_path / "m.kart"
    kiln_cli("compile", EXAMPLES / "gpt2.kiln", *defines(TINY), "--seed=3",
             "--grad=loss", "-o", art)
    x, y = tokens(), tokens(seed=1)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    kiln_cli("run", art, f"--input=tokens=@{tmp_path / 'x.npy'}",
             f"--output=@{tmp_path / 'logits.npy'}")
    assert np.array_equal(model.forward(tokens=x),
                          np.load(tmp_path / "logits.npy"))
    outs = [tmp_path / f"g{i}.npy" for i in range(17)]
    kiln_cli("run", art, "--function=loss_grad",
             f"--input=tokens=@{tmp_path / 'x.npy'}",
             f"--input=targets=@{tmp_path / 'y.npy'}",
             *[f"--output=@{o}" for o in outs])
    got = model.run("loss_grad", tokens=x, targets=y)
    assert len(got) == 17
    for g, o in zip(got, outs):
        assert np.array_equal(g, np.load(o))
    # The same artifact loaded through Python.
    loaded = kiln.load(art)
    assert np.array_equal(loaded.forward(tokens=x), model.forward(tokens=x))
    assert loaded.name == "gpt2"
    assert [f["name"] for f in loaded.functions()] == \
        ["forward", "loss", "loss_grad", "decode"]


def test_reference_kernels_per_call(tmp_path, model):
    """kernels="reference" (Python) and --kernels=reference (CLI) run the
    naive kernels for that call only: they agree with the fast kernels to
    float32 rounding, the CLI and Python agree bit for bit on each, and the
    fast results are unchanged after a reference call."""
    x, y = tokens(), tokens(seed=1)
    fast = model.run("loss_grad", tokens=x, targets=y)
    ref = model.run("loss_grad", kernels="reference", tokens=x, targets=y)
    again = model.run("loss_grad", kernels="fast", tokens=x, targets=y)
    differs = False
    for f, r, a in zip(fast, ref, again):
        assert np.array_equal(f, a)
        np.testing.assert_allclose(f, r, rtol=1e-4, atol=1e-5)
        differs |= not np.array_equal(f, r)
    assert differs, "the reference kernels are other code than the fast ones"
    art = tmp_path / "m.kart"
    kiln_cli("compile", EXAMPLES / "gpt2.kiln", *defines(TINY), "--seed=3",
             "-o", art)
    np.save(tmp_path / "x.npy", x)
    for kind in ("fast", "reference"):
        kiln_cli("run", art, f"--kernels={kind}",
                 f"--input=tokens=@{tmp_path / 'x.npy'}",
                 f"--output=@{tmp_path / (kind + '.npy')}")
        assert np.array_equal(np.load(tmp_path / (kind + ".npy")),
                              model.forward(tokens=x, kernels=kind))
    with pytest.raises(ValueError, match="kernels must be 'fast' or "
                                         "'reference', got 'slow'"):
        model.forward(tokens=x, kernels="slow")


def test_gpt2_matches_pytorch(tmp_path):
    w = random_weights(parameter_table("gpt2.kiln", GPT2), 1)
    m = kiln.compile(EXAMPLES / "gpt2.kiln", defines=GPT2)
    m.load_weights(w)
    x = np.random.default_rng(2).integers(0, 97, (2, 11)).astype(np.int32)
    want = ref.gpt2(w, GPT2, x).numpy()
    assert np.max(np.abs(m.forward(tokens=x) - want)) <= 1e-4


def test_ir_stages(model):
    assert "func.func @loss_grad" in model.ir("mlir")
    assert "kiln.kernel" in model.ir("lowered")
    assert model.ir("params").splitlines()[-1].startswith("total: ")
    assert "model gpt2" in model.ir("ast")
    with pytest.raises(ValueError, match="unknown stage 'llvm'"):
        model.ir("llvm")
    with pytest.raises(ValueError, match="made by kiln.compile"):
        m2 = kiln.Model(model._impl)
        m2.ir("mlir")


def test_compile_from_text_and_errors(tmp_path):
    m = kiln.compile("model m() {\n  param w: f32[3] = ones()\n"
                     "  fn f(x: f32[3]) -> f32[3] {\n    return x * w\n  }\n}\n")
    assert np.array_equal(m.f(x=np.arange(3, dtype=np.float32)),
                          np.arange(3, dtype=np.float32))
    bad = tmp_path / "bad.kiln"
    bad.write_text("model m() {\n  fn f(x: f32[2]) -> f32[2] {\n"
                   "    return x + y\n  }\n}\n")
    with pytest.raises(kiln.CompileError) as e:
        kiln.compile(bad)
    cli = subprocess.run([KILN, "compile", bad], capture_output=True,
                         text=True)
    assert (e.value.file, e.value.line, e.value.column) == (str(bad), 3, 16)
    assert e.value.message == "unknown name 'y'; did you mean 'x'?"
    assert cli.stderr.splitlines()[0] == str(e.value)
    # Errors found by the IR verifier carry the op's own line too.
    with pytest.raises(kiln.CompileError) as e:
        kiln.compile(EXAMPLES / "gpt2.kiln", defines={"n_head": 5})
    assert e.value.file.endswith("gpt2.kiln") and e.value.line > 0
    assert "n_head" in str(e.value) or "divisible" in str(e.value)
    with pytest.raises(kiln.CompileError) as e:
        kiln.compile(EXAMPLES / "gpt2.kiln", defines={"n_layers": 2})
    assert (e.value.file, e.value.line, e.value.column) == ("", 0, 0)
    assert e.value.message.startswith(
        "defines={'n_layers': 2}: model 'gpt2' has no hyperparameter "
        "'n_layers'")
    with pytest.raises(kiln.CompileError, match="no function 'nope'"):
        kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY, grad="nope")
    with pytest.raises(FileNotFoundError, match="no such model file"):
        kiln.compile(tmp_path / "missing.kiln")
    with pytest.raises(kiln.CompileError,
                       match='target="tpu": a target is cpu, cuda or cpu,cuda'):
        kiln.compile(EXAMPLES / "gpt2.kiln", target="tpu")


def test_run_errors_name_the_input(model):
    x = tokens()
    with pytest.raises(ValueError, match="missing input 'tokens'"):
        model.forward()
    # Like any Python call: an unknown keyword is a TypeError.
    with pytest.raises(TypeError, match="'forward' has no input 'ids'"):
        model.forward(tokens=x, ids=x)
    with pytest.raises(TypeError, match=r"input 'tokens' of 'forward' is "
                       r"float32, the model takes int32: use "
                       r"\.astype\(np\.int32\)"):
        model.forward(tokens=x.astype(np.float32))
    with pytest.raises(ValueError, match="input 'tokens' has rank 1, "
                                         "expected 2"):
        model.forward(tokens=x[0])
    with pytest.raises(ValueError, match="input 'targets'"):
        model.loss(tokens=x, targets=tokens((2, 4)))
    with pytest.raises(AttributeError, match="no function or attribute"):
        model.backward
    with pytest.raises(RuntimeError, match="outside"):
        model.forward(tokens=x + 100)  # ids beyond the vocabulary
    # Contiguous inputs are passed without a copy (read-only ones too);
    # non-contiguous ones are copied into the runtime's layout.
    frozen = x.copy()
    frozen.setflags(write=False)
    assert np.array_equal(model.forward(tokens=frozen), model.forward(tokens=x))
    assert np.array_equal(frozen, x)  # never written
    wide = tokens((2, 10))
    assert np.array_equal(model.forward(tokens=wide[:, ::2]),
                          model.forward(tokens=np.ascontiguousarray(
                              wide[:, ::2])))


def test_weights_and_artifacts(tmp_path, model):
    p = model.parameters()
    assert set(p) >= {"wte.weight", "h.0.ln_1.bias"}
    assert p["wte.weight"].shape == (50, 16)
    p["wte.weight"][0, 0] = 123.0  # a copy: the model is not changed
    assert model.parameters()["wte.weight"][0, 0] != 123.0
    model.save_weights(tmp_path / "w.safetensors")
    other = kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY, seed=99)
    x = tokens()
    assert not np.array_equal(other.forward(tokens=x), model.forward(tokens=x))
    other.load_weights(tmp_path / "w.safetensors")
    assert np.array_equal(other.forward(tokens=x), model.forward(tokens=x))
    other.save(tmp_path / "o.kart")
    assert np.array_equal(kiln.load(tmp_path / "o.kart").forward(tokens=x),
                          model.forward(tokens=x))
    with pytest.raises(ValueError, match="missing parameter 'wpe.weight'"):
        other.load_weights({"wte.weight": p["wte.weight"]})
    bad = dict(p)
    bad["wte.weight"] = p["wte.weight"][:10]
    with pytest.raises(ValueError, match="parameter 'wte.weight' is "
                                         r"f32\[10, 16\]"):
        other.load_weights(bad)
    with pytest.raises(ValueError, match="'extra' is not a parameter"):
        other.load_weights(dict(p, extra=np.zeros(3, np.float32)))
    with pytest.raises(FileNotFoundError, match="missing.kart: no such "
                       "artifact"):
        kiln.load(tmp_path / "missing.kart")
    (tmp_path / "junk.kart").write_bytes(b"not an artifact at all")
    with pytest.raises(RuntimeError, match="not a .kart artifact"):
        kiln.load(tmp_path / "junk.kart")


def test_the_gil_is_released_while_kiln_computes():
    m = kiln.compile(EXAMPLES / "gpt2.kiln", defines=dict(
        vocab_size=500, n_positions=256, n_embd=256, n_layer=4, n_head=4))
    x = np.zeros((4, 256), np.int32)
    m.forward(tokens=x)  # warm up
    ticks = 0
    done = threading.Event()

    def spin():
        nonlocal ticks
        while not done.is_set():
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    t0 = time.perf_counter()
    for _ in range(3):
        m.forward(tokens=x)
    elapsed = time.perf_counter() - t0
    done.set()
    t.join()
    # A held GIL would leave the spinning thread almost no time to run.
    assert ticks > 1000 * elapsed, (ticks, elapsed)


def test_generate_equals_the_cli():
    data = data_file("stories260K.bin")
    m = kiln.compile(EXAMPLES / "llama.kiln", weights=data)
    art_ids = kiln_cli("generate", "--max-tokens=12", "--temperature=0",
                       *[], _artifact(m)).stdout.split()
    got = m.generate([1], max_tokens=12, temperature=0)
    # The CLI prints the prompt's ids first.
    assert got.dtype == np.int32
    assert [1] + got.tolist() == [int(t) for t in art_ids]
    cli = kiln_cli("generate", _artifact(m), "--max-tokens=10",
                   "--temperature=0.8", "--top-p=0.9", "--seed=5",
                   "--prompt-ids=1,403").stdout.split()
    got = m.generate([1, 403], 10, temperature=0.8, top_p=0.9, seed=5)
    assert [1, 403] + got.tolist() == [int(t) for t in cli]
    with pytest.raises(ValueError, match="top_p in"):
        m.generate([1], 3, top_p=0)
    with pytest.raises(ValueError, match="the prompt is empty"):
        m.generate([], 3)


_ARTIFACTS = {}


def _artifact(m):
    """The model saved as a .kart for the CLI."""
    import tempfile
    if id(m) not in _ARTIFACTS:
        d = tempfile.mkdtemp()
        path = f"{d}/m.kart"
        m.save(path)
        _ARTIFACTS[id(m)] = path
    return _ARTIFACTS[id(m)]


def test_trainer_equals_kiln_train(tmp_path):
    """kiln.Trainer and `kiln train` (same text, seed and settings; the
    17-character text has one window, so the batches are known) end with
    the same weights bit for bit; checkpoints save and resume exactly."""
    text = "hello kiln world!"
    chars = sorted(set(text))
    cfg = dict(n_positions=16, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.1,
               embd_pdrop=0.1, vocab_size=len(chars))
    (tmp_path / "d.txt").write_text(text)
    kiln_cli("train", EXAMPLES / "gpt2.kiln", f"--data={tmp_path / 'd.txt'}",
             *defines({k: v for k, v in cfg.items() if k != "vocab_size"}),
             "--steps=5", "--batch=2", "--seq=16", "--eval-fraction=0",
             "--lr=1e-2", "--warmup=2", "--clip=0.5", "--weight-decay=0.1",
             "--seed=4", f"--checkpoint-dir={tmp_path / 'ck'}")
    want = read_safetensors(tmp_path / "ck" / "step-00000005" /
                            "model.safetensors")
    ids = np.array([chars.index(c) for c in text], np.int32)
    batch = {"tokens": np.stack([ids[:16]] * 2),
             "targets": np.stack([ids[1:17]] * 2)}

    def fresh():
        m = kiln.compile(EXAMPLES / "gpt2.kiln", defines=cfg, seed=4,
                         grad="loss")
        return m, kiln.Trainer(m, kiln.AdamW(lr=1e-2, weight_decay=0.1),
                               clip=0.5, warmup=2, total_steps=5, seed=4)

    m, t = fresh()
    losses = [t.step(batch) for _ in range(3)]
    assert losses[-1] < losses[0] and t.step_count == 3
    saved = t.save_checkpoint(tmp_path / "py")
    assert saved.name == "step-00000003"
    for _ in range(2):
        t.step(batch)
    got = m.parameters()
    assert all(np.array_equal(got[k], want[k]) for k in want)
    m2, t2 = fresh()
    t2.load_checkpoint(tmp_path / "py")
    assert t2.step_count == 3
    for _ in range(2):
        t2.step(batch)
    assert all(np.array_equal(m2.parameters()[k], got[k]) for k in got)
    assert t.evaluate(batch) == t2.evaluate(batch)
    # Errors.
    plain = kiln.compile(EXAMPLES / "gpt2.kiln", defines=cfg)
    with pytest.raises(ValueError, match="no 'loss_grad' function"):
        kiln.Trainer(plain)
    with pytest.raises(ValueError, match="missing input 'targets'"):
        t.step({"tokens": batch["tokens"]})
    with pytest.raises(TypeError, match="kiln.AdamW or kiln.SGD"):
        kiln.Trainer(m, optimizer="adam")
    with pytest.raises(ValueError, match="model.safetensors: cannot open"):
        t.load_checkpoint(tmp_path / "nothing")


def test_trainer_uses_the_compiled_update(tmp_path):
    """kiln.Trainer recompiles a model from kiln.compile(grad=...) with the
    one compile driver's train_step for its optimizer (as kiln train does),
    keeping the current weights; a model loaded from an artifact without
    train_step takes the host-side update. Both end bit for bit equal."""
    cfg = dict(TINY, resid_pdrop=0.1, embd_pdrop=0.1)
    rng = np.random.default_rng(0)
    batch = {"tokens": rng.integers(0, 50, (2, 8), dtype=np.int32),
             "targets": rng.integers(0, 50, (2, 8), dtype=np.int32)}
    m = kiln.compile(EXAMPLES / "gpt2.kiln", defines=cfg, seed=2, grad="loss")
    m.save(tmp_path / "host.kart")
    m.load_weights({k: v * 0.5 for k, v in m.parameters().items()})
    host = kiln.load(tmp_path / "host.kart")
    host.load_weights(m.parameters())
    for opt in (kiln.AdamW(lr=1e-2, weight_decay=0.1), kiln.SGD(lr=1e-2)):
        t = kiln.Trainer(m, opt, clip=0.5, total_steps=3, seed=1)
        assert t.compiled_step
        assert "train_step" in [f["name"] for f in m.functions()]
        h = kiln.Trainer(host, opt, clip=0.5, total_steps=3, seed=1)
        assert not h.compiled_step
        for _ in range(3):
            assert t.step(batch) == h.step(batch)
        assert all(np.array_equal(m.parameters()[k], host.parameters()[k])
                   for k in m.parameters())
    assert "fn train_step(" not in m.ir("mlir")  # IR stages as compiled
    # Options the CLI rejects are rejected here too.
    with pytest.raises(kiln.CompileError, match="recompute applies to the "
                       "gradient function"):
        kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY, recompute=True)
    with pytest.raises(kiln.CompileError,
                       match="no function 'lss' to differentiate; it has: "
                             "forward, loss"):
        kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY, grad="lss")


def test_cli_compiles_the_train_step_ahead_of_time(tmp_path):
    """kiln compile --grad=loss --train-step, with kiln train's optimizer
    flags, puts train_step in the artifact (for programs that train with
    the runtime alone); one call of it updates the weights exactly as
    kiln.Trainer's host-side update with the same settings (AdamW, SGD)."""
    rng = np.random.default_rng(3)
    batch = {"tokens": rng.integers(0, 50, (2, 8), dtype=np.int32),
             "targets": rng.integers(0, 50, (2, 8), dtype=np.int32)}
    cases = (("adamw", ["--weight-decay=0.1", "--beta2=0.99", "--eps=1e-6"],
              kiln.AdamW(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.99),
                         eps=1e-6)),
             ("sgd", ["--optimizer=sgd", "--momentum=0.8"],
              kiln.SGD(lr=1e-2, momentum=0.8)))
    for name, flags, opt in cases:
        art = tmp_path / f"{name}.kart"
        kiln_cli("compile", EXAMPLES / "gpt2.kiln",
                 *defines(dict(TINY, resid_pdrop=0.0, embd_pdrop=0.0)),
                 "--grad=loss", "--seed=2", "--train-step", "--clip=0.05",
                 *flags, "-o", art)
        compiled, host = kiln.load(art), kiln.load(art)
        assert "train_step" in [f["name"] for f in compiled.functions()]
        t = kiln.Trainer(host, opt, clip=0.05, total_steps=2,
                         min_lr_ratio=1.0)
        assert not t.compiled_step  # a loaded artifact: the host's update
        for step in (1, 2):  # the second sees momentum, betas, eps
            loss, norm = compiled.run("train_step", **batch,
                                      lr=np.float32(1e-2),
                                      step=np.float32(step))
            assert float(loss) == t.step(batch)
            assert float(norm) > 0.05  # clipped
        for k, v in host.parameters().items():
            np.testing.assert_array_equal(compiled.parameters()[k], v,
                                          err_msg=f"{name} {k}")
    # Without --grad there is no gradient to step with; optimizer flags
    # without --train-step change nothing, and say so.
    r = kiln_cli("compile", EXAMPLES / "gpt2.kiln", *defines(TINY),
                 "--train-step", "-o", tmp_path / "x.kart", check=False)
    assert r.returncode == 2 and "add --grad=FN" in r.stderr, r.stderr
    r = kiln_cli("compile", EXAMPLES / "gpt2.kiln", *defines(TINY),
                 "--grad=loss", "--beta1=0.8", "-o", tmp_path / "y.kart")
    assert "--beta1" in r.stderr and "without --train-step" in r.stderr, \
        r.stderr


def test_external_weights_from_python(tmp_path):
    """kiln.compile(external_weights=F) writes the weights to F, as kiln
    compile --external-weights does, and reads them from there."""
    w = tmp_path / "w.safetensors"
    ext = kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY, seed=3,
                       external_weights=w)
    emb = kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY, seed=3)
    assert set(read_safetensors(w)) == set(emb.parameters())
    x = np.array([[1, 2, 3]], np.int32)
    assert np.array_equal(ext.forward(tokens=x), emb.forward(tokens=x))


def test_the_python_example_runs():
    """examples/python/gpt2_small.py: GPT-2 small compiled, run, trained and
    sampled through the Python API."""
    import os
    env = dict(os.environ, PYTHONPATH=str(BUILD / "python"))
    r = subprocess.run([sys.executable, EXAMPLES / "python" / "gpt2_small.py",
                        "--steps=1", "--batch=2", "--seq=16", "--tokens=2"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "compiled gpt2: 124,439,808 parameters" in r.stdout
    assert "step 1/1: loss" in r.stdout
    assert "generated ids after" in r.stdout


@pytest.mark.parametrize("arch", ["llama", "bert", "t5"])
def test_other_architectures_match_pytorch(arch):
    from test_cpu_numerics import BERT, LLAMA, T5
    rng = np.random.default_rng(7)
    cfg = {"llama": LLAMA, "bert": BERT, "t5": T5}[arch]
    w = random_weights(parameter_table(f"{arch}.kiln", cfg), 8)
    m = kiln.compile(EXAMPLES / f"{arch}.kiln", defines=cfg)
    m.load_weights(w)
    V = cfg["vocab_size"]
    if arch == "llama":
        x = rng.integers(0, V, (2, 9)).astype(np.int32)
        got, want = m.forward(tokens=x), ref.llama(w, cfg, x)
    elif arch == "bert":
        ids = rng.integers(0, V, (2, 10)).astype(np.int32)
        types = rng.integers(0, 2, (2, 10)).astype(np.int32)
        mask = np.ones((2, 10), np.int32)
        mask[1, 6:] = 0
        got = m.forward(input_ids=ids, token_type_ids=types,
                        attention_mask=mask)
        want = ref.bert(w, cfg, ids, types, mask)
    else:
        ids = rng.integers(0, V, (2, 13)).astype(np.int32)
        mask = np.ones((2, 13), np.int32)
        mask[0, 9:] = 0
        dec = rng.integers(0, V, (2, 6)).astype(np.int32)
        got = m.forward(input_ids=ids, attention_mask=mask,
                        decoder_input_ids=dec)
        want = ref.t5(w, cfg, ids, mask, dec)
    assert np.max(np.abs(got - want.numpy())) <= 1e-4


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_no_leaks_across_1000_compile_and_run_cycles():
    """RSS after 1,000 compile + load + run cycles stays within a few MiB of
    RSS after the first 100 (a leak of one artifact per cycle would add
    tens of MiB)."""
    src = ("model m(n = 64) {\n  param w: f32[n, n] = normal(0.1)\n"
           "  fn f(x: f32[4, n]) -> f32[4, n] {\n    return tanh(x @ w)\n"
           "  }\n}\n")
    x = np.ones((4, 64), np.float32)
    for i in range(1000):
        m = kiln.compile(src, seed=i)
        y = m.f(x=x)
        assert y.shape == (4, 64)
        if i == 99:
            base = rss_bytes()
    growth = rss_bytes() - base
    print(f"RSS growth over 900 cycles: {growth / 2**20:.2f} MiB")
    assert growth < 8 * 2**20, growth / 2**20
