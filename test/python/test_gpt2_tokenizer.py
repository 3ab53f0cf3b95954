"""GPT-2's byte-level BPE against an independent implementation: the
`gpt-3-encoder` npm package (a port of OpenAI's encoder.py) run by Node.js,
installed in the test's own temporary folder. The same ids from
encoder.json + vocab.bpe, vocab.json + merges.txt and tokenizer.json, and
malformed files rejected with the file and the entry named."""
import json
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from kiln_cli import BUILD, EXAMPLES, KILN, data_file, kiln as kiln_cli

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402

# Hand-picked cases for each branch of GPT-2's pattern, then generated ones.
FIXED = [
    "", " ", "  ", "a", "Hello world", "Hello, world!", " leading space",
    "trailing space ", "two  spaces", "three   spaces x", "tab\tand\nnewline",
    "\n\n\nblank lines\n\n", "   ", "end with spaces   ",
    "it's", "It's", "IT'S", "you're we've I'm she'll he'd don't",
    "'s 't 're 've 'm 'll 'd", "''s", "rock'n'roll", "o'clock",
    "3.14159", "1,000,000", "2026-12-02", "x1y2z3", "  42  ", "0x1F",
    "½ ¾ ² ³ Ⅻ ٣ ४", "¿Qué tal?", "naïve café résumé", "Ångström",
    "ﬁ ligature", "Straße", "ΑΒΓ αβγ", "Привет мир", "שלום", "مرحبا",
    "日本語のテキスト", "中文分词测试", "한국어 텍스트", "ไทย",
    "🎉🎉", "emoji 😀 in 🚀 text", "👨‍👩‍👧 family", "flags 🇫🇷🇩🇪",
    "e\u0301 combining", "zero\u200bwidth", "non\u00a0breaking",
    "<html><body>x</body></html>", "a+b=c; d*e/f", "C++ && Rust || Go",
    "$100.00 €50 ¥30", "user@example.com", "https://x.org/a?b=c&d=e",
    "!!!???...", "---===+++", "(parens) [brackets] {braces}",
    "snake_case camelCase PascalCase", "ALLCAPS lowercase",
    "\u3000ideographic space", "em\u2003space", "line\u2028separator",
]

PIECES = [
    "the", "The", " of", "and", "'s", "'ll", "'re", "'ve", "'d", "'m", "'t",
    "don't", "123", "4567", "3.5", "1,024", " ", "  ", "   ", "\t", "\n",
    "\r\n", " \n", ".", ",", "!", "?", "...", "--", "\"", "'", "(", ")",
    "é", "ü", "ñ", "Ø", "ç", "日本", "語", "中文", "한국", "😀", "🚀", "❤️",
    "naïve", "Zürich", "Москва", "αβ", "x", "Z", "_", "#", "@", "%", "©",
    "supercalifragilistic", "tokenization", "GPT", "kiln", "½", "٣",
]


def cases():
    rng = random.Random(1202)
    out = list(FIXED)
    while len(out) < 320:
        out.append("".join(rng.choice(PIECES)
                           for _ in range(rng.randint(1, 12))))
    return out


NODE_SCRIPT = """
const {encode, decode} = require('gpt-3-encoder');
const texts = JSON.parse(require('fs').readFileSync(0, 'utf-8'));
process.stdout.write(JSON.stringify(texts.map(t => encode(t))));
"""


