"""Incremental decoding of an encoder-decoder (examples/t5.kiln): the
derived `decode` reads a self-attention cache per decoder layer, T5's
relative position bias computed for the cached positions, and the encoder's
cross-attention keys and values, which the derived `prepare` computes once
per source. Its logits equal the whole recomputation by `forward` to 1e-5
(ragged sources and targets, positions past the exact buckets and past
max_distance); generation through it gives the tokens of greedy decoding by
recomputing `forward` each step; misuse is a clear error."""
import numpy as np
import pytest

import kiln
from kiln_cli import EXAMPLES, compile_model, kiln as kiln_cli
from test_decode import randomized

# Eight buckets up to distance 12: targets of 30 tokens reach the
# logarithmic buckets and the clamp past max_distance.
T5 = dict(vocab_size=53, d_model=16, d_kv=4, d_ff=32, num_layers=2,
          num_decoder_layers=2, num_heads=4,
          relative_attention_num_buckets=8,
          relative_attention_max_distance=12)


@pytest.fixture(scope="module")
def t5():
    return randomized(kiln.compile(EXAMPLES / "t5.kiln", defines=T5), 3)


def sources(rng, lengths, S):
    ids = np.zeros((len(lengths), S), np.int32)
    mask = np.zeros((len(lengths), S), np.int32)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(2, 53, n)
        mask[b, :n] = 1
    return ids, mask


def test_decode_and_prepare_are_derived(t5):
    fns = {f["name"]: f for f in t5._impl.functions()}
    names = [a["name"] for a in fns["decode"]["inputs"]]
    assert names[:4] == ["decoder_input_ids", "positions", "lengths",
                         "attention_mask"]
    assert sorted(n for n in names if n.startswith("cache.")) == sorted(
        f"cache.{i}.{kv}" for i in range(2) for kv in ("key", "value"))
    assert [n for n in names if n.startswith("memory.")] == \
        [f"memory.{i}" for i in range(4)]
    assert [a["name"] for a in fns["prepare"]["inputs"]] == \
        ["input_ids", "attention_mask"]
    assert len(fns["prepare"]["outputs"]) == 4
    assert t5._impl.encoder_decoder


def test_cached_logits_equal_forward(t5):
    rng = np.random.default_rng(5)
    ids, mask = sources(rng, [9, 4, 1], 9)
    T = 30
    dec = rng.integers(0, 53, (3, T)).astype(np.int32)
    full = t5.run("forward", input_ids=ids, attention_mask=mask,
                  decoder_input_ids=dec)
    cache = t5.kv_cache(3, T)
    assert sorted(cache.context_inputs) == ["attention_mask", "input_ids"]
    cache.set_context({"input_ids": ids, "attention_mask": mask})
    # Row 0 prefills 7 tokens, row 1 one, row 2 none at first; then steps
    # of one or more.
    chunks = [[7] + [1] * 23, [1, 4] + [1] * 25, [0, 13, 2] + [1] * 15]
    done = [0, 0, 0]
    scale = max(1.0, float(np.abs(full).max()))
    for s in range(max(map(len, chunks))):
        new = [list(map(int, dec[b, done[b]:done[b] + chunks[b][s]]))
               if s < len(chunks[b]) else [] for b in range(3)]
        if not any(new):
            continue
        logits = cache.append(new)
        for b in range(3):
            n = len(new[b])
            if n:
                err = np.abs(logits[b, :n] - full[b, done[b]:done[b] + n])
                assert err.max() <= 1e-5 * scale, (b, done[b], err.max())
            done[b] += n
    assert done == [T, T, T]


def greedy_by_forward(model, source, n, start=0):
    ids = np.array([source], np.int32)
    mask = np.ones_like(ids)
    seq = [start]
    for _ in range(n):
        logits = model.run("forward", input_ids=ids, attention_mask=mask,
                           decoder_input_ids=np.array([seq], np.int32))
        seq.append(int(np.argmax(logits[0, -1].astype(np.float64))))
    return seq[1:]


