"""The Python package as people expect to use it: a version, a clean
namespace, FileNotFoundError for a missing artifact, functions and inputs
that suggest the right name, positional inputs, safe conversions of ids
and masks (range-checked) and a hint for the rest, and a readable
summary of a model."""
import re

import numpy as np
import pytest

import kiln
from kiln_cli import EXAMPLES

SMALL = dict(n_layer=1, n_embd=16, n_head=2, vocab_size=11, n_positions=8)


@pytest.fixture(scope="module")
def gpt2():
    return kiln.compile(EXAMPLES / "gpt2.kiln", defines=SMALL, grad="loss")


def test_version_and_namespace():
    major, minor, patch = map(int, kiln.__version__.split("."))
    assert (major, minor, patch) >= (0, 1, 0)
    assert "__version__" in dir(kiln)
    public = [n for n in dir(kiln) if not n.startswith("__")]
    assert public == sorted(kiln.__all__)
    for hidden in ("np", "os", "Optional", "json", "tempfile"):
        assert hidden not in public


def test_missing_artifact_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such artifact"):
        kiln.load(tmp_path / "missing.kart")
    with pytest.raises(FileNotFoundError, match="no such artifact"):
        kiln.load(tmp_path)  # a directory


def test_names_are_suggested(gpt2):
    x = np.zeros((1, 3), np.int32)
    with pytest.raises(ValueError, match=re.escape(
            "no function 'forwrd' (did you mean 'forward'?); its functions: "
            "forward, loss, loss_grad")):
        gpt2.run("forwrd", tokens=x)
    with pytest.raises(TypeError, match=re.escape(
            "'forward' has no input 'tokns' (did you mean 'tokens'?); its "
            "inputs: tokens")):
        gpt2.forward(tokns=x)
    with pytest.raises(TypeError, match="input 'tokens' of 'forward' is "
                       "given twice"):
        gpt2.forward(x, tokens=x)
    with pytest.raises(TypeError, match="'forward' takes 1 input.s. "
                       ".tokens., got 2 positional"):
        gpt2.forward(x, x)


def test_positional_inputs_and_safe_conversions(gpt2):
    ids = np.array([[1, 2, 3]], np.int32)
    want = gpt2.forward(tokens=ids)
    np.testing.assert_array_equal(gpt2.forward(ids), want)
    np.testing.assert_array_equal(gpt2.forward(ids.astype(np.int64)), want)
    np.testing.assert_array_equal(gpt2.forward([[1, 2, 3]]), want)
    loss = gpt2.loss(ids, ids)
    assert loss == pytest.approx(float(gpt2.run("loss", tokens=ids,
                                                targets=ids)))
    with pytest.raises(ValueError, match="input 'tokens' of 'forward' holds "
                       "4294967296, outside int32"):
        gpt2.forward(np.array([[1, 2**32]], np.int64))
    with pytest.raises(TypeError, match="input 'tokens' of 'forward' is "
                       "float64, the model takes int32: use "
                       ".astype.np.int32."):
        gpt2.forward(np.array([[1.0, 2.0]]))


def test_float_and_bool_inputs(tmp_path, gpt2):
    src = tmp_path / "m.kiln"
    src.write_text("model m(n = 3) {\n  dim B\n  param w: f32[n] = normal(1.0)\n"
                   "  fn f(x: f32[B, n]) -> f32[B, n] { return x * w }\n}\n")
    m = kiln.compile(src)
    x32 = np.ones((2, 3), np.float32)
    want = m.f(x=x32)
    # A list of numbers is converted; so are integer arrays (exact).
    np.testing.assert_array_equal(m.f([[1.0, 1.0, 1.0], [1, 1, 1]]), want)
    np.testing.assert_array_equal(m.f(np.ones((2, 3), np.int64)), want)
    # A float64 array would lose precision: refused, with the fix.
    with pytest.raises(TypeError, match=re.escape(
            "input 'x' of 'f' is float64, the model takes float32: use "
            ".astype(np.float32)")):
        m.f(np.ones((2, 3)))
    # A bool mask where the model takes int32 (0 and 1).
    mask = np.array([[True, False, True]])
    np.testing.assert_array_equal(gpt2.forward(mask),
                                  gpt2.forward(mask.astype(np.int32)))


def test_summary(gpt2):
    n = sum(p.size for p in gpt2.parameters().values())
    assert gpt2.num_parameters() == n
    assert gpt2.num_parameters(trainable_only=True) == n
    text = repr(gpt2)
    assert text.splitlines()[0] == \
        f"kiln.Model 'gpt2': {n:,} parameters in 16 tensors"
    assert "  forward(tokens: int32[B, T]) -> logits: float32[B, T, 11]" in \
        text


def test_hyperparameters_keep_their_kinds(tmp_path):
    m = kiln.compile(EXAMPLES / "llama.kiln",
                     defines=dict(num_hidden_layers=1, hidden_size=32))
    hp = m.hyperparameters()
    assert type(hp["num_hidden_layers"]) is int and \
        hp["num_hidden_layers"] == 1
    assert type(hp["tie_word_embeddings"]) is bool
    assert type(hp["rope_theta"]) is float and hp["rope_theta"] == 10000.0
    assert type(hp["rms_norm_eps"]) is float
    m.save(tmp_path / "l.kart")
    again = kiln.load(tmp_path / "l.kart").hyperparameters()
    assert again == hp
    assert all(type(again[k]) is type(v) for k, v in hp.items())
