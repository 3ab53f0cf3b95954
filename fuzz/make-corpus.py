"""Writes the fuzzers' seed corpora (fuzz/corpus/NAME/): small valid inputs
of every format, made by the main build (build/bin/kiln, the Python
package) and NumPy, so that the fuzzers start from files that load; the
checkpoint harness's model (fuzz/models/train.kart); and the .kiln
dictionary (fuzz/dict/kiln.dict). Rerun after a format changes:

    /usr/bin/python3 fuzz/make-corpus.py
"""
import json
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KILN = ROOT / "build" / "bin" / "kiln"
OUT = ROOT / "fuzz" / "corpus"
# fuzz/checkpoint.cpp splits its input into the checkpoint's files so.
PART = b"\n--kiln-fuzz-file--\n"


def put(name, file, data):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    (d / file).write_bytes(data)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny = {"gpt2": ["-D", "n_layer=1", "-D", "n_embd=8", "-D", "n_head=2",
                         "-D", "vocab_size=16", "-D", "n_positions=8"],
                "llama": ["-D", "num_hidden_layers=1", "-D", "hidden_size=8",
                          "-D", "num_attention_heads=2",
                          "-D", "num_key_value_heads=1",
                          "-D", "intermediate_size=16", "-D", "vocab_size=16",
                          "-D", "max_position_embeddings=8"]}
        for model, defines in tiny.items():
            art, st = tmp / f"{model}.kart", tmp / f"{model}.safetensors"
            subprocess.run([KILN, "compile", ROOT / "examples" /
                            f"{model}.kiln", *defines, "-o", art,
                            f"--save-weights={st}"], check=True)
            put("kart", f"{model}.kart", art.read_bytes())
            put("safetensors", f"{model}.safetensors", st.read_bytes())
        for name, a in {"f32": np.arange(6, dtype=np.float32).reshape(2, 3),
                        "i32": np.array([[1, 2, 3]], np.int32),
                        "f64": np.array(2.5), "bool": np.array([True, False]),
                        "fortran": np.asfortranarray(
                            np.ones((2, 2), np.float32))}.items():
            np.save(tmp / "a.npy", a)
            put("npy", f"{name}.npy", (tmp / "a.npy").read_bytes())
    # A llama2.c checkpoint: dim 8, hidden 16, 1 layer, 2 heads (1 kv), vocab
    # 16, seq 4; a shared classifier.
    dim, hidden, layers, heads, kv, vocab, seq = 8, 16, 1, 2, 1, 16, 4
    head = dim // heads
    floats = (vocab * dim + layers * dim + layers * dim * dim +
              2 * layers * kv * head * dim + layers * dim * dim +
              layers * dim + 3 * layers * hidden * dim + dim + seq * head)
    rng = np.random.default_rng(0)
    put("llama2c", "tiny.bin",
        struct.pack("7i", dim, hidden, layers, heads, kv, vocab, seq) +
        rng.standard_normal(floats).astype(np.float32).tobytes())
    # Tokenizers: the first byte picks the format (fuzz/tokenizer.cpp).
    pieces = [b"<unk>", b"<s>", b"</s>"] + [bytes([c]) for c in b"abcde "] + \
        [b"ab", b"cd", b" a"]
    body = struct.pack("i", 2) + b"".join(
        struct.pack("fi", -float(i), len(p)) + p for i, p in enumerate(pieces))
    put("tokenizer", "llama2c", b"\x00" + body)
    put("tokenizer", "tokenizer.json", b"\x02" + json.dumps({
        "model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1,
                                                 "##b": 2, "hello": 3}},
        "normalizer": {"type": "BertNormalizer", "lowercase": True}
    }, indent=2).encode())
    put("tokenizer", "vocab.txt",
        b"\x03[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nworld\n##s\n,\n!\n")
    encoder = {"!": 0, "H": 1, "e": 2, "l": 3, "o": 4, "\u0120": 5,
               "He": 6, "ll": 7, "Hell": 8, "<|endoftext|>": 9}
    put("tokenizer", "gpt2", b"\x04" + json.dumps(encoder).encode() +
        b"\n#--\n#version: 0.2\nH e\nl l\nHe ll\n")
    # JSON: a Hugging Face config and a trainer state.
    put("json", "config.json", json.dumps({
        "model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1,
        "rope_scaling": None, "tie_word_embeddings": False,
        "architectures": ["LlamaForCausalLM"], "rms_norm_eps": 1e-6},
        indent=2).encode())
    put("json", "trainer_state.json", json.dumps({
        "step": 12, "seed": 3, "data": {"position": 96, "tokens": 20000},
        "settings": {"lr": 3e-3, "batch": 4, "name": "caf\u00e9 \\"}},
        indent=2).encode())
    kiln_dictionary()
    checkpoint(tiny["gpt2"])
    print(f"wrote the seed corpora under {OUT}", file=sys.stderr)


