"""SentencePiece models through libsentencepiece: a unigram and a BPE model
trained here with `spm_train` on tinyshakespeare, encoded by kiln and by
`spm_encode` (the reference), carried in an artifact, and broken models
rejected."""
import random
import shutil
import subprocess
import sys

import pytest

from kiln_cli import BUILD, EXAMPLES, KILN, data_file, kiln as kiln_cli

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402


def texts():
    lines = data_file("tinyshakespeare.txt").read_text().splitlines()
    rng = random.Random(11)
    picked = [l for l in rng.sample(lines, 220) if l.strip()]
    return picked + [
        "Hello, World!", "naïve café", "日本語 text", "emoji 😀",
        "  two  spaces", "tab\tseparated", "numbers 12345 3.14",
        "ROMEO: What light through yonder window breaks?",
    ]


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def model(request, tmp_path_factory):
    if not shutil.which("spm_train"):
        pytest.fail("spm_train is missing: scripts/install-deps.sh installs "
                    "Debian's sentencepiece")
    d = tmp_path_factory.mktemp("spm-" + request.param)
    prefix = d / "tokenizer"
    subprocess.run(
        ["spm_train", f"--input={data_file('tinyshakespeare.txt')}",
         f"--model_prefix={prefix}", "--vocab_size=500",
         f"--model_type={request.param}", "--character_coverage=1.0",
         "--byte_fallback=true", "--input_sentence_size=20000",
         "--shuffle_input_sentence=false", "--num_threads=2"],
        check=True, capture_output=True, timeout=300)
    return d / "tokenizer.model"


def spm_encode(model, lines):
    r = subprocess.run(["spm_encode", f"--model={model}",
                        "--output_format=id"], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, check=True, timeout=120)
    return [[int(x) for x in line.split()]
            for line in r.stdout.split("\n")[:len(lines)]]


def test_agrees_with_spm_encode(model):
    tok = kiln.load_tokenizer(model)
    assert tok.kind == "sentencepiece" and len(tok) == 500
    assert (tok.bos, tok.eos) == (1, 2)
    lines = texts()
    want = spm_encode(model, lines)
    wrong = [(t, tok.encode(t), [tok.bos] + w)
             for t, w in zip(lines, want) if tok.encode(t) != [tok.bos] + w]
    print(f"sentencepiece ({model.parent.name}): {len(lines) - len(wrong)} "
          f"of {len(lines)} strings agree with spm_encode")
    assert not wrong, wrong[:3]


def test_decoding(model):
    tok = kiln.load_tokenizer(model)
    for t in texts()[:50]:
        ids = tok.encode(t)
        assert tok.decode(ids) == " ".join(t.split()) or tok.decode(ids) == t
    # Streaming pieces add up to the whole (byte tokens of 😀 included).
    ids = tok.encode("emoji 😀 and words")
    assert tok.decode(ids) == "emoji 😀 and words"


def test_carried_in_an_artifact(tmp_path, model):
    art = tmp_path / "sp.kart"
    kiln_cli("compile", EXAMPLES / "llama.kiln", f"--tokenizer={model}",
             "-o", art)
    assert "tokenizer: sentencepiece, 500 tokens" in \
        kiln_cli("inspect", art).stdout
    tok = kiln.load(art).tokenizer
    direct = kiln.load_tokenizer(model.parent)
    for t in texts()[:20]:
        assert tok.encode(t) == direct.encode(t)
    # Random weights may print byte tokens that are not whole characters.
    r = subprocess.run([KILN, "generate", str(art), "--prompt=ROMEO:",
                        "--max-tokens=5", "--seed=3"], capture_output=True,
                       check=True, timeout=120)
    assert r.stdout.startswith(b"ROMEO:")


def test_broken_model(tmp_path, model):
    bad = tmp_path / "broken.model"
    bad.write_bytes(model.read_bytes()[:300])
    r = subprocess.run([KILN, "tokenize", f"--tokenizer={bad}", "x"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{bad}: not a SentencePiece model" in r.stderr
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        kiln.load_tokenizer(bad)
