"""Sparse attention through the command line and Python: --attention gives
every attention op (and its gradient) the pattern, equal to writing it in
the model; the layout kiln inspect draws is the one the kernels compute;
bad patterns, functions and block selectors are usage errors naming the
option."""
import sys

import numpy as np
import pytest

from kiln_cli import BUILD, EXAMPLES, data_file, kiln as kiln_cli

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402

TINY = dict(vocab_size=50, n_positions=64, n_embd=16, n_layer=2, n_head=2)


def defines(cfg):
    return [a for k, v in cfg.items() for a in ("-D", f"{k}={v}")]


def tokens(shape=(2, 40), seed=0):
    return np.random.default_rng(seed).integers(0, 50, shape).astype(np.int32)


def test_attention_option_sets_every_pattern_and_gradient():
    r = kiln_cli("compile", EXAMPLES / "gpt2.kiln", *defines(TINY),
                 "--grad=loss", "--attention=sliding_window:8",
                 "--emit=mlir")
    ops = [line for line in r.stdout.splitlines()
           if "kiln.attention" in line]
    # forward, loss, and loss_grad's forward and backward
    assert len(ops) == 4 * TINY["n_layer"]
    assert ops and all("#kiln.pattern<sliding_window, window = 8>" in op
                       for op in ops)
    grads = [op for op in ops if "kiln.attention_grad" in op]
    assert len(grads) == TINY["n_layer"]
    # Restricted to one layer and one function.
    r = kiln_cli("compile", EXAMPLES / "gpt2.kiln", *defines(TINY),
                 "--attention=strided:4", "--attention-blocks=h.1",
                 "--attention-functions=forward", "--emit=mlir")
    marked = [line for line in r.stdout.splitlines()
              if "#kiln.pattern<strided, stride = 4>" in line]
    assert len(marked) == 1


def test_attention_option_equals_the_pattern_in_the_model(tmp_path):
    text = (EXAMPLES / "gpt2.kiln").read_text()
    assert "causal = true)" in text
    edited = tmp_path / "gpt2sw.kiln"
    edited.write_text(text.replace(
        "causal = true)", "causal = true,\n pattern = sliding_window(8))"))
    written = kiln.compile(edited, defines=TINY, seed=3, grad="loss")
    optioned = kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY, seed=3,
                            grad="loss", attention="sliding_window:8")
    dense = kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY, seed=3)
    x = tokens()
    a, b = written.run("forward", tokens=x), optioned.run("forward", tokens=x)
    assert np.array_equal(a, b)
    # The window changes the result: positions past it see fewer keys.
    d = dense.run("forward", tokens=x)
    assert np.array_equal(a[:, :8], d[:, :8])
    assert not np.allclose(a[:, 8:], d[:, 8:], atol=1e-4)
    ga = written.run("loss_grad", tokens=x, targets=x)
    gb = optioned.run("loss_grad", tokens=x, targets=x)
    for u, v in zip(ga, gb):
        assert np.array_equal(u, v)


def test_inspect_draws_the_layout_the_kernels_compute(tmp_path):
    art = tmp_path / "sw.kart"
    kiln_cli("compile", EXAMPLES / "gpt2.kiln",
             *defines(dict(TINY, n_positions=1024)),
             "--attention=sliding_window:128",
             "-o", art)
    out = kiln_cli("inspect", art, "--attention-layout=1024").stdout
    # Causal, window 128, blocks of 64: query block 0 sees block 0, block 1
    # sees 0 and 1, each later one its own and the two before: 1 + 2 + 14 * 3
    # = 45 of 16 * 16 blocks; the window's far edge and the diagonal are
    # masked inside (1 + 1 + 14 * 2 = 30).
    assert "sliding_window(window = 128), causal, 2 heads" in out
    assert "every head: 45 of 256 blocks (17.6%), 30 masked inside" in out
    rows = [line.strip() for line in out.splitlines()
            if line.startswith("    ") and set(line.strip()) <= set("#+.")]
    assert len(rows) == 16 * TINY["n_layer"] * 2  # forward and loss
    assert rows[0] == "+" + "." * 15
    assert rows[1] == "#+" + "." * 14
    assert rows[5] == "..." + "+#+" + "." * 10
    m = kiln.load(art)
    layouts = m.attention_layout(1024)
    assert len(layouts) == TINY["n_layer"] * 2
    head = layouts[0]["heads"][0]
    assert (head["computed"], head["masked"]) == (45, 30)
    assert head["layout"].splitlines()[5] == rows[5]
    assert layouts[0]["blocks"] == (16, 16)


def test_random_blocks_differ_per_head(tmp_path):
    art = tmp_path / "bb.kart"
    kiln_cli("compile", EXAMPLES / "gpt2.kiln",
             *defines(dict(TINY, n_positions=2048)),
             "--attention=block_sparse:block=64,local=1,global=1,random=3,"
             "seed=4", "-o", art)
    layouts = kiln.load(art).attention_layout(2048)
    heads = layouts[0]["heads"]
    assert len(heads) == TINY["n_head"]
    assert heads[0]["layout"] != heads[1]["layout"]
    for h in heads:
        # Each query block: itself and its neighbours (causal: the one
        # before), the global block 0, and up to 3 random blocks before it.
        rows = h["layout"].splitlines()
        assert len(rows) == 32
        for qb, row in enumerate(rows):
            computed = sum(c != "." for c in row)
            assert computed == min(qb + 1, 2 + 1 + 3), (qb, row)


