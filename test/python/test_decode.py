"""Compiled incremental decoding (kiln-derive-decode, kiln.cached_attention,
KvCache, generate): the logits of prompts and decoding steps through the
key/value cache equal the whole recomputation by `forward` to 1e-5, for
GPT-2 (learned positions), Llama (RoPE, grouped-query attention) and
sliding windows (rolling caches), with ragged batches; generation through
the cache gives the tokens the recomputing path gives, and its sampling
options match a NumPy reference."""
import re
import subprocess

import numpy as np
import pytest

import kiln
from kiln_cli import EXAMPLES, KILN, data_file

GPT2 = dict(vocab_size=67, n_positions=48, n_embd=32, n_layer=2, n_head=4)
LLAMA = dict(vocab_size=61, hidden_size=48, intermediate_size=64,
             num_hidden_layers=2, num_attention_heads=6,
             num_key_value_heads=2, max_position_embeddings=64)


def randomized(model, seed):
    """The model with every parameter drawn at random (norm weights around
    one), so that no position or head is trivially zero."""
    rng = np.random.default_rng(seed)
    model.load_weights({
        k: (rng.normal(1.0, 0.1, v.shape) if v.ndim == 1 and "norm" in k or
            k.startswith("ln") or ".ln_" in k else
            rng.normal(0.0, 0.2, v.shape)).astype(np.float32)
        for k, v in model.parameters().items()})
    return model


@pytest.fixture(scope="module")
def gpt2():
    return randomized(kiln.compile(EXAMPLES / "gpt2.kiln", defines=GPT2), 1)


@pytest.fixture(scope="module")
def llama():
    return randomized(kiln.compile(EXAMPLES / "llama.kiln", defines=LLAMA), 2)


def close(got, want):
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= 1e-5 * scale


def check_cached(model, tokens, chunks, slots=None):
    """Feeds each row's tokens through a cache in the given chunk sizes
    (row by row: a list of sizes per row, consumed in lockstep) and checks
    every logit against forward on the whole row."""
    B, T = tokens.shape
    full = model.run("forward", tokens=tokens)
    cache = model.kv_cache(B, slots or T)
    done = [0] * B
    steps = max(len(c) for c in chunks)
    for s in range(steps):
        new = [list(map(int, tokens[b, done[b]:done[b] + chunks[b][s]]))
               if s < len(chunks[b]) else [] for b in range(B)]
        if not any(new):
            continue
        logits = cache.append(new)
        for b in range(B):
            n = len(new[b])
            if n:
                close(logits[b, :n], full[b, done[b]:done[b] + n])
            done[b] += n
    assert cache.lengths == done
    return cache


def test_decode_function_is_derived(gpt2, llama):
    for model, caches in ((gpt2, 2), (llama, 2)):
        fn = {f["name"]: f for f in model._impl.functions()}["decode"]
        names = [a["name"] for a in fn["inputs"]]
        assert names[:3] == ["tokens", "positions", "lengths"]
        assert len(names) == 3 + 2 * caches
        assert fn["inputs"][3]["dims"][:2] == ["B", "S"]


def test_gpt2_prompt_then_steps(gpt2):
    tokens = np.random.default_rng(3).integers(0, 67, (1, 40), np.int32)
    check_cached(gpt2, tokens, [[9] + [1] * 31])


def test_gpt2_ragged_batch(gpt2):
    tokens = np.random.default_rng(4).integers(0, 67, (3, 30), np.int32)
    # Prompts of 5, 17 and 1 tokens, then steps and chunks of several.
    check_cached(gpt2, tokens, [[5] + [1] * 10 + [15],
                                [17, 3, 1, 1, 1, 1, 6],
                                [1] * 20 + [10]])


def test_llama_gqa_rope(llama):
    tokens = np.random.default_rng(5).integers(0, 61, (2, 50), np.int32)
    check_cached(llama, tokens, [[12] + [1] * 38, [3, 4] + [1] * 43])


