"""kiln train on pre-tokenized data (--data=FILE.bin: nanoGPT's uint16
arrays, 32-bit arrays, llm.c's headered files) and with real tokenizers
(--tokenizer=gpt2:DIR).

The token files are written here from the ids `kiln tokenize` gives for a
text (the tokenizer itself is checked against the gpt-3-encoder package in
test_gpt2_tokenizer.py); training on each must give weights identical, bit
for bit, to training on the text with the same tokenizer and seeds."""
import struct
import subprocess

import numpy as np
import pytest

from kiln_cli import EXAMPLES, KILN, data_file, kiln, read_safetensors

TINY = ["-D", "n_positions=16", "-D", "n_embd=16", "-D", "n_layer=1",
        "-D", "n_head=2", "-D", "resid_pdrop=0", "-D", "embd_pdrop=0"]
STEPS = ["--steps=3", "--batch=2", "--seq=8", "--eval-fraction=0.2",
         "--seed=5"]
TEXT = ("It was the best of times, it was the worst of times, it was the age "
        "of wisdom, it was the age of foolishness, it was the epoch of belief, "
        "it was the epoch of incredulity, it was the season of Light, it was "
        "the season of Darkness. ") * 2


def gpt2_dir():
    return data_file("gpt2-tokenizer/encoder.json").parent


def train(out, data, *flags, check=True):
    r = subprocess.run([KILN, "train", EXAMPLES / "gpt2.kiln", f"--data={data}",
                        *TINY, *STEPS, f"--checkpoint-dir={out}",
                        "-o", out / "t.kart", *map(str, flags)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode >= 0, f"kiln crashed with signal {-r.returncode}"
    if check:
        assert r.returncode == 0, r.stderr
    return r


def weights(out):
    latest = (out / "latest").read_text().strip()
    return read_safetensors(out / latest / "model.safetensors")


def llmc(ids, version):
    header = np.zeros(256, np.int32)
    header[:3] = [20240520, version, len(ids)]
    dtype = np.uint16 if version == 1 else np.uint32
    return header.tobytes() + np.asarray(ids, dtype).tobytes()


@pytest.fixture(scope="module")
def ids():
    out = kiln("tokenize", f"--tokenizer=gpt2:{gpt2_dir()}", TEXT).stdout
    return [int(t) for t in out.split()]


def test_token_files_train_like_the_text(tmp_path, ids):
    tok = f"--tokenizer=gpt2:{gpt2_dir()}"
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    r = train(tmp_path / "text", text, tok)
    assert "gpt2 tokenizer (50257 tokens)" in r.stderr
    want = weights(tmp_path / "text")
    files = {"nanogpt.bin": (np.asarray(ids, np.uint16).tobytes(), []),
             "wide.bin": (np.asarray(ids, np.uint32).tobytes(),
                          ["--token-dtype=uint32"]),
             "llmc1.bin": (llmc(ids, 1), []),
             "llmc2.bin": (llmc(ids, 2), [])}
    for name, (data, flags) in files.items():
        (tmp_path / name).write_bytes(data)
        r = train(tmp_path / name[:-4], tmp_path / name, tok, *flags)
        assert "gpt2 tokenizer (50257 tokens)" in r.stderr
        assert ("llm.c, " in r.stderr) == name.startswith("llmc")
        got = weights(tmp_path / name[:-4])
        for k in want:
            assert np.array_equal(got[k], want[k]), (name, k)
    # The trained artifact carries the tokenizer: it prints GPT-2 text.
    out = kiln("generate", tmp_path / "nanogpt" / "t.kart",
               "--prompt=It was", "--max-tokens=3", "--seed=1").stdout
    assert out.startswith("It was")


def test_token_file_without_a_tokenizer(tmp_path, ids):
    """Ids alone: vocab_size comes from -D (or the model's default); the
    artifact then has no tokenizer and generates ids."""
    small = [i % 40 for i in ids]
    (tmp_path / "t.bin").write_bytes(np.asarray(small, np.uint16).tobytes())
    r = train(tmp_path / "o", tmp_path / "t.bin", "-D", "vocab_size=40")
    assert "no tokenizer" in r.stderr and "uint16 ids" in r.stderr
    out = kiln("generate", tmp_path / "o" / "t.kart", "--prompt-ids=1,2",
               "--max-tokens=2", "--seed=1").stdout.split()
    assert len(out) == 4 and all(0 <= int(t) < 40 for t in out)


def test_token_file_errors(tmp_path, ids):
    def fails(data, *flags, expect, rc=1):
        p = tmp_path / "bad.bin"
        p.write_bytes(data)
        r = train(tmp_path / "o", p, *flags, check=False)
        assert r.returncode == rc, r.stderr
        assert expect in r.stderr, r.stderr
    good = np.asarray(ids, np.uint16)
    # An id beyond the vocabulary, named by byte offset.
    bad = good.copy()
    bad[7] = 60000
    fails(bad.tobytes(), expect="id 60000 at byte offset 14 is outside the "
          "model's vocabulary (vocab_size=50257) (ids were read as uint16")
    fails(good.tobytes()[:-1], expect="not a whole number of 2-byte ids")
    fails(b"", expect="holds no tokens")
    fails(llmc(ids, 3), expect="llm.c token file version 3 at byte offset 4")
    data = bytearray(llmc(ids, 1))
    data[8:12] = struct.pack("<i", len(ids) + 5)
    fails(bytes(data), expect=f"the llm.c header counts {len(ids) + 5} tokens "
          "at byte offset 8, but the file holds")
    fails(llmc(ids, 2), "--token-dtype=uint16",
          expect="the llm.c header says uint32 ids")
    fails(np.asarray([0xFFFFFFFF] * 4, np.uint32).tobytes(),
          "--token-dtype=uint32", expect="is larger than any vocabulary")
    # Too few tokens for the windows.
    fails(good[:5].tobytes(), expect="too few for windows of 8 tokens")
    # Usage errors: a text tokenizer for ids, a width for text.
    fails(good.tobytes(), "--tokenizer=char", rc=2,
          expect="--tokenizer=char is built from text")
    p = tmp_path / "t.txt"
    p.write_text(TEXT)
    r = train(tmp_path / "o", p, "--token-dtype=uint32", check=False)
    assert r.returncode == 2 and "--token-dtype applies to token files" in \
        r.stderr
    # A tokenizer that cannot be read.
    r = train(tmp_path / "o", p, f"--tokenizer=wordpiece:{gpt2_dir()}",
              check=False)
    assert r.returncode == 1 and "no wordpiece tokenizer" in r.stderr