@pytest.mark.parametrize("args,message", [
    (["--attention=sliding_window:0"],
     "--attention=sliding_window:0: sliding_window: 'window' must be "
     "positive, got 0"),
    (["--attention=longformer:4"], "unknown attention pattern 'longformer'"),
    (["--attention=block_sparse:block=64,random=2"],
     "'random' blocks need a 'seed'"),
    (["--attention=fixed:8,2,1"], "fixed: too many values in '1'"),
    (["--attention=strided:x"], "'stride' must be an integer, got 'x'"),
    (["--attention-blocks=h.0"], "give the pattern too"),
    (["--attention=strided:4", "--attention-blocks=h.x"],
     "--attention-blocks: block selector 'h.x' is not h, h.3 or h.0-5"),
])
def test_bad_attention_options_are_usage_errors(args, message):
    r = kiln_cli("compile", EXAMPLES / "gpt2.kiln", *defines(TINY), *args,
                 "--emit=mlir", check=False)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr and "Assertion" not in r.stderr


def test_selection_errors_name_what_is_missing():
    r = kiln_cli("compile", EXAMPLES / "gpt2.kiln", *defines(TINY),
                 "--attention=strided:4", "--attention-functions=nope",
                 "--emit=mlir", check=False)
    assert r.returncode == 1
    assert ("the model has no function 'nope' to give an attention pattern; "
            "it has: forward, loss") in r.stderr
    r = kiln_cli("compile", EXAMPLES / "gpt2.kiln", *defines(TINY),
                 "--attention=strided:4", "--attention-blocks=h.9",
                 "--emit=mlir", check=False)
    assert r.returncode == 1
    assert "no attention op is in the selected functions and blocks" in \
        r.stderr
    with pytest.raises(kiln.CompileError, match="'window' must be positive"):
        kiln.compile(EXAMPLES / "gpt2.kiln", defines=TINY,
                     attention="sliding_window:-3")
    r = kiln_cli("train", EXAMPLES / "gpt2.kiln",
                 f"--data={data_file('tinyshakespeare.txt')}",
                 "--steps=1", "--attention=nope", check=False)
    assert r.returncode == 2 and "unknown attention pattern 'nope'" in \
        r.stderr


def test_training_with_a_window_keeps_it(tmp_path):
    """kiln train --attention trains through the compiled step, the loss
    falls, and the trained artifact still carries the window."""
    text = data_file("tinyshakespeare.txt").read_text()[:20000]
    (tmp_path / "data.txt").write_text(text)
    cfg = dict(n_positions=64, n_embd=32, n_layer=2, n_head=2)
    out = tmp_path / "sw.kart"
    kiln_cli("train", EXAMPLES / "gpt2.kiln",
             f"--data={tmp_path / 'data.txt'}", *defines(cfg),
             "--steps=40", "--batch=8", "--seq=64", "--lr=3e-3",
             "--attention=sliding_window:16", f"--metrics={tmp_path}/m.jsonl",
             "-o", out)
    import json
    losses = [json.loads(line)["loss"] for line in
              (tmp_path / "m.jsonl").read_text().splitlines()
              if "loss" in line]
    assert losses[-1] < losses[0] - 0.5, losses
    layouts = kiln.load(out).attention_layout(64)
    assert layouts and all(
        lay["pattern"] == "sliding_window(window = 16)" and lay["causal"]
        for lay in layouts)


def test_bert_with_a_window_and_a_global_cls_token():
    """A BERT-style encoder with Longformer attention: a window and a
    global first token ([CLS]), with padding. A window wider than the
    sequence is exactly dense attention; a narrow one changes the result,
    and the [CLS] row and column of the layout are computed whole."""
    cfg = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=128)
    T = 96
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 60, (2, T)).astype(np.int32)
    types = np.zeros((2, T), np.int32)
    mask = np.ones((2, T), np.int32)
    mask[1, 70:] = 0
    inputs = dict(input_ids=ids, token_type_ids=types, attention_mask=mask)
    bert = EXAMPLES / "bert.kiln"
    dense = kiln.compile(bert, defines=cfg, seed=2)
    wide = kiln.compile(bert, defines=cfg, seed=2,
                        attention="sliding_window:200,global_tokens=1")
    narrow = kiln.compile(bert, defines=cfg, seed=2, grad="loss",
                          attention="sliding_window:8,global_tokens=1")
    d = dense.run("forward", **inputs)
    assert np.array_equal(wide.run("forward", **inputs), d)
    n = narrow.run("forward", **inputs)
    assert np.isfinite(n).all() and not np.allclose(n, d, atol=1e-3)
    labels = np.where(rng.random((2, T)) < 0.15, ids, -100).astype(np.int32)
    loss, *grads = narrow.run("loss_grad", labels=labels, **inputs)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads)
    layout = narrow.attention_layout(T)[0]
    assert layout["pattern"] == \
        "sliding_window(window = 8, global_tokens = 1)"
    assert not layout["causal"]
    rows = layout["heads"][0]["layout"].splitlines()
    # 96 tokens: two 64-blocks. Block (0, 0) holds [CLS] and the window;
    # block (0, 1): [CLS] sees every key, others only the window's edge;
    # block (1, 0): every query sees [CLS] (key 0).
    assert all(c != "." for row in rows for c in row)
