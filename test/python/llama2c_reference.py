"""A float64 NumPy re-implementation of llama2.c checkpoints, written from the
format description in docs/data.md (not from kiln's code)."""
import struct

import numpy as np


def load(path):
    data = open(path, "rb").read()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = \
        np.frombuffer(data[:28], np.int32)
    shared = vocab > 0
    vocab = abs(vocab)
    head = dim // heads
    f = np.frombuffer(data[28:], np.float32).astype(np.float64)
    at = 0

    def take(*shape):
        nonlocal at
        n = int(np.prod(shape))
        a = f[at:at + n].reshape(shape)
        at += n
        return a
    w = {"emb": take(vocab, dim), "rms_att": take(layers, dim),
         "wq": take(layers, dim, dim),
         "wk": take(layers, kv_heads * head, dim),
         "wv": take(layers, kv_heads * head, dim),
         "wo": take(layers, dim, dim), "rms_ffn": take(layers, dim),
         "w1": take(layers, hidden, dim), "w2": take(layers, dim, hidden),
         "w3": take(layers, hidden, dim), "rms_final": take(dim)}
    take(seq_len, head // 2)
    take(seq_len, head // 2)
    w["cls"] = w["emb"] if shared else take(vocab, dim)
    cfg = dict(dim=int(dim), layers=int(layers), heads=int(heads),
               kv_heads=int(kv_heads), vocab=int(vocab), head=int(head))
    return cfg, w


def rmsnorm(x, g, eps=1e-5):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def rope(x, heads, head):
    T = x.shape[0]
    x = x.reshape(T, heads, head // 2, 2)
    freq = 10000.0 ** (-np.arange(0, head, 2) / head)
    ang = np.arange(T)[:, None] * freq[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., 0], x[..., 1]
    return np.stack([a * c - b * s, a * s + b * c], -1).reshape(T, -1)


def forward(cfg, w, tokens):
    H, Hkv, hd = cfg["heads"], cfg["kv_heads"], cfg["head"]
    T = len(tokens)
    x = w["emb"][tokens]
    causal = np.tril(np.ones((T, T), bool))
    for l in range(cfg["layers"]):
        h = rmsnorm(x, w["rms_att"][l])
        q = rope(h @ w["wq"][l].T, H, hd).reshape(T, H, hd)
        k = rope(h @ w["wk"][l].T, Hkv, hd).reshape(T, Hkv, hd)
        v = (h @ w["wv"][l].T).reshape(T, Hkv, hd)
        out = np.zeros((T, H, hd))
        for i in range(H):
            j = i // (H // Hkv)
            s = q[:, i] @ k[:, j].T / np.sqrt(hd)
            s = np.where(causal, s, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[:, i] = p @ v[:, j]
        x = x + out.reshape(T, -1) @ w["wo"][l].T
        h = rmsnorm(x, w["rms_ffn"][l])
        a = h @ w["w1"][l].T
        x = x + ((a / (1 + np.exp(-a))) * (h @ w["w3"][l].T)) @ w["w2"][l].T
    return rmsnorm(x, w["rms_final"]) @ w["cls"].T


def greedy(path, prompt, steps):
    cfg, w = load(path)
    seq = list(prompt)
    for _ in range(steps):
        seq.append(int(np.argmax(forward(cfg, w, np.array(seq))[-1])))
    return seq[len(prompt):]


def greedy_with_margins(path, prompt, steps, stop=(1, 2)):
    """Greedy decoding as kiln generate does it (ending where the model picks
    BOS or EOS); returns the new tokens and, for each, the margin between
    the best and second-best logit (how robust the choice is to rounding)."""
    cfg, w = load(path)
    seq, margins = list(prompt), []
    for _ in range(steps):
        logits = forward(cfg, w, np.array(seq))[-1]
        top2 = np.sort(logits)[-2:]
        nxt = int(np.argmax(logits))
        if nxt in stop:
            break
        seq.append(nxt)
        margins.append(float(top2[1] - top2[0]))
    return seq[len(prompt):], margins


# The tokenizer, from the format and algorithm in docs/data.md
# (llama2.c's run.c): a naive quadratic merge loop, deliberately unlike
# kiln's heap-ordered one.

def load_tokenizer(path):
    data = open(path, "rb").read()
    at, pieces, scores = 4, [], []
    while at < len(data):
        score, n = struct.unpack_from("<fi", data, at)
        at += 8
        pieces.append(data[at:at + n])
        scores.append(score)
        at += n
    return pieces, scores


def encode(tok, text):
    """Token ids of `text` (bytes): BOS, a leading space for non-empty
    text, code-point units looked up (byte tokens 3 + b when absent), then
    the best-scored adjacent merge (leftmost on ties) until none applies."""
    pieces, scores = tok
    index = {}
    for i, p in enumerate(pieces):
        index.setdefault(p, i)
    ids = [1]

    def unit(u):
        if u in index:
            ids.append(index[u])
        else:
            ids.extend(b + 3 for b in u)
    if text:
        unit(b" ")
    i = 0
    while i < len(text):
        j = i + 1
        while j < len(text) and j - i < 4 and (text[j] & 0xC0) == 0x80:
            j += 1
        unit(text[i:j])
        i = j
    while True:
        best = None
        for k in range(len(ids) - 1):
            m = index.get(pieces[ids[k]] + pieces[ids[k + 1]])
            if m is not None and (best is None or scores[m] > scores[best[1]]):
                best = (k, m)
        if best is None:
            return ids
        k, m = best
        ids[k:k + 2] = [m]


def decode(tok, ids):
    """The bytes of `ids`: BOS and EOS print nothing, the piece after BOS
    loses one leading space, <0xXX> pieces are that byte."""
    pieces, _ = tok
    out, prev = b"", -1
    for t in ids:
        p = pieces[t]
        if t in (1, 2):
            p = b""
        elif len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
            p = bytes([int(p[3:5], 16)])
        elif prev == 1 and p.startswith(b" "):
            p = p[1:]
        out += p
        prev = t
    return out
