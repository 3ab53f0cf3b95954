"""Whole-model gradients: `kiln compile --grad=loss` on the four example
architectures (small configurations) against PyTorch autograd through the
independent float64 reference models, with the same weights and batch, and
a directional central difference of kiln's own loss.

Tolerance: every gradient element within 1e-4 of the reference, relative to
the largest element of that gradient when it exceeds 1 (kiln computes in
float32)."""
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference_models as ref
from kiln_cli import EXAMPLES, KILN, write_safetensors
from test_cpu_numerics import (BERT, GPT2, LLAMA, T5, parameter_table,
                               random_weights)

TOL = 1e-4


def kiln_loss_and_grads(tmp_path, model, cfg, w, inputs, function="loss_grad"):
    ws = tmp_path / "w.safetensors"
    write_safetensors(ws, w)
    art = tmp_path / "m.kart"
    args = [KILN, "compile", EXAMPLES / model, "--grad=loss",
            f"--weights={ws}", "-o", art]
    for k, v in cfg.items():
        args += ["-D", f"{k}={v}"]
    subprocess.run(args, check=True)
    run = [KILN, "run", art, f"--function={function}"]
    for name, a in inputs.items():
        np.save(tmp_path / f"{name}.npy", a)
        run.append(f"--input={name}=@{tmp_path / (name + '.npy')}")
    n = 1 + len(w) if function == "loss_grad" else 1
    outs = [tmp_path / f"o{i}.npy" for i in range(n)]
    run += [f"--output=@{o}" for o in outs]
    subprocess.run(run, check=True)
    return [np.load(o) for o in outs]


def compare(tmp_path, model, cfg, inputs, reference, seed):
    table = parameter_table(model, cfg)
    w = random_weights(table, seed)
    loss, *grads = kiln_loss_and_grads(tmp_path, model, cfg, w, inputs)
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in w.items()}
    want = reference(t)
    want.backward()
    assert abs(float(loss) - float(want)) <= TOL
    worst = 0.0
    for name, g in zip(table, grads):
        r = t[name].grad
        r = np.zeros(g.shape) if r is None else r.numpy()
        assert g.shape == r.shape, name
        scale = max(1.0, float(np.max(np.abs(r))))
        err = float(np.max(np.abs(g - r))) / scale
        worst = max(worst, err)
        assert err <= TOL, f"{name}: error {err:.3g}"
    print(f"{model}: {len(table)} gradients, max error {worst:.2e}")
    return w, grads


def ce(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                           torch.as_tensor(labels, dtype=torch.long)
                           .reshape(-1), ignore_index=-100)


def test_gpt2_gradients_and_directional_difference(tmp_path):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 97, (2, 9)).astype(np.int32)
    targets = rng.integers(0, 97, (2, 9)).astype(np.int32)
    inputs = {"tokens": tokens, "targets": targets}
    w, grads = compare(tmp_path, "gpt2.kiln", GPT2, inputs,
                       lambda t: ce(ref.gpt2(t, GPT2, tokens), targets), 11)
    # Central difference of kiln's own loss along a random direction d
    # (in float64 arithmetic over float32 losses): (L(w+hd) - L(w-hd)) / 2h
    # against sum(grad * d).
    d = {k: rng.standard_normal(v.shape) for k, v in w.items()}
    norm = np.sqrt(sum(float(np.sum(v * v)) for v in d.values()))
    d = {k: (v / norm).astype(np.float32) for k, v in d.items()}  # |d| = 1
    h = 1e-2
    losses = []
    for sgn in (1, -1):
        ws = {k: (v + sgn * h * d[k]).astype(np.float32) for k, v in
              w.items()}
        (loss,) = kiln_loss_and_grads(tmp_path, "gpt2.kiln", GPT2, ws, inputs,
                                      function="loss")
        losses.append(float(loss))
    fd = (losses[0] - losses[1]) / (2 * h)
    analytic = sum(float(np.sum(g.astype(np.float64) * d[k]))
                   for g, k in zip(grads, w))
    print(f"gpt2: directional derivative {analytic:.6f}, central difference "
          f"{fd:.6f}")
    assert abs(fd - analytic) <= 1e-3 * max(1.0, abs(analytic)), \
        (fd, analytic)


def test_llama_gradients(tmp_path):
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 61, (2, 8)).astype(np.int32)
    targets = rng.integers(0, 61, (2, 8)).astype(np.int32)
    compare(tmp_path, "llama.kiln", LLAMA,
            {"tokens": tokens, "targets": targets},
            lambda t: ce(ref.llama(t, LLAMA, tokens), targets), 12)


def test_bert_masked_lm_gradients(tmp_path):
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 83, (2, 10)).astype(np.int32)
    types = rng.integers(0, 2, (2, 10)).astype(np.int32)
    mask = np.ones((2, 10), np.int32)
    mask[1, 7:] = 0
    labels = np.full((2, 10), -100, np.int32)  # only masked positions score
    labels[0, [1, 4, 8]] = rng.integers(0, 83, 3)
    labels[1, [0, 5]] = rng.integers(0, 83, 2)
    compare(tmp_path, "bert.kiln", BERT,
            {"input_ids": ids, "token_type_ids": types,
             "attention_mask": mask, "labels": labels},
            lambda t: ce(ref.bert(t, BERT, ids, types, mask), labels), 13)


def test_t5_encoder_decoder_gradients(tmp_path):
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 71, (2, 11)).astype(np.int32)
    mask = np.ones((2, 11), np.int32)
    mask[0, 8:] = 0
    dec = rng.integers(0, 71, (2, 6)).astype(np.int32)
    labels = rng.integers(0, 71, (2, 6)).astype(np.int32)
    labels[1, 5] = -100
    compare(tmp_path, "t5.kiln", T5,
            {"input_ids": ids, "attention_mask": mask,
             "decoder_input_ids": dec, "labels": labels},
            lambda t: ce(ref.t5(t, T5, ids, mask, dec), labels), 14)
