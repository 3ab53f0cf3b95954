"""Sparse attention patterns as dense boolean masks, written from the
definitions in the sparse-attention issue (docs/sparse-attention.md) and
not from kiln's code: the oracle the tests compare kiln's kernels with.

visibility(spec, Tq, Tk, heads) returns a [heads, Tq, Tk] bool array; spec
is a dict such as {"kind": "sliding_window", "window": 16, "causal": True,
"global_tokens": 2}.
"""
import numpy as np

MASK64 = (1 << 64) - 1


def _mix(state):
    """One SplitMix64 step: returns (new state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def random_key_blocks(spec, h, I, key_blocks):
    """The random key blocks of query block I for head h (block_sparse):
    as documented in runtime/attention/PatternSpec.h."""
    local, glob = spec.get("local", 0), spec.get("global", 0)
    r = spec.get("random", 0)
    limit = min(I + 1, key_blocks) if spec.get("causal") else key_blocks

    def excluded(J):
        return abs(I - J) <= local or J < glob

    candidates = [J for J in range(limit) if not excluded(J)]
    if r <= 0 or not candidates:
        return []
    if len(candidates) <= r:
        return candidates
    state = (spec.get("seed", 0) ^ (h * 0xA0761D6478BD642F)
             ^ (I * 0xE7037ED1A0B428DB)) & MASK64
    out = []
    while len(out) < r:
        state, z = _mix(state)
        J = z % limit
        if not excluded(J) and J not in out:
            out.append(J)
    return out


def visibility(spec, Tq, Tk, heads):
    causal = spec.get("causal", False)
    kind = spec.get("kind", "dense")
    g = spec.get("global_tokens", 0)
    i = np.arange(Tq)[:, None]
    j = np.arange(Tk)[None, :]
    p = i + (Tk - Tq if causal else 0)
    if kind == "dense":
        base = np.ones((Tq, Tk), bool)
    elif kind == "sliding_window":
        w = spec["window"]
        base = (p - w < j) if causal else (np.abs(p - j) < w)
    elif kind == "strided":
        s = spec["stride"]
        base = ((p - j) < s) | ((p - j) % s == 0)
    elif kind == "fixed":
        s, c = spec["stride"], spec["summary"]
        base = (j // s == p // s) | (j % s >= s - c)
    elif kind == "block_sparse":
        b = spec["block"]
        local, glob = spec.get("local", 0), spec.get("global", 0)
        key_blocks = -(-Tk // b)
        pos = p[:, 0]
        query_blocks = int(pos.max()) // b + 1 if Tq and pos.max() >= 0 else 0
        I = np.arange(query_blocks)[:, None]
        J = np.arange(key_blocks)[None, :]
        blocks = np.zeros((heads, query_blocks, key_blocks), bool)
        blocks |= ((np.abs(I - J) <= local) | (J < glob) | (I < glob))[None]
        for h in range(heads):
            for qb in range(query_blocks):
                for kb in random_key_blocks(spec, h, qb, key_blocks):
                    blocks[h, qb, kb] = True
        qb = np.clip(pos, 0, None) // b
        base = blocks[:, qb][:, :, np.arange(Tk) // b]
        base &= (pos >= 0)[None, :, None]
    else:
        raise ValueError(kind)
    vis = np.broadcast_to(base, (heads, Tq, Tk)).copy()
    vis |= np.broadcast_to((j < g) | (p < g), (Tq, Tk))[None]
    if causal:
        vis &= np.broadcast_to(j <= p, (Tq, Tk))[None]
    return vis


def kiln_syntax(spec):
    """The spec in the language: sliding_window(window = 16, ...)."""
    names = {"sliding_window": ["window"],
             "block_sparse": ["block", "local", "global", "random", "seed"],
             "strided": ["stride"], "fixed": ["stride", "summary"],
             "dense": []}[spec.get("kind", "dense")]
    args = [f"{n} = {spec[n]}" for n in names if n in spec]
    if spec.get("global_tokens"):
        args.append(f"global_tokens = {spec['global_tokens']}")
    return f"{spec.get('kind', 'dense')}({', '.join(args)})"


def command_line(spec):
    """The spec as --attention takes it: sliding_window:window=16,..."""
    text = kiln_syntax(spec).replace(" ", "")
    kind, _, args = text.partition("(")
    args = args.rstrip(")")
    return f"{kind}:{args}" if args else kind