@pytest.mark.parametrize("window", [5, 16, 200])
def test_sliding_window_rolling_cache(window):
    model = randomized(kiln.compile(
        EXAMPLES / "llama.kiln", defines=LLAMA,
        attention=f"sliding_window:{window}"), 6)
    T = 60
    tokens = np.random.default_rng(7).integers(0, 61, (2, T), np.int32)
    slots = kiln._kiln.KvCache.slots_for(model._impl, T)
    assert slots == min(window, T)
    # Prompts longer and shorter than the window, chunks past it.
    cache = check_cached(model, tokens, [[11] + [1] * 20 + [29],
                                         [2] + [1] * 58], slots=slots)
    assert cache.rolling == (window <= T)


def test_dense_cache_is_bounded(gpt2):
    cache = gpt2.kv_cache(1, 4)
    cache.append([[1, 2, 3]])
    with pytest.raises(ValueError, match="holds 3 of 4 positions; it has no "
                                         "room for 2 more"):
        cache.append([[4, 5]])
    with pytest.raises(ValueError, match="the cache holds 1 sequences, got "
                                         "tokens for 2"):
        cache.append([[4], [5]])
    assert cache.bytes == 2 * 2 * 4 * 32 * 4  # layers, k+v, slots, width


def test_decode_checks_its_rows(gpt2):
    c = {f"cache.{i}.{kv}": np.zeros((1, 8, 32), np.float32)
         for i in range(2) for kv in ("key", "value")}
    bad = dict(tokens=np.array([[1, 2]], np.int32),
               positions=np.array([[0, 5]], np.int32),
               lengths=np.array([2], np.int32), **c)
    with pytest.raises(Exception, match="row 0: token 1 is at position 5, "
                                        "expected 1"):
        gpt2.run("decode", **bad)
    bad["positions"] = np.array([[7, 8]], np.int32)
    with pytest.raises(Exception, match="positions up to 8 do not fit a "
                                        "cache of 8 positions"):
        gpt2.run("decode", **bad)
    bad["lengths"] = np.array([3], np.int32)
    with pytest.raises(Exception, match=r"length 3 is outside \[0, 2\]"):
        gpt2.run("decode", **bad)


def test_models_that_cannot_decode():
    with pytest.raises(kiln.CompileError, match=r"gpt2.kiln:21:20: error: "
                       "kiln-derive-decode: 'forward' cannot be decoded "
                       "incrementally: its sparse pattern is not a sliding "
                       "window"):
        kiln.compile(EXAMPLES / "gpt2.kiln", defines=GPT2,
                     attention="block_sparse:block=16,local=1,global=1,"
                               "random=0", decode=True)
    with pytest.raises(kiln.CompileError, match="token ids"):
        kiln.compile(EXAMPLES / "bert.kiln", decode=True)
    bert = kiln.compile(EXAMPLES / "bert.kiln", defines=dict(
        vocab_size=50, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32))
    assert "decode" not in [f["name"] for f in bert._impl.functions()]
    plain = kiln.compile(EXAMPLES / "gpt2.kiln", defines=GPT2, decode=False)
    with pytest.raises(ValueError, match="no compiled 'decode' function"):
        plain.kv_cache(1, 8)


def reference_greedy(model, prompt, n, penalty=1.0):
    """Greedy decoding by recomputing forward, with the repetition penalty
    applied in NumPy (float64) as Hugging Face's generate does."""
    seq = list(prompt)
    for _ in range(n):
        logits = model.run("forward", tokens=np.array([seq], np.int32))
        last = logits[0, -1].astype(np.float64)
        for t in set(seq):
            last[t] = last[t] / penalty if last[t] > 0 else last[t] * penalty
        seq.append(int(np.argmax(last)))
    return seq[len(prompt):]


def test_generate_greedy_matches_reference(gpt2, llama):
    for model in (gpt2, llama):
        for penalty in (1.0, 1.5):
            got = model.generate([3, 9, 4], max_tokens=20, temperature=0,
                                 repetition_penalty=penalty)
            assert got.tolist() == reference_greedy(model, [3, 9, 4], 20,
                                                    penalty)


def test_generate_cached_equals_recomputing(gpt2):
    for kw in (dict(temperature=0.9, seed=3), dict(temperature=1.2, top_k=5,
                                                  seed=4),
               dict(temperature=0.8, top_p=0.7, repetition_penalty=1.3,
                    seed=5)):
        stats = {}
        cached = gpt2.generate([1, 2, 3], max_tokens=30, stats=stats, **kw)
        assert stats["cached"] and stats["generated_tokens"] == 30
        again = gpt2.generate([1, 2, 3], max_tokens=30, recompute=True, **kw)
        assert cached.tolist() == again.tolist()
    # top_k = 1 is greedy, whatever the temperature.
    assert gpt2.generate([5], max_tokens=12, temperature=2.0,
                         top_k=1).tolist() == \
        gpt2.generate([5], max_tokens=12, temperature=0).tolist()


