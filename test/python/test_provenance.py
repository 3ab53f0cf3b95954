"""An artifact records how it was made (kart Program.history): the
`kiln.compile(...)` call with its non-default arguments, kept by save and
load, and each `kiln train` run after it (test/tools/conventions.test
checks the CLI's lines)."""
import kiln
from kiln_cli import EXAMPLES, kiln as kiln_cli

SMALL = dict(n_layer=1, n_embd=16, n_head=2, n_positions=16)


def test_python_compile_is_recorded_and_kept(tmp_path):
    m = kiln.compile(EXAMPLES / "gpt2.kiln", defines=SMALL, grad="loss",
                     seed=5)
    # Files by their names: an artifact does not carry the directories of
    # the machine that made it.
    assert m.history == [
        f"kiln.compile('gpt2.kiln', defines={SMALL!r}, seed=5, grad='loss')"]
    path = tmp_path / "m.kart"
    m.save(path)
    assert kiln.load(path).history == m.history
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    out = tmp_path / "t.kart"
    kiln_cli("train", path, f"--data={text}", "--steps=1", "--seq=8",
             "--batch=2", "-o", out)
    history = kiln.load(out).history
    assert history[0] == m.history[0]
    assert history[1].startswith("kiln train m.kart --data=t.txt --steps=1")
    assert str(tmp_path) not in "".join(history)
    assert ": 1 step of 2x8, adamw lr 0.001; final loss " in history[1]


def test_model_text_is_not_copied_into_the_history():
    m = kiln.compile("model tiny(n = 2) {\n  param w: f32[n] = zeros()\n"
                     "  fn f(x: f32[n]) -> f32[n] { return x * w }\n}\n")
    assert m.history == ["kiln.compile(<model text>)"]
