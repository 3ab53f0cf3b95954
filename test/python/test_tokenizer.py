"""llama2.c tokenizers: tok512.bin read by the runtime, carried in the
artifact (kiln compile --tokenizer, kiln.compile(tokenizer=...)), encoding
and decoding against the test's own reference, text generation from
stories260K against a float64 NumPy model, and malformed tokenizer files."""
import struct
import subprocess
import sys

import numpy as np
import pytest

import llama2c_reference as ref
from kiln_cli import BUILD, EXAMPLES, KILN, data_file, kiln as kiln_cli

sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402

STORY = ("Once upon a time, there was a little girl named Lily. She loved to "
         "play outside in the park.")

TEXTS = [
    b"", b"a", b" ", b"  two  spaces  ", b"Once upon a time",
    b"Hello, world! (3 + 4) * 12 = 84; 'quoted' \"double\" - end.",
    b"line one\nline two\n\n\ttabbed\r\n",
    "caf\u00e9 na\u00efve \u00e9t\u00e9".encode(),
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8".encode(),
    "emoji \U0001f600\U0001f680 and \u2122 \u200a".encode(),
    b"digits 0123456789 and 3.14159",
    b"not utf-8: \xff\xfe \x80 lone \xc3 cut \xe6\x97 end",
    b"\x80\x80\x80\x80\x80\x80 continuation run",
    bytes(range(256)),
]


@pytest.fixture(scope="module")
def paths():
    return data_file("stories260K.bin"), data_file("tok512.bin")


@pytest.fixture(scope="module")
def reference(paths):
    return ref.load_tokenizer(paths[1])


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, paths):
    out = tmp_path_factory.mktemp("tok") / "stories.kart"
    kiln_cli("compile", EXAMPLES / "llama.kiln", f"--weights={paths[0]}",
             f"--tokenizer={paths[1]}", "-o", out)
    return out


@pytest.fixture(scope="module")
def model(artifact):
    return kiln.load(artifact)


def test_encode_decode_match_the_reference(model, reference):
    tok = model.tokenizer
    assert (tok.kind, len(tok), tok.bos, tok.eos) == ("llama2c", 512, 1, 2)
    assert tok.encode("Once upon a time") == [1, 403, 407, 261, 378]
    for text in TEXTS:
        want = ref.encode(reference, text)
        assert tok.encode(text) == want, text
        assert ref.decode(reference, want) == text
        assert tok.decode_bytes(want) == text, text
    assert tok.decode(tok.encode("caf\u00e9 \U0001f600")) == \
        "caf\u00e9 \U0001f600"
    # Bytes that are not UTF-8 decode to replacement characters, never fail.
    assert tok.decode([1, 3 + 0xFF, 3 + 0x80]) == "\ufffd\ufffd"


def test_long_text_encodes_like_the_quadratic_reference(model, reference):
    text = data_file("tinyshakespeare.txt").read_bytes()[:6000]
    assert model.tokenizer.encode(text) == ref.encode(reference, text)


def test_cli_prompt_ids(artifact, reference):
    text = "Tom's dog, \u00e9t\u00e9 \U0001f600!\nThe end."
    out = kiln_cli("generate", artifact, f"--prompt={text}", "--ids",
                   "--max-tokens=1", "--temperature=0").stdout.split()
    want = ref.encode(reference, text.encode())
    assert [int(t) for t in out[:len(want)]] == want
    assert len(out) <= len(want) + 1


def test_story_prints_as_text(artifact):
    out = kiln_cli("generate", artifact, "--prompt=Once upon a time",
                   "--temperature=0", "--max-tokens=200").stdout
    assert out.startswith(STORY), out
    # Without a prompt it starts from BOS and tells the same story.
    out = kiln_cli("generate", artifact, "--temperature=0",
                   "--max-tokens=40").stdout
    assert out.startswith(STORY[:60]), out