def test_batch_of_ragged_prompts(llama):
    prompts = [[1, 2, 3, 4, 5, 6, 7], [9], [4, 4, 8]]
    batch = llama.generate(prompts, max_tokens=15, temperature=0)
    for p, got in zip(prompts, batch):
        assert got.tolist() == reference_greedy(llama, p, 15)
    # Sampling: each row draws from its own stream, cached or not.
    kw = dict(max_tokens=15, temperature=1.0, seed=11)
    a = llama.generate(prompts, **kw)
    b = llama.generate(prompts, recompute=True, **kw)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]


def test_token_iterator(llama):
    kw = dict(max_tokens=10, temperature=0.7, seed=2)
    assert list(llama.generate_tokens([3, 1], **kw)) == \
        llama.generate([3, 1], **kw).tolist()


def test_generation_past_the_learned_positions(gpt2):
    # 48 positions: the sequence continues from its newest half when full.
    got = gpt2.generate([1], max_tokens=100, temperature=0)
    assert len(got) == 100


def test_threads_share_a_model(llama):
    from concurrent.futures import ThreadPoolExecutor
    prompts = [[i + 1, 7] for i in range(6)]
    want = [llama.generate(p, max_tokens=12, temperature=0.5, seed=i).tolist()
            for i, p in enumerate(prompts)]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(
            lambda ip: llama.generate(ip[1], max_tokens=12, temperature=0.5,
                                      seed=ip[0]).tolist(),
            enumerate(prompts)))
    assert got == want


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    out = tmp_path_factory.mktemp("stories") / "s.kart"
    subprocess.run([KILN, "compile", str(EXAMPLES / "llama.kiln"),
                    f"--weights={data_file('stories260K.bin')}",
                    f"--tokenizer={data_file('tok512.bin')}", "-o", str(out)],
                   check=True)
    return out


def test_stop_strings_and_summary(stories):
    r = subprocess.run([KILN, "generate", str(stories), "--max-tokens=100",
                        "--temperature=0", "--stop= park"],
                       capture_output=True, text=True, check=True)
    assert r.stdout == ("Once upon a time, there was a little girl named "
                        "Lily. She loved to play outside in the\n")
    summary = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"kiln: prompt 1 tokens, generated \d+; prefill "
                        r"[\d.]+ tokens/s, decode [\d.]+ tokens/s "
                        r"\(key/value cache\)", summary), summary
    model = kiln.load(stories)
    text = model.generate("Once upon a time", max_tokens=100, temperature=0,
                          stop=[" park", "ball"])
    assert text == r.stdout.rstrip("\n")
    # Token ids end with the token that completed the stop string.
    ids = model.generate([1], max_tokens=100, temperature=0, stop=" park")
    tok = model.tokenizer
    assert " park" in tok.decode([1] + ids.tolist())
    assert " park" not in tok.decode([1] + ids.tolist()[:-1])
    # The CLI's recomputing path prints the same text.
    again = subprocess.run([KILN, "generate", str(stories), "--recompute",
                            "--max-tokens=100", "--temperature=0",
                            "--stop= park"], capture_output=True, text=True,
                           check=True)
    assert again.stdout == r.stdout
    assert "(recomputing each token)" in again.stderr


def test_generate_cli_options(stories):
    def gen(*args):
        r = subprocess.run([KILN, "generate", str(stories), *args],
                           capture_output=True, text=True)
        return r.returncode, r.stdout, r.stderr
    rc, _, err = gen("--max-tokens=5", "--top-k=-1")
    assert rc == 2 and "--top-k" in err
    rc, _, err = gen("--max-tokens=5", "--repetition-penalty=0")
    assert rc == 2 and "--repetition-penalty" in err
    rc, out, _ = gen("--max-tokens=20", "--top-k=1", "--temperature=3")
    assert rc == 0
    _, greedy, _ = gen("--max-tokens=20", "--temperature=0")
    assert out == greedy