@pytest.fixture(scope="module")
def reference_ids(tmp_path_factory):
    """The ids gpt-3-encoder gives for cases(): installed with npm in a
    temporary folder (skips when Node.js or the npm registry is not there)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("Node.js and npm are needed for the gpt-3-encoder "
                    "reference")
    folder = tmp_path_factory.mktemp("gpt3-encoder")
    r = subprocess.run([npm, "install", "--ignore-scripts", "--no-audit",
                        "--no-fund", "--prefix", str(folder),
                        "gpt-3-encoder@1.1.4"], capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip("npm could not install gpt-3-encoder: " +
                    r.stderr.strip()[-300:])
    r = subprocess.run([node, "-e", NODE_SCRIPT], cwd=folder,
                       input=json.dumps(cases()), capture_output=True,
                       text=True, timeout=300, check=True,
                       env={"NODE_PATH": str(folder / "node_modules")})
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def gpt2_files():
    return data_file("gpt2-tokenizer/encoder.json").parent


@pytest.fixture(scope="module")
def tok(gpt2_files):
    return kiln.load_tokenizer(gpt2_files)


def test_agrees_with_gpt3_encoder(tok, reference_ids):
    texts = cases()
    agree = sum(tok.encode(t) == ids for t, ids in zip(texts, reference_ids))
    wrong = [(t, tok.encode(t), ids)
             for t, ids in zip(texts, reference_ids) if tok.encode(t) != ids]
    print(f"gpt2 BPE: {agree} of {len(texts)} strings agree with "
          f"gpt-3-encoder")
    assert not wrong, wrong[:3]
    assert len(texts) >= 300


def test_decode_gives_the_text_back(tok):
    for t in cases():
        assert tok.decode(tok.encode(t)) == t
    assert tok.decode_bytes(tok.encode("caf\u00e9")) == "caf\u00e9".encode()


def test_endoftext_is_special(tok):
    assert tok.eos == 50256 and tok.bos == -1 and len(tok) == 50257
    ids = tok.encode("one<|endoftext|>two")
    assert ids == tok.encode("one") + [50256] + tok.encode("two")
    assert tok.decode(ids) == "one<|endoftext|>two"


def hf_files(tmp_path, gpt2_files):
    """The same tokenizer in Hugging Face's layouts: vocab.json +
    merges.txt, and tokenizer.json (merges as strings and as pairs)."""
    vocab = json.loads((gpt2_files / "encoder.json").read_text())
    merges = (gpt2_files / "vocab.bpe").read_text().split("\n")[1:-1]
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "vocab.json").write_text(json.dumps(vocab))
    (hf / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) +
                                   "\n")
    tj = tmp_path / "tj"
    tj.mkdir()
    body = {
        "version": "1.0",
        "added_tokens": [{"id": 50256, "content": "<|endoftext|>",
                          "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                          "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges},
    }
    (tj / "tokenizer.json").write_text(json.dumps(body))
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    body["model"]["merges"] = [m.split(" ") for m in merges]
    (pairs / "tokenizer.json").write_text(json.dumps(body))
    return hf, tj, pairs


def test_hugging_face_layouts_give_the_same_ids(tmp_path, gpt2_files, tok):
    hf, tj, pairs = hf_files(tmp_path, gpt2_files)
    forms = [kiln.load_tokenizer(p) for p in
             (hf, hf / "merges.txt", hf / "vocab.json", tj / "tokenizer.json",
              pairs, f"gpt2:{gpt2_files}",
              gpt2_files / "vocab.bpe")]
    for t in cases()[:80] + ["x<|endoftext|>y"]:
        want = tok.encode(t)
        for f in forms:
            assert f.kind == "gpt2" and f.encode(t) == want, (f, t)


def test_kiln_tokenize_and_an_artifact_carry_it(tmp_path, gpt2_files, tok):
    text = "Hello world, it's 2026!  H\u00e9llo \u4f60\u597d \U0001f389"
    out = kiln_cli("tokenize", f"--tokenizer={gpt2_files}", text).stdout
    assert [int(x) for x in out.split()] == tok.encode(text)
    back = kiln_cli("tokenize", f"--tokenizer={gpt2_files}", "--decode",
                    out.strip()).stdout
    assert back == text + "\n"
    art = tmp_path / "gpt2.kart"
    kiln_cli("compile", EXAMPLES / "gpt2.kiln", "-D", "n_layer=1", "-D",
             "n_embd=32", "-D", "n_head=2", "-D", "n_positions=64",
             f"--tokenizer={gpt2_files}", "-o", art)
    assert "tokenizer: gpt2, 50257 tokens" in kiln_cli("inspect",
                                                        art).stdout
    model = kiln.load(art)
    assert model.tokenizer.kind == "gpt2"
    assert model.tokenizer.encode(text) == tok.encode(text)
    out = kiln_cli("tokenize", f"--tokenizer={art}", text).stdout
    assert [int(x) for x in out.split()] == tok.encode(text)
    r = kiln_cli("generate", art, "--prompt=Hello world", "--max-tokens=4",
                 "--seed=1")
    assert r.stdout.startswith("Hello world")
    copy = tmp_path / "copy.kart"
    model.save(copy)
    assert kiln.load(copy).tokenizer.encode(text) == tok.encode(text)


def test_concurrent_encoding_gives_the_sequential_ids(tok):
    texts = cases()
    want = [tok.encode(t) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(tok.encode, texts * 4))
    assert got == want * 4


def failing(spec, *fragments):
    r = subprocess.run([KILN, "tokenize", f"--tokenizer={spec}", "x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, (r.returncode, r.stderr)
    for f in fragments:
        assert f in r.stderr, r.stderr
    with pytest.raises(ValueError):
        kiln.load_tokenizer(spec)


def test_malformed_files(tmp_path, gpt2_files):
    vocab = json.loads((gpt2_files / "encoder.json").read_text())
    merges = (gpt2_files / "vocab.bpe").read_text()

    def pair(name, vocab_text, merges_text):
        d = tmp_path / name
        d.mkdir()
        (d / "vocab.json").write_text(vocab_text)
        (d / "merges.txt").write_text(merges_text)
        return d

    d = pair("syntax", '{"a": 0, "b" 1}', "")
    failing(d, f"{d}/vocab.json: expected ':' at byte offset 13")
    d = pair("array", "[1, 2]", "")
    failing(d, "vocab.json is an array, not an object of piece: id")
    d = pair("range", '{"a": 0, "b": 7}', "")
    failing(d, "the id of 'b' at byte offset 14 is not an integer in [0, 2)")
    d = pair("dup", '{"a": 0, "b": 0}', "")
    failing(d, "id 0 at byte offset 14 is given to two pieces")
    d = pair("deep", "[" * 500 + "]" * 500, "")
    failing(d, "JSON nested deeper than 128")
    d = pair("bytes", json.dumps({"a": 0}), "")
    failing(d, "the vocabulary lacks the symbol of byte 0")
    d = pair("merge-shape", json.dumps(vocab), "#version: 0.2\nĠ t\nĠ t x\n")
    failing(d, "merge 2 'Ġ t x' is not two pieces separated by one space")
    d = pair("merge-piece", json.dumps(vocab),
             "#version: 0.2\nĠ t\nqqqqq zzzzz\n")
    failing(d, "merge 2 'qqqqq zzzzz' names a piece outside the vocabulary")
    small = {k: v for k, v in vocab.items() if k != "Ġt"}
    small = {k: i for i, k in enumerate(small)}
    d = pair("merge-result", json.dumps(small), merges)
    failing(d, "merge 1 'Ġ t' makes 'Ġt', which is not in the vocabulary")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "vocab.json").write_text("{}")
    failing(lone / "vocab.json", "GPT-2's BPE needs merges.txt or vocab.bpe "
            "beside it")
    tj = tmp_path / "tj"
    tj.mkdir()
    (tj / "tokenizer.json").write_text(json.dumps(
        {"model": {"type": "Unigram", "vocab": []}}))
    failing(tj, "model type 'Unigram' is not read by kiln")
    (tj / "tokenizer.json").write_text(json.dumps(
        {"pre_tokenizer": {"type": "Metaspace"},
         "model": {"type": "BPE", "vocab": {}, "merges": []}}))
    failing(tj, "pre_tokenizer is Metaspace; kiln reads byte-level BPE")
    (tj / "tokenizer.json").write_text(json.dumps({"model": 3}))
    failing(tj, "\"model\" at byte offset 10 is a number, not an object")
    empty = tmp_path / "empty"
    empty.mkdir()
    failing(empty, "no tokenizer files in the directory")
    failing(tmp_path / "nothing",
            "nothing: cannot open the file: No such file or directory")
    failing(f"wordpiece:{gpt2_files}", "no wordpiece tokenizer files")
    failing(f"sentencepiece:{gpt2_files / 'vocab.bpe'}",
            "is a gpt2 tokenizer file, not sentencepiece")
    odd = tmp_path / "weights.npy"
    odd.write_bytes(b"\x93NUMPY")
    failing(odd, "not a tokenizer file kiln knows")


def test_kind_picks_among_a_directorys_files(tmp_path, gpt2_files):
    """A directory with a byte-level BPE tokenizer.json and a BERT
    vocab.txt: the plain directory reads tokenizer.json (searched first),
    `wordpiece:DIR` skips it for vocab.txt, `gpt2:DIR` reads it."""
    _, tj, _ = hf_files(tmp_path, gpt2_files)
    (tj / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    assert kiln.load_tokenizer(tj).kind == "gpt2"
    assert kiln.load_tokenizer(f"gpt2:{tj}").kind == "gpt2"
    wp = kiln.load_tokenizer(f"wordpiece:{tj}")
    assert wp.kind == "wordpiece" and wp.encode("hello") == [2, 4, 3]
    # Without the vocab.txt there is no wordpiece tokenizer to find.
    (tj / "vocab.txt").unlink()
    with pytest.raises(Exception, match="no wordpiece tokenizer files"):
        kiln.load_tokenizer(f"wordpiece:{tj}")