PROMPTS = ["Once upon a time", "Lily and Ben went to the park.",
           "The little dog was sad because", "Tom had a big red ball. One day,",
           "\"Can I play too?\" asked"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_continuation_matches_numpy(artifact, paths, reference,
                                           prompt):
    """160 greedy tokens equal the float64 reference's, compared up to the
    first step whose top-2 logit margin is below 1e-3 (where rounding may
    legitimately choose the other token)."""
    ids = ref.encode(reference, prompt.encode())
    out = [int(t) for t in kiln_cli(
        "generate", artifact, f"--prompt={prompt}", "--ids",
        "--temperature=0", "--max-tokens=160").stdout.split()]
    assert out[:len(ids)] == ids
    got = out[len(ids):]
    want, margins = ref.greedy_with_margins(paths[0], ids, 160)
    cut = next((i for i, m in enumerate(margins) if m < 1e-3), len(margins))
    assert got[:cut] == want[:cut]
    assert cut >= 150 or cut == len(want), (cut, margins[:cut + 1])
    if cut == len(want) and len(want) < 160:
        assert got == want  # both ended at BOS or EOS


def test_python_generate_text_equals_the_cli(artifact, paths):
    m = kiln.compile(EXAMPLES / "llama.kiln", weights=paths[0],
                     tokenizer=paths[1], threads=1)
    assert m.threads == 1 and m.tokenizer.kind == "llama2c"
    text = m.generate(prompt="Once upon a time", max_tokens=60,
                      temperature=0)
    assert text.startswith(STORY)
    cli = kiln_cli("generate", artifact, "--prompt=Once upon a time",
                   "--temperature=0", "--max-tokens=60").stdout
    assert cli == text + "\n"
    sampled = m.generate("Once upon a time", 30, temperature=0.8, top_p=0.9,
                         seed=4)
    cli = kiln_cli("generate", artifact, "--prompt=Once upon a time",
                   "--temperature=0.8", "--top-p=0.9", "--seed=4",
                   "--max-tokens=30").stdout
    assert cli == sampled + "\n"
    ids = m.generate(prompt_ids=[1, 403], max_tokens=5, temperature=0)
    assert ids.dtype == np.int32 and ids.tolist() == [407, 261, 378, 432, 383]
    with pytest.raises(TypeError, match="needs a prompt"):
        m.generate(max_tokens=3)
    plain = kiln.compile(EXAMPLES / "llama.kiln", weights=paths[0])
    assert plain.tokenizer is None
    with pytest.raises(ValueError, match="no tokenizer"):
        plain.generate("Once", 3)


def test_generation_stops_at_bos(artifact, paths, reference):
    """The stories end with BOS; kiln stops there, as run.c does."""
    prompt = "The end."
    ids = ref.encode(reference, prompt.encode())
    want, _ = ref.greedy_with_margins(paths[0], ids, 400)
    assert len(want) < 400, "the reference never reached BOS or EOS"
    out = kiln_cli("generate", artifact, f"--prompt={prompt}", "--ids",
                   "--temperature=0", "--max-tokens=400").stdout.split()
    assert [int(t) for t in out] == ids + want


def test_inspect_shows_the_tokenizer(artifact):
    out = kiln_cli("inspect", artifact).stdout
    assert "tokenizer: llama2c, 512 tokens (BOS 1, EOS 2)" in out


def test_artifact_keeps_the_tokenizer(tmp_path, model, artifact):
    copy = tmp_path / "copy.kart"
    model.save(copy)
    again = kiln.load(copy)
    assert again.tokenizer.encode("a cat") == model.tokenizer.encode("a cat")
    assert copy.read_bytes() == artifact.read_bytes()


def bad(*args):
    r = subprocess.run([KILN, *map(str, args)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "error:" in r.stderr, (r.returncode, r.stderr)
    return r.stderr


def test_malformed_tokenizer_files(tmp_path, paths):
    data = paths[1].read_bytes()
    cases = []

    def case(name, content, *fragments):
        p = tmp_path / name
        p.write_bytes(content)
        cases.append((p, fragments))
    # Token 0 (<unk>) starts at byte 4: score at 4, length at 8, bytes at 12.
    case("empty.bin", b"", "0 bytes is too short for a llama2.c tokenizer")
    case("maxlen.bin", struct.pack("<i", -5) + data[4:],
         "max_token_length -5 at byte offset 0 is not a plausible length")
    case("trunc.bin", data[:-3], "token 511 at byte offset",
         "past the end of the 6224-byte file")
    case("trunc-header.bin", data[:22],
         "token 1 at byte offset 17 is truncated: its score and length need "
         "8 bytes, 5 remain")
    neg = bytearray(data)
    struct.pack_into("<i", neg, 8, -3)
    case("negative.bin", bytes(neg),
         "token 0 at byte offset 8 has length -3, outside [0, 7]")
    long = bytearray(data)
    struct.pack_into("<i", long, 8, 7)
    case("past-end.bin", bytes(long[:4 + 8 + 5]),
         "token 0 at byte offset 8 has length 7, past the end of the 17-byte "
         "file")
    nan = bytearray(data)
    struct.pack_into("<f", nan, 4, float("nan"))
    case("nan.bin", bytes(nan), "token 0 at byte offset 4 has a score that "
         "is not a finite number")
    # A well-formed file for another vocabulary: the first 300 tokens.
    at, n = 4, 0
    while n < 300:
        at += 8 + struct.unpack_from("<i", data, at + 4)[0]
        n += 1
    case("small.bin", data[:at], "has 300 tokens, but the model's "
         "vocabulary has 512")
    case("few.bin", data[:12 + 5], "at least 259 tokens")
    for p, fragments in cases:
        err = bad("compile", EXAMPLES / "llama.kiln",
                  f"--weights={paths[0]}", f"--tokenizer={p}", "-o",
                  tmp_path / "x.kart")
        assert str(p) in err, err
        for f in fragments:
            assert f in err, err
        assert not (tmp_path / "x.kart").exists()
    with pytest.raises(kiln.CompileError, match="past the end"):
        kiln.compile(EXAMPLES / "llama.kiln", weights=paths[0],
                     tokenizer=tmp_path / "trunc.bin")
    err = bad("compile", EXAMPLES / "llama.kiln", f"--weights={paths[0]}",
              f"--tokenizer={tmp_path / 'missing.bin'}", "-o",
              tmp_path / "x.kart")
    assert "missing.bin: cannot open the file: No such file or directory" in \
        err


def table_field(data, table, index):
    """The byte offset of field `index` of the FlatBuffers table at
    `table`."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    field = struct.unpack_from("<H", data, vtable + 4 + 2 * index)[0]
    assert field
    return table + field


def test_damaged_tokenizer_in_an_artifact(tmp_path, artifact):
    data = bytearray(artifact.read_bytes())
    root = struct.unpack_from("<I", data, 0)[0]
    at = table_field(data, root, 15)  # Program.tokenizer_data
    tokenizer = at + struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<i", data, table_field(data, tokenizer, 3), 9999)  # bos
    p = tmp_path / "bad-bos.kart"
    p.write_bytes(bytes(data))
    err = bad("generate", p, "--max-tokens=1")
    assert "the artifact's tokenizer is invalid: BOS/EOS id 9999 is not an " \
        "id of the 512-token vocabulary" in err
    with pytest.raises(RuntimeError, match="BOS/EOS id 9999"):
        kiln.load(p)


def test_usage_errors(artifact, paths, tmp_path):
    r = subprocess.run([KILN, "compile", EXAMPLES / "llama.kiln",
                        f"--tokenizer={paths[1]}"], capture_output=True,
                       text=True)
    assert r.returncode == 2
    assert "--tokenizer, --save-weights and --external-weights apply to " \
        "artifacts" in r.stderr
    r = subprocess.run([KILN, "generate", artifact, "--prompt=",
                        "--max-tokens=2"], capture_output=True, text=True)
    assert r.returncode == 2 and "--prompt is empty" in r.stderr
    plain = tmp_path / "plain.kart"
    kiln_cli("compile", EXAMPLES / "llama.kiln", f"--weights={paths[0]}",
             "-o", plain)
    assert "the artifact has no tokenizer" in bad(
        "generate", plain, "--prompt=Once", "--max-tokens=2")


def test_kiln_tokenize_command(tmp_path):
    """kiln tokenize: text to ids as the tokenizer encodes it (from a
    tokenizer file or an artifact's), ids back to text, standard input read
    as it is, and clear errors."""
    tok = data_file("tok512.bin")
    reference = ref.load_tokenizer(tok)
    for text in ["Once upon a time", "caf\u00e9 \U0001f600 12"]:
        ids = [int(t) for t in kiln_cli("tokenize", f"--tokenizer={tok}",
                                        text).stdout.split()]
        assert ids == ref.encode(reference, text.encode())
        back = kiln_cli("tokenize", f"--tokenizer={tok}", "--decode",
                        ",".join(map(str, ids))).stdout
        assert back == text + "\n"
    art = tmp_path / "s.kart"
    kiln_cli("compile", EXAMPLES / "llama.kiln",
             f"--weights={data_file('stories260K.bin')}", f"--tokenizer={tok}",
             "-o", art)
    r = subprocess.run([KILN, "tokenize", f"--tokenizer={art}", "-"],
                       input="two\nlines\n", capture_output=True, text=True,
                       check=True)
    assert [int(t) for t in r.stdout.split()] == \
        ref.encode(reference, b"two\nlines\n")
    bad = kiln_cli("tokenize", f"--tokenizer={tok}", "--decode", "1 512",
                   check=False)
    assert bad.returncode == 1
    assert "'512' is not a token id of this tokenizer (0 to 511)" in bad.stderr
    assert kiln_cli("tokenize", "text", check=False).returncode == 2
    plain = tmp_path / "plain.kart"
    kiln_cli("compile", EXAMPLES / "llama.kiln", "-o", plain)
    r = kiln_cli("tokenize", f"--tokenizer={plain}", "x", check=False)
    assert r.returncode == 1 and "the artifact has no tokenizer" in r.stderr
