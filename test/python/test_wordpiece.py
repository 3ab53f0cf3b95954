"""BERT's WordPiece: kiln's tokenizer against a reference written here from
BERT's tokenization.py (BasicTokenizer + WordpieceTokenizer, on Python's
unicodedata), for an uncased and a cased vocabulary built from
tinyshakespeare, from vocab.txt and from tokenizer.json."""
import json
import random
import subprocess
import sys
import unicodedata
from collections import Counter

import pytest

from kiln_cli import BUILD, KILN, data_file, kiln as kiln_cli

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# ---- the reference --------------------------------------------------------

def is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def is_control(c):
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C")


def is_punctuation(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or \
            123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or
            0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F or
            0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or
            0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokenize(text, lower):
    text = "".join(" " if is_whitespace(c) else c for c in text
                   if not (ord(c) in (0, 0xFFFD) or is_control(c)))
    text = "".join(f" {c} " if is_cjk(ord(c)) else c for c in text)
    out = []
    for word in text.split():
        if lower:
            word = word.lower()
            word = "".join(c for c in unicodedata.normalize("NFD", word)
                           if unicodedata.category(c) != "Mn")
        current = []
        for c in word:
            if is_punctuation(c):
                if current:
                    out.append("".join(current))
                out.append(c)
                current = []
            else:
                current.append(c)
        if current:
            out.append("".join(current))
    return out


def wordpiece(word, vocab):
    if len(word) > 100:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = ("##" if start else "") + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def reference_ids(text, vocab, lower):
    index = {p: i for i, p in reversed(list(enumerate(vocab)))}
    ids = [index["[CLS]"]]
    rest = text
    while rest:  # special tokens are matched whole first
        hits = [(rest.find(s), s) for s in SPECIALS if s in rest]
        at, special = min(hits) if hits else (len(rest), None)
        for word in basic_tokenize(rest[:at], lower):
            ids += [index[p] for p in wordpiece(word, index)]
        if special is None:
            break
        ids.append(index[special])
        rest = rest[at + len(special):]
    return ids + [index["[SEP]"]]


# ---- vocabularies and texts -----------------------------------------------

def build_vocab(lines, cased):
    words = Counter()
    for line in lines:
        for w in basic_tokenize(line, lower=not cased):
            words[w] += 1
    vocab = list(SPECIALS)
    chars = sorted({c for w in words for c in w} | set("éüñçøåßαβγ中文日本"))
    vocab += chars + ["##" + c for c in chars]
    for w, _ in words.most_common(1500):
        if w not in vocab:
            vocab.append(w)
    for suffix in ["ing", "ed", "s", "ly", "er", "est", "tion", "ness",
                   "th", "eth", "st"]:
        if "##" + suffix not in vocab:
            vocab.append("##" + suffix)
    return vocab


def texts():
    lines = data_file("tinyshakespeare.txt").read_text().splitlines()
    rng = random.Random(7)
    picked = [l for l in rng.sample(lines, 200) if l.strip()]
    extra = [
        "", "   ", "Hello, World!", "HELLO world", "naïve Café RÉSUMÉ",
        "Ångström Straße", "ΟΔΟΣ ΟΔΟΣ. Σ", "İstanbul", "中文分词 and 日本語",
        "한국어", "tab\there\nnewline\r\nwindows", "ctrl\x00\x07char\ufffd",
        "zero\u200bwidth", "e\u0301 combining", "don't stop—believing…",
        "[CLS] inside [SEP] text [MASK]", "[cls] lower", "x" * 150,
        "supercalifragilistic expialidocious", "1,024 3.14 $5 50%",
        "emoji 😀 🚀", "unknown ☃ snowman", "ARM'D ROMEO", "\u3000space",
        "fullwidth ＡＢＣ", "ligature ﬁne", "Ⅻ roman", "punct‽ ¿que?",
    ]
    return picked + extra


@pytest.fixture(scope="module", params=["uncased", "cased"])
def vocab_dir(request, tmp_path_factory):
    cased = request.param == "cased"
    lines = data_file("tinyshakespeare.txt").read_text().splitlines()[:4000]
    vocab = build_vocab(lines, cased)
    d = tmp_path_factory.mktemp(request.param)
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return d, vocab, not cased


def test_agrees_with_the_reference(vocab_dir):
    d, vocab, lower = vocab_dir
    tok = kiln.load_tokenizer(d / "vocab.txt")
    assert tok.kind == "wordpiece" and len(tok) == len(vocab)
    all_texts = texts()
    wrong = [(t, tok.encode(t), reference_ids(t, vocab, lower))
             for t in all_texts
             if tok.encode(t) != reference_ids(t, vocab, lower)]
    print(f"wordpiece ({'uncased' if lower else 'cased'}): "
          f"{len(all_texts) - len(wrong)} of {len(all_texts)} strings agree "
          f"with the reference")
    assert not wrong, wrong[:3]
    unk = vocab.index("[UNK]")
    assert unk in tok.encode("unknown ☃ snowman")


def test_decoding_joins_continuations(vocab_dir):
    d, vocab, lower = vocab_dir
    tok = kiln.load_tokenizer(d)
    ids = tok.encode("Walking, quickly!")
    pieces = [vocab[i] for i in ids]
    want = " ".join(pieces).replace(" ##", "")
    assert tok.decode(ids) == want


def test_tokenizer_json_and_config_override(tmp_path, vocab_dir):
    d, vocab, lower = vocab_dir
    tj = tmp_path / "tokenizer.json"
    tj.write_text(json.dumps({
        "added_tokens": [{"id": i, "content": s, "special": True}
                         for i, s in enumerate(SPECIALS)],
        "normalizer": {"type": "BertNormalizer", "lowercase": lower,
                       "strip_accents": None},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "model": {"type": "WordPiece", "unk_token": "[UNK]",
                  "continuing_subword_prefix": "##",
                  "vocab": {p: i for i, p in enumerate(vocab)}}}))
    a, b = kiln.load_tokenizer(tj), kiln.load_tokenizer(d)
    for t in texts()[:60]:
        assert a.encode(t) == b.encode(t)
    # tokenizer_config.json's do_lower_case wins over the vocabulary.
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (cfg / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": not lower}))
    flipped = kiln.load_tokenizer(cfg)
    t = "Hello THERE Café"
    assert flipped.encode(t) == reference_ids(t, vocab, not lower)


def test_kiln_tokenize(vocab_dir):
    d, vocab, lower = vocab_dir
    out = kiln_cli("tokenize", f"--tokenizer=wordpiece:{d}",
                   "To be, or not to be").stdout
    assert [int(x) for x in out.split()] == \
        reference_ids("To be, or not to be", vocab, lower)


def test_malformed_vocabularies(tmp_path):
    no_unk = tmp_path / "vocab.txt"
    no_unk.write_text("[CLS]\n[SEP]\nhello\n")
    r = subprocess.run([KILN, "tokenize", f"--tokenizer={no_unk}", "x"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{no_unk}: the wordpiece vocabulary has no [UNK] token" in r.stderr
    cfg = tmp_path / "tokenizer_config.json"
    no_unk.write_text("[UNK]\nhello\n")
    cfg.write_text('{"do_lower_case": "yes"}')
    with pytest.raises(ValueError, match="do_lower_case at byte offset 18 "
                       "is not true or false"):
        kiln.load_tokenizer(no_unk)
