"""Errors name options the way the caller spells them: the libraries say
an option once (runtime::optionRef) and Python shows `grad="loss"` where the
command line shows `--grad=loss`. No Python error mentions a command-line
flag, and no message carries the markers."""
import re

import numpy as np
import pytest

import kiln
from kiln_cli import EXAMPLES, kiln as cli

GPT2 = str(EXAMPLES / "gpt2.kiln")
SMALL = dict(n_layer=1, n_embd=16, n_head=2, n_positions=8, vocab_size=11)


def python_error(f, kind=Exception):
    with pytest.raises(kind) as e:
        f()
    text = str(e.value)
    assert not re.search(r"(^|[\s(])--?[a-zA-Z]", text), text  # no flags
    assert not re.search(r"[\x1d-\x1f]", text), repr(text)
    return text


def cli_error(*args):
    r = cli(*args, check=False)
    assert r.returncode != 0
    assert not re.search(r"[\x1d-\x1f]", r.stderr), repr(r.stderr)
    return r.stderr


def test_training_a_model_without_its_gradient(tmp_path):
    m = kiln.compile(GPT2, defines=SMALL)
    assert 'compile it with grad="loss"' in python_error(
        lambda: kiln.Trainer(m))
    m.save(tmp_path / "m.kart")
    (tmp_path / "t.txt").write_text("abcdefghij" * 20)
    assert "compile it with --grad=loss" in cli_error(
        "train", tmp_path / "m.kart", f"--data={tmp_path / 't.txt'}",
        "--steps=1", "--seq=8", "--eval-fraction=0")


def test_compile_option_errors():
    assert 'differentiate as well (grad="loss")' in python_error(
        lambda: kiln.compile(GPT2, defines=SMALL, recompute=True),
        kiln.CompileError)
    assert 'a quantization (quantize="nf4")' in python_error(
        lambda: kiln.compile(GPT2, defines=SMALL, quantize_params=["h.*"]),
        kiln.CompileError)
    assert "pattern as well (attention=\"sliding_window:512\")" in \
        python_error(lambda: kiln.compile(GPT2, defines=SMALL,
                                          attention_blocks=["h.0"]),
                     kiln.CompileError)


def test_hyperparameter_errors_name_defines(tmp_path):
    text = python_error(lambda: kiln.compile(
        GPT2, defines=dict(SMALL, n_lay=3)), kiln.CompileError)
    assert text.startswith("error: defines={'n_lay': 3}: model 'gpt2' has "
                           "no hyperparameter 'n_lay'")
    assert "-D n_lay=3: model 'gpt2' has no hyperparameter" in cli_error(
        "compile", GPT2, "-D", "n_lay=3")
    big = dict(SMALL, n_embd=100000, n_layer=200)
    text = python_error(lambda: kiln.compile(GPT2, defines=big),
                        kiln.CompileError)
    assert ('keep larger weights beside it with external_weights='
            '"FILE.safetensors"); check the hyperparameters (defines=)'
            in text)
    err = cli_error("compile", GPT2, "-D", "n_embd=100000", "-D",
                    "n_layer=200", "-o", tmp_path / "x.kart")
    assert ("keep larger weights beside it with "
            "--external-weights=FILE.safetensors); check the "
            "hyperparameters (-D)") in err


def test_runtime_errors_in_python_words(tmp_path):
    m = kiln.compile(GPT2, defines=SMALL)
    assert 'compile it with lora="rank=8"' in python_error(
        lambda: m.save_adapter(tmp_path / "a"))
    m.save(tmp_path / "m.kart")
    (tmp_path / "w.safetensors").write_bytes(b"")
    assert "compiled with external_weights=" in python_error(
        lambda: kiln.load(tmp_path / "m.kart",
                          weights_file=tmp_path / "w.safetensors"))
    bert = kiln.compile(EXAMPLES / "bert.kiln", defines=dict(
        num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
        intermediate_size=32, vocab_size=11))
    assert "kiln.compile(..., decode=True) says why" in python_error(
        lambda: bert.kv_cache(1, 8))
    (tmp_path / "bad.txt").write_bytes(b"abc\xff\xfe" * 10)
    assert 'use tokenizer="byte" for binary data' in python_error(
        lambda: kiln.TextDataset(tmp_path / "bad.txt", seq=4))
    (tmp_path / "odd.bin").write_bytes(b"\x01\x00\x02")
    assert "is the width right? token_dtype=" in python_error(
        lambda: kiln.TextDataset(tmp_path / "odd.bin", seq=1))


def test_the_same_errors_on_the_command_line(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"abc\xff\xfe" * 10)
    assert "use --tokenizer=byte for binary data" in cli_error(
        "train", GPT2, f"--data={tmp_path / 'bad.txt'}", "--steps=1")
    (tmp_path / "odd.bin").write_bytes(b"\x01\x00\x02")
    assert "is the width right? --token-dtype" in cli_error(
        "train", GPT2, f"--data={tmp_path / 'odd.bin'}", "--steps=1",
        "-D", "vocab_size=8")
    assert "--recompute applies to the gradient function" in cli_error(
        "compile", GPT2, "--recompute")