def kiln_dictionary():
    """The .kiln dictionary: the words and operators of the repository's
    model sources (examples, the frontend's tests and error cases, which
    scripts/fuzz.sh passes as the harness's seeds) and the builtins' names."""
    sources = sorted((ROOT / "examples").glob("*.kiln")) + \
        sorted((ROOT / "test" / "frontend").rglob("*.kiln"))
    words = set()
    for src in sources:
        text = src.read_text(errors="replace")
        words.update(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", text))
        words.update(re.findall(r"->|==|!=|<=|>=|\*\*|//|[-+*/%@<>=(){}\[\],:.?!]",
                                text))
    builtins = (ROOT / "frontend" / "Builtins.cpp").read_text()
    words.update(re.findall(r'add\("([a-z_0-9]+)"', builtins))
    words.update(["bf16", "f16", "f32", "i32", "i64", "1e40", "4294967296",
                  "9223372036854775807", "-1", "0", "0.5"])
    lines = [f'"{w}"' for w in sorted(words) if '"' not in w and "\\" not in w]
    (ROOT / "fuzz" / "dict" / "kiln.dict").write_text(
        "# .kiln words, operators and builtins (fuzz/make-corpus.py)\n" +
        "\n".join(lines) + "\n")


def checkpoint(defines):
    """The checkpoint harness's model (a tiny GPT-2 with its gradient) and
    a real checkpoint of it after two AdamW steps, as one input: `latest`,
    trainer_state.json, model.safetensors, optimizer.safetensors."""
    models = ROOT / "fuzz" / "models"
    models.mkdir(exist_ok=True)
    art = models / "train.kart"
    subprocess.run([KILN, "compile", ROOT / "examples" / "gpt2.kiln",
                    *defines, "--grad=loss", "--seed=1", "-o", art],
                   check=True)
    sys.path.insert(0, str(ROOT / "build" / "python"))
    import kiln
    model = kiln.load(art)
    trainer = kiln.Trainer(model)
    rng = np.random.default_rng(0)
    for _ in range(2):
        trainer.step({"tokens": rng.integers(0, 16, (2, 8), dtype=np.int32),
                      "targets": rng.integers(0, 16, (2, 8),
                                              dtype=np.int32)})
    with tempfile.TemporaryDirectory() as tmp:
        d = trainer.save_checkpoint(tmp)
        state = json.loads((d / "trainer_state.json").read_text())
        state["data_rng"] = "11400714819323198485"
        state["settings"]["checkpoint-dir"] = "ck"  # not the temporary one
        parts = [(Path(tmp) / "latest").read_bytes(),
                 json.dumps(state, indent=2).encode(),
                 (d / "model.safetensors").read_bytes(),
                 (d / "optimizer.safetensors").read_bytes()]
    put("checkpoint", "adamw-step2", PART.join(parts))


if __name__ == "__main__":
    main()
