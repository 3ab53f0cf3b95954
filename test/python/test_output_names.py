"""Results carry names from the model through the artifact: a plain name
returned (`return logits`), else the function's name for its one result;
`loss_grad` returns the loss and "<parameter>.grad" per trainable
parameter; `train_step` loss and grad_norm; the derived `decode` the
forward's names and T5's `prepare` memory.N. `kiln run` prints and writes
them by name (.npy per result in --output-dir, one .npz), and Python's
`model.gradients()` gives {parameter name: array} in the order and with
the values of `loss_grad`."""
import numpy as np
import pytest

import kiln
from kiln_cli import EXAMPLES, kiln as kiln_cli

SMALL = dict(n_layer=1, n_embd=16, n_head=2, vocab_size=11, n_positions=8)

TWO = """
model two(n = 4) {
  dim B
  param w: f32[n] = normal(1.0)
  fn both(x: f32[B, n]) -> (f32[B, n], f32[B, n]) {
    y = x * w
    return y, y
  }
  fn pair(x: f32[B, n]) -> (f32[B, n], f32[n]) {
    scaled = x * w
    return scaled, w * 2.0
  }
}
"""


def outputs(model, fn):
    info = next(f for f in model._impl.functions() if f["name"] == fn)
    return [o["name"] for o in info["outputs"]]


@pytest.fixture(scope="module")
def gpt2():
    return kiln.compile(EXAMPLES / "gpt2.kiln", defines=SMALL, grad="loss")


def test_gpt2_names(gpt2):
    assert outputs(gpt2, "forward") == ["logits"]
    assert outputs(gpt2, "loss") == ["loss"]
    assert outputs(gpt2, "decode") == ["logits"]
    params = list(gpt2.parameters())
    assert outputs(gpt2, "loss_grad") == \
        ["loss"] + [p + ".grad" for p in params]


def test_repeated_and_computed_results(tmp_path):
    src = tmp_path / "two.kiln"
    src.write_text(TWO)
    m = kiln.compile(src)
    # The same name twice: the second falls back, so names stay unique; an
    # expression has no name of its own among several results.
    assert outputs(m, "both") == ["y", "result1"]
    assert outputs(m, "pair") == ["scaled", "result1"]


def test_t5_prepare_names():
    t5 = kiln.compile(EXAMPLES / "t5.kiln", defines=dict(
        vocab_size=23, d_model=8, d_kv=4, d_ff=16, num_layers=1,
        num_decoder_layers=1, num_heads=2))
    assert outputs(t5, "forward") == ["logits"]
    assert outputs(t5, "prepare") == ["memory.0", "memory.1"]


def test_gradients_by_parameter_name(gpt2):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 11, (2, 5)).astype(np.int32)
    targets = rng.integers(0, 11, (2, 5)).astype(np.int32)
    loss, grads = gpt2.gradients(tokens=tokens, targets=targets)
    whole = gpt2.run("loss_grad", tokens=tokens, targets=targets)
    assert loss == pytest.approx(float(whole[0]))
    assert list(grads) == list(gpt2.parameters())
    for g, w in zip(grads.values(), whole[1:]):
        np.testing.assert_array_equal(g, w)
    for name, p in gpt2.parameters().items():
        assert grads[name].shape == p.shape
    with pytest.raises(ValueError, match='compile it with grad="lss"'):
        gpt2.gradients("lss", tokens=tokens, targets=targets)


def test_cli_writes_results_by_name(tmp_path):
    art = tmp_path / "g.kart"
    kiln_cli("compile", EXAMPLES / "gpt2.kiln",
             *[f"-D{k}={v}" for k, v in SMALL.items()], "--grad=loss",
             "-o", art)
    tok = tmp_path / "tok.npy"
    np.save(tok, np.array([[1, 2, 3]], np.int32))
    feeds = [f"--input=tokens={tok}", f"--input=targets={tok}"]
    out = kiln_cli("run", art, "--function=loss", *feeds).stdout
    assert out.startswith("loss: f32[] = ")
    # One .npz with every result, by name.
    npz = tmp_path / "all.npz"
    kiln_cli("run", art, "--function=loss_grad", *feeds, f"--output={npz}")
    z = np.load(npz)
    m = kiln.load(art)
    assert list(z.keys()) == ["loss"] + [p + ".grad" for p in m.parameters()]
    whole = m.run("loss_grad", tokens=np.load(tok), targets=np.load(tok))
    for k, w in zip(z.keys(), whole):
        np.testing.assert_array_equal(z[k], w)
    # A directory of NAME.npy files.
    d = tmp_path / "grads"
    kiln_cli("run", art, "--function=loss_grad", *feeds, f"--output-dir={d}")
    np.testing.assert_array_equal(np.load(d / "wte.weight.grad.npy"),
                                  z["wte.weight.grad"])
    assert len(list(d.iterdir())) == len(whole)
    # Misuse.
    r = kiln_cli("run", art, "--function=loss_grad", *feeds,
                 f"--output={npz}", f"--output={tmp_path / 'x.npy'}",
                 check=False)
    assert r.returncode == 2
    assert "a .npz archive takes all the results; give it as the only " \
        "--output" in r.stderr
    r = kiln_cli("run", art, *feeds[:1], f"--output={npz}",
                 f"--output-dir={d}", check=False)
    assert r.returncode == 2
    assert "give --output or --output-dir, not both" in r.stderr


def test_train_step_names(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question. " * 20)
    out = tmp_path / "t.kart"
    kiln_cli("train", EXAMPLES / "gpt2.kiln",
             *[f"-D{k}={v}" for k, v in SMALL.items() if k != "vocab_size"],
             f"--data={text}", "--steps=1", "--batch=2", "--seq=8", "-o", out)
    assert outputs(kiln.load(out), "train_step") == ["loss", "grad_norm"]