def test_generate_matches_recomputation(t5):
    prompts = [[5, 9, 14, 3, 22, 7], [11], [30, 2, 8]]
    batch = t5.generate(prompts, max_tokens=12, temperature=0)
    for p, got in zip(prompts, batch):
        assert got.tolist() == greedy_by_forward(t5, p, 12)
    kw = dict(max_tokens=12, temperature=1.0, top_k=10, seed=4)
    stats = {}
    a = t5.generate(prompts, stats=stats, **kw)
    assert stats["cached"] and stats["prompt_tokens"] == 10
    b = t5.generate(prompts, recompute=True, **kw)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]


def test_context_errors(t5):
    cache = t5.kv_cache(2, 8)
    with pytest.raises(ValueError, match="decodes against a source: give the "
                                         "cache its 'attention_mask', "
                                         "'input_ids' first"):
        cache.append([[0], [0]])
    ids = np.ones((2, 5), np.int32)
    with pytest.raises(ValueError, match="the context needs 'attention_mask'"):
        cache.set_context({"input_ids": ids})
    with pytest.raises(ValueError, match=r"context input 'attention_mask' is "
                       r"i32\[3, 5\]; its first dimension must be the "
                       r"cache's batch of 2"):
        cache.set_context({"input_ids": np.ones((3, 5), np.int32),
                           "attention_mask": np.ones((3, 5), np.int32)})
    with pytest.raises(ValueError, match="the context takes no input 'labels'"):
        cache.set_context({"input_ids": ids, "attention_mask": ids,
                           "labels": ids})
    gpt2 = kiln.compile(EXAMPLES / "gpt2.kiln", defines=dict(
        vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="decodes without a source"):
        gpt2.kv_cache(1, 4).set_context({})


def test_cli_generates_from_a_source(tmp_path, t5):
    art = compile_model(tmp_path, EXAMPLES / "t5.kiln", T5, seed=7)
    r = kiln_cli("generate", art, "--prompt-ids=5,9,14", "--max-tokens=6",
                 "--temperature=0")
    model = kiln.load(art)
    want = greedy_by_forward(model, [5, 9, 14], 6)
    # The output alone: the source is not echoed.
    assert r.stdout.split() == [str(i) for i in want]
    assert "key/value cache" in r.stderr
    r = kiln_cli("generate", art, "--max-tokens=6", check=False)
    assert r.returncode != 0
    assert "is an encoder-decoder: give its source with --prompt" in r.stderr


def test_text_source_ends_with_eos(tmp_path):
    # A llama2.c tokenizer (BOS 1, EOS 2) on a 512-token T5: the text
    # source is its ids and EOS, from the CLI and from Python alike.
    from kiln_cli import data_file
    tok = data_file("tok512.bin")
    art = tmp_path / "t5.kart"
    randomized(kiln.compile(EXAMPLES / "t5.kiln", tokenizer=tok,
                            defines=dict(T5, vocab_size=512)), 4).save(art)
    ids = [int(i) for i in kiln_cli("tokenize", f"--tokenizer={tok}",
                                    "Once upon a time").stdout.split()]
    by_text = kiln_cli("generate", art, "--prompt=Once upon a time",
                       "--max-tokens=6", "--temperature=0", "--ids").stdout
    by_ids = kiln_cli("generate", art, "--prompt-ids=" +
                      ",".join(map(str, ids + [2])), "--max-tokens=6",
                      "--temperature=0", "--ids").stdout
    assert by_text.split() == by_ids.split()
    model = kiln.load(art)
    want = model.generate(ids + [2], max_tokens=6, temperature=0).tolist()
    assert [int(t) for t in by_text.split()] == want
    assert model.generate("Once upon a time", max_tokens=6,
                          temperature=0) == model.tokenizer.decode(want)
