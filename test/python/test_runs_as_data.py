"""Runs as data: `kiln train --config`, checkpoints that record the run's
settings so that `--resume` needs nothing else, one checkpoint format for
`kiln train` and kiln.Trainer (each resumes the other's), kiln.TextDataset
giving the CLI's batches (so the two give the same weights, bit for bit),
kiln.train, --quiet/--verbose, and the history a Trainer leaves."""
import json

import numpy as np
import pytest

import kiln
from kiln_cli import EXAMPLES, data_file, kiln as cli

MODEL = str(EXAMPLES / "gpt2.kiln")
SHAPE = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 16}
# Dropout on, so the dropout seed is part of what must agree.
CFG = dict(model=MODEL, steps=6, batch=2, seq=16, lr=0.003, warmup=1,
           define=dict(SHAPE, resid_pdrop=0.1), seed=7)


def text_file(tmp_path):
    # Real text (several thousand characters), not one repeated window.
    p = tmp_path / "text.txt"
    p.write_text(data_file("tinyshakespeare.txt").read_text()[:6000])
    return p


def config(tmp_path, **changes):
    c = dict(CFG, data=str(text_file(tmp_path)), **changes)
    p = tmp_path / "run.json"
    p.write_text(json.dumps(c, indent=2))
    return p


def weights(path):
    return kiln.load(path).parameters()


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def python_run(tmp_path, steps, *, stop=None, resume_from=None):
    """The config's run in Python: TextDataset + compile + Trainer."""
    data = kiln.TextDataset(tmp_path / "text.txt", seq=16, batch=2, seed=7)
    model = kiln.compile(MODEL, grad="loss", seed=7,
                         defines=dict(CFG["define"],
                                      vocab_size=data.vocab_size))
    trainer = kiln.Trainer(model, kiln.AdamW(lr=0.003), warmup=1,
                           total_steps=steps, seed=7)
    if resume_from:
        trainer.load_checkpoint(resume_from, data=data)
    while trainer.step_count < (stop or steps):
        trainer.step(data.next_batch())
    return model, trainer, data


def test_config_file_runs_like_the_command_line(tmp_path):
    cfg = config(tmp_path, output=str(tmp_path / "a.kart"))
    cli("train", f"--config={cfg}")
    c = dict(CFG, data=str(tmp_path / "text.txt"))
    args = [MODEL, f"--data={c['data']}", "--steps=6", "--batch=2", "--seq=16",
            "--lr=0.003", "--warmup=1", "--seed=7",
            "-o", tmp_path / "b.kart"]
    for k, v in c["define"].items():
        args += ["-D", f"{k}={v}"]
    cli("train", *args)
    assert_same(weights(tmp_path / "a.kart"), weights(tmp_path / "b.kart"))
    # The command line wins over the file.
    cli("train", f"--config={cfg}", "--steps=2", "-o", tmp_path / "c.kart")
    assert "2 steps of 2x16" in kiln.load(tmp_path / "c.kart").history[-1]


def test_python_dataset_and_trainer_give_the_cli_weights(tmp_path):
    cfg = config(tmp_path, output=str(tmp_path / "cli.kart"))
    cli("train", f"--config={cfg}")
    model, _, data = python_run(tmp_path, 6)
    assert_same(weights(tmp_path / "cli.kart"), model.parameters())
    # The data agree as well: the first batch is the CLI's first batch.
    fresh = kiln.TextDataset(tmp_path / "text.txt", seq=16, batch=2, seed=7)
    b = fresh.next_batch()
    assert b["tokens"].shape == (2, 16) and b["tokens"].dtype == np.int32
    np.testing.assert_array_equal(b["tokens"][:, 1:], b["targets"][:, :-1])


def test_kiln_train_from_python_reads_the_same_file(tmp_path):
    cfg = config(tmp_path, output=str(tmp_path / "cli.kart"))
    cli("train", f"--config={cfg}")
    model = kiln.train(config=cfg, output=tmp_path / "py.kart", quiet=True)
    assert_same(weights(tmp_path / "cli.kart"), model.parameters())
    with pytest.raises(ValueError, match="training failed"):
        kiln.train(config=cfg, steps=0)


def test_checkpoint_records_settings_and_resume_needs_nothing_else(tmp_path):
    cfg = config(tmp_path, **{"checkpoint-dir": str(tmp_path / "ck"),
                              "output": str(tmp_path / "out.kart")})
    cli("train", f"--config={cfg}", "--stop-after=3")
    state = json.loads((tmp_path / "ck" / "step-00000003" /
                        "trainer_state.json").read_text())
    s = state["settings"]
    assert s["model"] == MODEL and s["steps"] == 6 and s["seed"] == 7
    assert s["warmup"] == 1 and s["lr"] == 0.003 and s["batch"] == 2
    assert s["define"]["n_embd"] == "32" and "stop-after" not in s
    r = cli("train", "--resume", f"--checkpoint-dir={tmp_path / 'ck'}")
    assert "resumed from" in r.stderr and "at step 3" in r.stderr
    cli("train", f"--config={cfg}", "-o", tmp_path / "straight.kart",
        f"--checkpoint-dir={tmp_path / 'ck2'}")
    assert_same(weights(tmp_path / "out.kart"),
                weights(tmp_path / "straight.kart"))
    # A setting that would change the data order is refused, with the fix.
    r = cli("train", "--resume", f"--checkpoint-dir={tmp_path / 'ck'}",
            "--batch=4", check=False)
    assert r.returncode == 1
    assert ("the checkpoint was made with batch=2, this run has batch=4; "
            "leave --batch out to resume with the checkpoint's") in r.stderr


def test_python_checkpoint_resumes_in_kiln_train_and_back(tmp_path):
    config(tmp_path)
    straight = tmp_path / "straight.kart"
    cli("train", f"--config={tmp_path / 'run.json'}", "-o", straight)
    # Python -> CLI: three steps here, three in kiln train.
    _, trainer, data = python_run(tmp_path, 6, stop=3)
    trainer.save_checkpoint(tmp_path / "pyck", data=data)
    cli("train", "--resume", f"--checkpoint-dir={tmp_path / 'pyck'}",
        "-o", tmp_path / "resumed.kart")
    assert_same(weights(straight), weights(tmp_path / "resumed.kart"))
    # CLI -> Python: three steps in kiln train, three here.
    cli("train", f"--config={tmp_path / 'run.json'}", "--stop-after=3",
        f"--checkpoint-dir={tmp_path / 'click'}")
    model, trainer, _ = python_run(tmp_path, 6,
                                   resume_from=tmp_path / "click")
    assert trainer.step_count == 6
    assert_same(weights(straight), model.parameters())


def test_python_checkpoint_without_data_says_what_is_missing(tmp_path):
    config(tmp_path)
    _, trainer, _ = python_run(tmp_path, 6, stop=1)
    trainer.save_checkpoint(tmp_path / "ck")
    r = cli("train", "--resume", f"--checkpoint-dir={tmp_path / 'ck'}",
            f"--data={tmp_path / 'text.txt'}", "--seq=16", check=False)
    assert r.returncode == 1
    assert "missing or invalid 'step' or 'data_rng'" in r.stderr
    assert "save_checkpoint is given data=TextDataset" in r.stderr


def test_dataset_must_match_the_checkpoint(tmp_path):
    config(tmp_path)
    _, trainer, data = python_run(tmp_path, 6, stop=1)
    trainer.save_checkpoint(tmp_path / "ck", data=data)
    other = kiln.TextDataset(tmp_path / "text.txt", seq=8, batch=2, seed=7)
    with pytest.raises(ValueError, match="made with seq=16, this dataset "
                                         "has seq=8"):
        trainer.load_checkpoint(tmp_path / "ck", data=other)


@pytest.mark.parametrize("text, message", [
    ('{"stepz": 3}', r'run.json:1:2: unknown option "stepz" for '
     r"'kiln train'; did you mean \"steps\"\?"),
    ('[1, 2]', r"run.json:1:1: expected a JSON object of options"),
    ('{\n  "lr": "fast"}', r"--lr expects a number, got 'fast'\n"
     r'.*"lr" is set at .*run.json:2:9'),
    ('{"config": "other.json"}', r"a config file cannot name another"),
    ('{"resume": 3}', r'"resume" is a switch: true or false, got \'3\''),
    ('{"steps": [1, {"a": 1}]}', r'"steps" expects a string, a number or '
     r"true/false here, got an object"),
    ('{"steps": 3', r"run.json: expected .,. or .}. at byte offset 11"),
])
def test_config_file_errors_name_the_place(tmp_path, text, message):
    (tmp_path / "run.json").write_text(text)
    r = cli("train", MODEL, "--data=x.txt", f"--config={tmp_path / 'run.json'}",
            check=False)
    assert r.returncode == 2, r.stderr
    import re
    assert re.search(message, r.stderr, re.S), r.stderr


def test_missing_config_file(tmp_path):
    r = cli("train", f"--config={tmp_path / 'none.json'}", check=False)
    assert r.returncode == 2 and "none.json" in r.stderr


def test_quiet_and_verbose(tmp_path):
    cfg = config(tmp_path, steps=2, output=str(tmp_path / "o.kart"),
                 metrics=str(tmp_path / "m.jsonl"))
    r = cli("train", f"--config={cfg}", "--quiet")
    assert r.stderr == ""
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 2
    r = cli("train", f"--config={cfg}", "--verbose", "--log-every=100")
    assert '"lr": 0.003' in r.stderr  # the settings
    assert "step 1/2" in r.stderr and "step 2/2" in r.stderr
    r = cli("train", f"--config={cfg}", "--quiet", "--verbose", check=False)
    assert r.returncode == 2 and "contradict" in r.stderr


def test_trainer_saves_leave_a_history_line(tmp_path):
    config(tmp_path)
    model, _, _ = python_run(tmp_path, 6, stop=2)
    model.save(tmp_path / "m.kart")
    h = kiln.load(tmp_path / "m.kart").history
    assert h[0].startswith("kiln.compile('gpt2.kiln'")
    assert h[1] == ("kiln.Trainer(AdamW(lr=0.003)): 2 steps of 2x16, to "
                    "step 2; final loss " + h[1].split()[-1])
    model.save(tmp_path / "again.kart")  # nothing new: no new line
    assert kiln.load(tmp_path / "again.kart").history == h


def test_text_dataset_errors(tmp_path):
    text = text_file(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such data file"):
        kiln.TextDataset(tmp_path / "none.txt")
    with pytest.raises(ValueError, match="seq must be an integer from 1"):
        kiln.TextDataset(text, seq=0)
    with pytest.raises(ValueError, match="eval_fraction must be in"):
        kiln.TextDataset(text, eval_fraction=0.95)
    with pytest.raises(ValueError, match="too few for windows"):
        kiln.TextDataset(text, seq=100000)
    ids = tmp_path / "ids.bin"
    np.arange(100, dtype=np.uint16).tofile(ids)
    with pytest.raises(ValueError, match="is built from text"):
        kiln.TextDataset(ids, tokenizer="char")
    with pytest.raises(ValueError, match="token_dtype applies to token files"):
        kiln.TextDataset(text, token_dtype="uint16")
    d = kiln.TextDataset(ids, seq=8, batch=1)
    assert d.vocab_size == 100 and d.tokenizer is None
    with pytest.raises(ValueError, match="id 99 at byte offset 198 is "
                                         "outside the tokenizer's 55 tokens"):
        kiln.TextDataset(ids, tokenizer=kiln.TextDataset(text).tokenizer)
    no_eval = kiln.TextDataset(text, eval_fraction=0)
    with pytest.raises(ValueError, match="nothing is held out"):
        no_eval.eval_batch(0)
