"""kiln: a compiler and runtime for transformer models.

    import kiln, numpy as np
    model = kiln.compile("examples/gpt2.kiln", defines={"n_layer": 2})
    logits = model.forward(tokens=np.array([[1, 2, 3]], np.int32))
    print(model.ir("mlir")[:200])

The package is a thin layer over the extension module ``_kiln``, which links
the same compiler and runtime libraries as the ``kiln`` command line.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import (Any, Dict, Iterator, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import numpy as np


def _own_runnable_threads() -> int:
    """This process's runnable threads (state R), this one included: a
    library imported before kiln may have threads spinning (OpenBLAS's)."""
    running = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # "tid (name) S ...": the state follows the last ')'.
        if stat[stat.rfind(")") + 2:stat.rfind(")") + 3] == "R":
            running += 1
    return max(running, 1)


def _other_runnable_tasks() -> int:
    """Runnable tasks besides this process's: the fewest of five samples of
    /proc/stat's procs_running less this process's runnable threads, a
    millisecond apart; -1 when it cannot be read (the CLI's
    otherRunnableTasks, tools/kiln.cpp)."""
    import time
    fewest = -1
    for i in range(5):
        if i:
            time.sleep(0.001)
        try:
            with open("/proc/stat") as f:
                running = next((int(line.split()[1]) for line in f
                                if line.startswith("procs_running ")), -1)
        except (OSError, ValueError, IndexError):
            return -1
        if running < 1:
            return -1
        others = max(0, running - _own_runnable_threads())
        fewest = others if fewest < 0 else min(fewest, others)
    return fewest


# kiln's kernels and oneDNN share one OpenMP pool. Unless the user chose a
# policy, waiting threads sleep at once when other work is running as kiln
# is imported, and spin as long as OpenMP's default (300,000 times) on free
# cores, as the CLI's do (docs/threads.md). OpenMP reads this once, when it
# is first loaded: importing kiln before other OpenMP users (torch) makes
# it apply.
if "OMP_WAIT_POLICY" not in os.environ and \
        "GOMP_SPINCOUNT" not in os.environ:
    if _other_runnable_tasks() == 0:
        os.environ["GOMP_SPINCOUNT"] = "300000"
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from . import _kiln  # noqa: E402

__version__ = _kiln.VERSION

__all__ = ["AdamW", "Communicator", "CompileError", "Model", "SGD",
           "TextDataset", "Tokenizer", "Trainer", "compile", "dequantize",
           "load", "load_tokenizer", "mpi", "quantize", "train"]

PathLike = Union[str, "os.PathLike[str]"]


class CompileError(Exception):
    """A model that does not compile: the first error's place and message.

    Attributes: ``file``, ``line``, ``column`` (1-based; 0 when the error has
    no place in the source), ``message``, and ``diagnostics``, every error as
    ``(file, line, column, message)``.
    """

    def __init__(self, diagnostics: Sequence[Tuple[str, int, int, str]]):
        self.diagnostics = [tuple(d) for d in diagnostics]
        self.file, self.line, self.column, self.message = self.diagnostics[0]
        super().__init__(self._text())

    def _text(self) -> str:
        lines = []
        for file, line, column, message in self.diagnostics:
            where = f"{file}:{line}:{column}: " if file else ""
            lines.append(f"{where}error: {message}")
        return "\n".join(lines)


def _is_source(text: Union[str, "os.PathLike[str]"]) -> bool:
    return isinstance(text, str) and ("\n" in text or "{" in text)


class Tokenizer:
    """A tokenizer: ``encode(text)`` gives token ids, ``decode(ids)`` text.
    ``kind`` is ``"char"``, ``"byte"``, ``"llama2c"``, ``"gpt2"``,
    ``"wordpiece"`` or ``"sentencepiece"``; ``bos`` and ``eos`` are -1 where
    the kind has none. Each kind encodes as its reference does (llama2.c,
    GPT-2's encoder, BERT's tokenizer, libsentencepiece); see
    docs/generation.md. Get one from a model (``model.tokenizer``) or from
    files with ``kiln.load_tokenizer``."""

    def __init__(self, impl: Any):
        self._impl = impl

    @property
    def kind(self) -> str:
        return self._impl.kind

    @property
    def bos(self) -> int:
        return self._impl.bos

    @property
    def eos(self) -> int:
        return self._impl.eos

    def __len__(self) -> int:
        return self._impl.size

    def encode(self, text: Union[str, bytes]) -> List[int]:
        """Token ids of ``text`` (str, as UTF-8, or bytes)."""
        return self._impl.encode(text)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The bytes ``ids`` stand for: ``decode_bytes(encode(b)) == b``
        for every byte string."""
        return self._impl.decode_bytes([int(i) for i in ids])

    def decode(self, ids: Sequence[int]) -> str:
        """The text ``ids`` stand for; bytes that are not valid UTF-8 become
        U+FFFD (use ``decode_bytes`` for the raw bytes)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"<kiln.Tokenizer {self.kind}, {len(self)} tokens>"


def load_tokenizer(path: PathLike) -> Tokenizer:
    """A tokenizer from its files: a llama2.c ``tokenizer.bin``, a
    SentencePiece ``.model``, Hugging Face's ``tokenizer.json``, GPT-2's
    ``vocab.json`` + ``merges.txt`` (or ``encoder.json`` + ``vocab.bpe``), a
    BERT ``vocab.txt``, or a directory holding one of them; ``"gpt2:DIR"``
    insists on a kind. Raises ``ValueError`` naming the file and entry."""
    return Tokenizer(_kiln.load_tokenizer(os.fspath(path)))


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    import difflib
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _as_input(function: str, spec: Dict[str, Any], value: Any) -> np.ndarray:
    """`value` as the array input `spec` declares: the declared dtype as
    it is; lists, bools and other integer widths converted when every value
    fits; anything else refused with the conversion to make."""
    want = np.dtype(spec["dtype"])
    name = f"input '{spec['name']}' of '{function}'"
    if isinstance(value, np.ndarray) and value.dtype == want:
        return value
    from_list = not isinstance(value, np.ndarray)
    try:
        a = np.asarray(value)
    except Exception as e:  # ragged lists
        raise TypeError(f"{name}: cannot be made an array ({e})") from None
    if a.dtype == want:
        return a
    hint = f"use .astype(np.{want.name})"
    if want.kind in "iu":
        if a.dtype.kind == "b" or (a.dtype.kind in "iu" and a.size == 0):
            return a.astype(want)
        if a.dtype.kind in "iu":
            info = np.iinfo(want)
            lo, hi = int(a.min()), int(a.max())
            if info.min <= lo and hi <= info.max:
                return a.astype(want)
            raise ValueError(f"{name} holds {lo if lo < info.min else hi}, "
                             f"outside {want.name}")
    elif want.kind == "f":
        if a.dtype.kind in "biu" or (from_list and a.dtype.kind == "f"):
            return a.astype(want)
    elif want.kind == "b" and a.dtype.kind in "iu" and \
            np.isin(a, (0, 1)).all():
        return a.astype(want)
    raise TypeError(f"{name} is {a.dtype.name}, the model takes "
                    f"{want.name}: {hint}")


class Profile:
    """What ``Model.profile`` recorded: ``slices`` (kernels and calls) and
    ``summary()``, the top kernels by time."""

    def __init__(self, impl: Any, top: int):
        self._impl, self._top = impl, top

    @property
    def slices(self) -> int:
        return self._impl.slices

    def summary(self, top: Optional[int] = None) -> str:
        return self._impl.summary(int(top or self._top))

    def __repr__(self) -> str:
        return f"<kiln.Profile {self.slices} slices>"


class Model:
    """A compiled model: call its functions with NumPy arrays.

    ``model.run("forward", tokens=x)`` or ``model.forward(tokens=x)`` returns
    one array, or a tuple for functions with several results. Inputs must
    have the declared dtype and rank (``ValueError`` names the input
    otherwise); symbolic dimensions (batch, sequence) take any size.
    """

    def __init__(self, impl: Any, request: Optional[Dict[str, Any]] = None,
                 threads: Optional[int] = None, directory: str = "."):
        self._impl = impl
        self._request = request
        self._directory = directory
        self.threads = threads
        # What a kiln.Trainer did to the weights since the last save, for
        # the artifact's history.
        self._training: Optional[str] = None

    @property
    def threads(self) -> Optional[int]:
        """Threads for this model's calls; None (the default) uses one per
        core. Set per model: models in different Python threads do not
        affect each other."""
        return self._impl.threads or None

    @threads.setter
    def threads(self, n: Optional[int]) -> None:
        if n is not None and (not isinstance(n, int) or not
                              1 <= n <= _kiln.MAX_THREADS):
            raise ValueError(f"threads must be an integer from 1 to "
                             f"{_kiln.MAX_THREADS} or None, got {n!r}")
        self._impl.threads = n or 0

    @property
    def tokenizer(self) -> Optional[Tokenizer]:
        """The artifact's tokenizer (from ``kiln train`` or ``compile(...,
        tokenizer=...)``), or None."""
        impl = self._impl.tokenizer
        return Tokenizer(impl) if impl is not None else None

    @property
    def name(self) -> str:
        """The model's name (``model gpt2(...)``)."""
        return self._impl.name

    @property
    def history(self) -> List[str]:
        """How the artifact was made, oldest first: the compile command or
        ``kiln.compile(...)`` call, then each ``kiln train`` run and each
        ``kiln.Trainer`` run that was saved."""
        return list(self._impl.history)

    def functions(self) -> List[Dict[str, Any]]:
        """Each function's name, inputs and outputs (name, dtype, dims)."""
        return self._impl.functions()

    def attention_layout(self, T: int) -> List[Dict[str, Any]]:
        """Each attention op's pattern and the 64x64 blocks its kernels
        compute at sequence length ``T``, as ``kiln inspect
        --attention-layout=T`` shows them: per op, ``function``,
        ``location``, ``pattern``, ``causal``, ``num_heads``, ``blocks``
        (query and key blocks) and ``heads``, one entry when every head has
        the same layout, else one per head, each with ``computed`` and
        ``masked`` block counts, ``density`` and ``layout``: rows of ``#``
        (computed whole), ``+`` (computed with a mask inside) and ``.``
        (skipped)."""
        return self._impl.attention_layout(int(T))

    def hyperparameters(self) -> Dict[str, Any]:
        """The hyperparameters the model was compiled with, of the kinds the
        model declares (int, float or bool)."""
        return self._impl.hyperparameters()

    def run(self, function: str, /, *args: Any,
            kernels: Optional[str] = None, **inputs: Any):
        """Runs ``function``; returns an array or a tuple of arrays.

        Inputs go by name or in the signature's order (``model.forward(x)``).
        Arrays of the declared dtype pass as they are; Python lists, bool
        masks and integer ids of another width (int64) are converted when
        every value fits, and anything else is refused with the conversion
        to make. ``kernels="reference"`` runs the naive reference kernels
        that define each op instead of the fast ones (``"fast"``, the
        default unless ``KILN_REFERENCE_KERNELS=1``): slower, for checking
        a result."""
        info = self._function(function)
        specs = info["inputs"]
        if len(args) > len(specs):
            raise TypeError(
                f"'{function}' takes {len(specs)} input(s) "
                f"({', '.join(s['name'] for s in specs)}), got {len(args)} "
                f"positional")
        for spec, value in zip(specs, args):
            if spec["name"] in inputs:
                raise TypeError(f"input '{spec['name']}' of '{function}' is "
                                f"given twice")
            inputs[spec["name"]] = value
        names = [s["name"] for s in specs]
        for key in inputs:
            if key not in names:
                raise TypeError(f"'{function}' has no input '{key}'"
                                f"{_did_you_mean(key, names)}; its inputs: "
                                f"{', '.join(names)}")
        arrays = {s["name"]: _as_input(function, s, inputs[s["name"]])
                  for s in specs if s["name"] in inputs}
        out = self._impl.run(function, arrays, kernels or "")
        return out[0] if len(out) == 1 else tuple(out)

    def _function(self, function: str) -> Dict[str, Any]:
        fns = self._impl.functions()
        for f in fns:
            if f["name"] == function:
                return f
        names = [f["name"] for f in fns]
        raise ValueError(f"the model has no function '{function}'"
                         f"{_did_you_mean(function, names)}; its functions: "
                         f"{', '.join(names)}")

    def num_parameters(self, trainable_only: bool = False) -> int:
        """How many values the parameters hold (all, or the trainable
        ones: frozen quantized weights and LoRA bases excluded)."""
        frozen = set() if not trainable_only else {
            p["name"] for p in self._impl.parameter_info()
            if not p["trainable"]}
        return sum(int(np.prod(p["shape"], dtype=np.int64))
                   for p in self._impl.parameter_info()
                   if p["name"] not in frozen)

    def __repr__(self) -> str:
        lines = [f"kiln.Model {self.name!r}: "
                 f"{self.num_parameters():,} parameters in "
                 f"{len(self._impl.parameter_info())} tensors"]
        tok = self.tokenizer
        if tok is not None:
            lines.append(f"  tokenizer: {tok.kind}, {tok.size} tokens")
        for f in self._impl.functions():
            def sig(a):
                return f"{a['name']}: {a['dtype']}[{', '.join(a['dims'])}]"
            lines.append(f"  {f['name']}({', '.join(map(sig, f['inputs']))})"
                         f" -> {', '.join(map(sig, f['outputs']))}")
        return "\n".join(lines)

    def gradients(self, loss: str = "loss", /, **inputs: np.ndarray
                  ) -> Tuple[float, Dict[str, np.ndarray]]:
        """Runs ``{loss}_grad`` (compile with ``grad=loss``): the loss, and
        the gradient of every trainable parameter by the parameter's name
        (``{"wte.weight": array, ...}``; frozen parameters have none)."""
        info = next((f for f in self._impl.functions()
                     if f["name"] == loss + "_grad"), None)
        if info is None:
            raise ValueError(f"the model has no function '{loss}_grad'; "
                             f"compile it with grad=\"{loss}\"")
        out = self._impl.run(loss + "_grad", inputs, "")
        grads = {}
        for o, array in zip(info["outputs"][1:], out[1:]):
            name = o["name"]
            grads[name[:-len(".grad")] if name.endswith(".grad") else name] = \
                array
        return float(out[0]), grads

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if any(f["name"] == name for f in self._impl.functions()):
            return lambda *args, **inputs: self.run(name, *args, **inputs)
        raise AttributeError(f"the model has no function or attribute "
                             f"'{name}'")

    def parameters(self) -> Dict[str, np.ndarray]:
        """Every parameter by name, as arrays (copies)."""
        return self._impl.parameters()

    def load_weights(self, weights: Union[PathLike, Mapping[str, np.ndarray]]
                     ) -> None:
        """Replaces every parameter from a .safetensors file or a mapping of
        arrays; names, dtypes and shapes must match exactly."""
        if isinstance(weights, Mapping):
            self._impl.set_parameters(dict(weights))
        else:
            self._impl.load_weights(os.fspath(weights))

    def save_weights(self, path: PathLike) -> None:
        """Writes every parameter to a .safetensors file."""
        self._impl.save_weights(os.fspath(path))

    @property
    def lora(self) -> Optional[dict]:
        """The model's LoRA adapters (``compile(lora=...)``): ``{"rank",
        "alpha", "targets"}``, or None."""
        return self._impl.lora

    def save_adapter(self, directory: PathLike) -> None:
        """Writes the LoRA adapters as PEFT does: ``adapter_model.safetensors``
        and ``adapter_config.json`` in ``directory`` (created if needed);
        ``compile(adapter=directory)`` and PEFT read them back."""
        self._impl.save_adapter(os.fspath(directory))

    def merge_adapters(self, path: PathLike,
                       quantize: Optional[str] = None) -> None:
        """Writes the weights with the LoRA adapters folded in (each adapted
        weight W + alpha/rank B A; f32, or quantized as ``quantize`` says) to
        a .safetensors file that ``compile(source, weights=path)`` reads
        without ``lora``: ``kiln merge``."""
        self._impl.merge_adapters(os.fspath(path), quantize or "")

    @contextlib.contextmanager
    def profile(self, path: Optional[PathLike] = None, top: int = 20
                ) -> Iterator["Profile"]:
        """Records every call of this model inside the ``with`` block — one
        slice per kernel with its op, shapes, source location, bytes and
        time — and writes a Chrome/Perfetto trace to ``path`` at the end,
        as ``kiln run --profile`` (docs/profiling.md)::

            with model.profile("trace.json") as p:
                model.forward(tokens=x)
            print(p.summary())   # the top kernels, as kiln inspect --profile
        """
        impl = _kiln.Profiler()
        self._impl.set_profiler(impl)
        result = Profile(impl, top)
        try:
            yield result
        finally:
            self._impl.set_profiler(None)
            if path is not None:
                impl.write_trace(os.fspath(path))

    def save(self, path: PathLike) -> None:
        """Writes the artifact (.kart), with the current parameter values;
        its history gains a line for training done since the last save."""
        if self._training:
            self._impl.append_history(self._training)
            self._training = None
        self._impl.save(os.fspath(path))

    def _prompt_ids(self, prompt: Any) -> List[int]:
        if isinstance(prompt, (str, bytes)):
            tok = self.tokenizer
            if tok is None:
                raise ValueError("the model has no tokenizer: give token ids, "
                                 "or compile with tokenizer=...")
            ids = tok.encode(prompt)
            # An encoder-decoder's source ends with EOS, as T5 was trained
            # (Hugging Face's tokenizer appends it too).
            if self._impl.encoder_decoder and tok.eos >= 0:
                ids.append(tok.eos)
            return ids
        return [int(i) for i in prompt]

    def _generation(self, prompts: List[List[int]], max_tokens: int,
                    temperature: float, top_k: int, top_p: float,
                    repetition_penalty: float, seed: int,
                    recompute: bool) -> Any:
        return _kiln.Generation(self._impl, prompts, int(max_tokens),
                                float(temperature), int(top_k), float(top_p),
                                float(repetition_penalty), int(seed),
                                bool(recompute))

    def generate(self, prompt: Any = None, max_tokens: int = 16,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                 *, top_k: int = 0, repetition_penalty: float = 1.0,
                 stop: Union[str, Sequence[str], None] = None,
                 prompt_ids: Optional[Sequence[int]] = None,
                 recompute: bool = False, stats: Optional[dict] = None
                 ) -> Any:
        """Continues a prompt with a decoder model (``forward`` maps token
        ids [B, T] to logits [B, T, vocab]), decoding incrementally with the
        compiled key/value cache (``recompute=True`` reruns the whole
        sequence for each token instead, as a check).

        A text ``prompt`` needs the model's tokenizer and returns the text:
        the prompt and its continuation, exactly what ``kiln generate
        --prompt`` prints. An encoder-decoder (T5) takes the prompt as its
        source and returns only the text it writes, which starts from the
        model's ``decoder_start_token_id``. Token ids (``prompt`` or ``prompt_ids``) return
        the new ids (int32). A list of prompts (texts, or lists of ids) of
        any lengths decodes as one batch and returns a list.

        Sampling, in this order: ``repetition_penalty`` (1: off),
        ``temperature`` (0: greedy), ``top_k`` (0: all), ``top_p``; the same
        seed gives the same tokens as ``kiln generate``. Generation ends
        early where the model emits its tokenizer's BOS or EOS (llama2.c
        tokenizers) or where the text contains a ``stop`` string (cut off
        a text result; token ids end with the token that completed it). ``stats``, a dict, receives the token counts and the
        prefill and decoding times."""
        if prompt_ids is not None:
            if prompt is not None:
                raise TypeError("give prompt or prompt_ids, not both")
            prompt = prompt_ids
        if prompt is None:
            raise TypeError("generate needs a prompt: text or token ids")
        batch = (isinstance(prompt, (list, tuple)) and len(prompt) > 0 and
                 not isinstance(prompt[0], (int, np.integer)))
        prompts = list(prompt) if batch else [prompt]
        text = [isinstance(p, (str, bytes)) for p in prompts]
        ids = [self._prompt_ids(p) for p in prompts]
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if stops and self.tokenizer is None:
            raise ValueError("stop strings need the model's tokenizer")
        gen = self._generation(ids, max_tokens, temperature, top_k, top_p,
                               repetition_penalty, seed, recompute)
        cut: Dict[int, int] = {}
        while not gen.done:
            for row, _ in gen.step():
                if stops:
                    new = self.tokenizer.decode(gen.generated[row])
                    hits = [new.find(s) for s in stops if s in new]
                    if hits:
                        cut[row] = min(hits)
                        gen.end(row)
        if stats is not None:
            stats.update(gen.stats)
        results = []
        for row, (p, new) in enumerate(zip(ids, gen.generated)):
            if text[row]:
                tok = self.tokenizer
                out = tok.decode(new)
                if row in cut:
                    out = out[:cut[row]]
                # An encoder-decoder's prompt is its source, not the start
                # of the text it writes.
                results.append(out if self._impl.encoder_decoder
                               else tok.decode(p) + out)
            else:
                results.append(np.asarray(new, dtype=np.int32))
        return results if batch else results[0]

    def generate_tokens(self, prompt: Any, max_tokens: int = 16,
                        temperature: float = 1.0, top_p: float = 1.0,
                        seed: int = 0, *, top_k: int = 0,
                        repetition_penalty: float = 1.0,
                        recompute: bool = False) -> Iterator[int]:
        """Yields the new token ids one at a time as they are decoded (the
        same tokens ``generate`` returns for these settings); ``prompt`` is
        text or token ids. Print text as it comes with the tokenizer:
        ``tok.decode(ids_so_far)``."""
        gen = self._generation([self._prompt_ids(prompt)], max_tokens,
                               temperature, top_k, top_p, repetition_penalty,
                               seed, recompute)
        while not gen.done:
            for _, token in gen.step():
                yield token

    def kv_cache(self, batch: int, slots: int) -> Any:
        """Key/value caches for ``batch`` sequences of up to ``slots``
        positions, for driving the compiled ``decode`` function yourself:
        ``cache.append([[ids...], ...])`` runs each row's new tokens (rows
        may differ in length, or get none) and returns the logits
        [B, T, vocab] (row b's valid for its own tokens); ``cache.lengths``
        gives each row's positions so far. An encoder-decoder (T5) decodes
        against a source: first ``cache.set_context({"input_ids": ...,
        "attention_mask": ...})`` (the names in ``cache.context_inputs``),
        which runs the compiled ``prepare`` (the encoder, and its keys and
        values for each cross-attention) once."""
        return _kiln.KvCache(self._impl, int(batch), int(slots))

    def ir(self, stage: str = "mlir") -> str:
        """The text of a compilation stage: ``ast``, ``mlir`` (after the
        frontend pipeline, and autodiff when compiled with ``grad``),
        ``lowered`` (with runtime kernels), ``params`` or ``cuda`` (CUDA C++
        of the kernels kiln generates, as ``kiln compile --emit=cuda``)."""
        if self._request is None:
            raise ValueError("ir() needs a model made by kiln.compile(); "
                             "this one was loaded from an artifact")
        if stage not in ("ast", "mlir", "lowered", "params", "cuda"):
            raise ValueError(f"unknown stage '{stage}'; use ast, mlir, "
                             f"lowered, params or cuda")
        # The IR of the model as compiled; weights files are not rewritten.
        request = dict(self._request, stage=stage, external_weights="",
                       train_step=None if stage not in ("lowered", "cuda")
                       else self._request.get("train_step"))
        ok, text, errors = _kiln.compile(**request)
        if not ok:
            raise CompileError(errors)
        return text

    def _compile_train_step(self, loss: str, step: Dict[str, Any]) -> bool:
        """Recompiles this model with a compiled ``train_step`` (forward,
        backward and the optimizer update in one function, as ``kiln
        train`` uses) with the optimizer settings ``step``, keeping the
        current parameter values; False when the model did not come from
        ``kiln.compile(..., grad=loss)``."""
        if self._request is None or self._request.get("grad") != loss:
            return False
        if self._request.get("train_step") == step:
            return True
        request = dict(self._request, train_step=step, external_weights="")
        ok, data, errors = _kiln.compile(**dict(request, stage="kart"))
        if not ok:
            raise CompileError(errors)
        impl = _kiln.Model.from_bytes(data, self._directory)
        if self._request.get("quantize"):
            # Quantized weights move as their checkpoint tensors (codes and
            # scales), which is how a model accepts them.
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "weights.safetensors")
                self._impl.save_weights(path)
                impl.load_weights(path)
        else:
            impl.set_parameters(self._impl.parameters())
        impl.threads = self._impl.threads
        self._impl, self._request = impl, request
        return True


def compile(path_or_source: Union[PathLike, str], target: str = "cpu",
            defines: Optional[Mapping[str, Any]] = None, seed: int = 0,
            weights: Optional[PathLike] = None, grad: Optional[str] = None,
            recompute: bool = False, fuse: bool = True,
            tokenizer: Optional[PathLike] = None,
            threads: Optional[int] = None,
            external_weights: Optional[PathLike] = None,
            attention: Optional[str] = None,
            attention_functions: Optional[Sequence[str]] = None,
            attention_blocks: Optional[Sequence[str]] = None,
            quantize: Optional[str] = None,
            quantize_params: Optional[Sequence[str]] = None,
            lora: Optional[str] = None,
            adapter: Optional[PathLike] = None,
            decode: Optional[bool] = None) -> Model:
    """Compiles a model from a .kiln file or from model text.

    ``defines`` overrides hyperparameters (``{"n_layer": 2}``), ``seed``
    seeds the initializers, ``weights`` imports trained weights (.safetensors,
    a llama2.c .bin, or a Hugging Face model directory whose config.json
    sets the hyperparameters and whose tokenizer comes along),
    ``tokenizer`` carries a tokenizer in the model (a file or directory, as
    ``kiln compile --tokenizer``; for ``generate(prompt=text)``), ``grad="loss"`` also derives ``loss_grad``
    (``recompute`` recomputes block activations in it). ``fuse=False``
    skips the fusion passes (to compare with the unfused kernels).
    ``threads`` sets the model's thread count (default: one per core).
    ``external_weights`` writes the weights to that .safetensors file and
    keeps them out of the artifact, as ``kiln compile --external-weights``
    (the model reads them from there; ``save_weights`` exports them again
    after training). ``attention="sliding_window:512"`` gives the model's
    attention ops a sparse pattern, as ``kiln compile --attention`` (see
    docs/sparse-attention.md), restricted to ``attention_functions`` and
    ``attention_blocks`` (``["h.0-5"]``) when given. ``quantize="nf4"``
    (or ``"int8"``, ``"int4:group=128"``) stores the model's matmul weights
    quantized and frozen, as ``kiln compile --quantize`` (see
    docs/quantization.md), or the parameters ``quantize_params`` selects
    (globs: ``["h.*.mlp.*"]``). ``lora="rank=8,alpha=16"`` (and
    ``targets=GLOB``) adds LoRA adapters beside the linear layers and freezes
    everything else, as ``kiln compile --lora``; ``adapter`` starts them
    from a PEFT adapter directory (alone, its config sets ``lora``).
    A causal decoder gets ``decode``, incremental decoding with a key/value
    cache (what ``generate`` uses); ``decode=True`` insists (a model that
    cannot have it raises ``CompileError`` saying why), ``decode=False``
    leaves it out. ``target="cpu,cuda"`` also compiles the model's CUDA
    kernels with nvcc into the artifact (``"cuda"``: for the GPU only), as
    ``kiln compile --target`` (docs/cuda.md). Raises ``CompileError`` with
    the file, line and column of the first error.
    """
    is_path = not _is_source(path_or_source)
    source = os.fspath(path_or_source)
    if is_path and not Path(source).is_file():
        raise FileNotFoundError(f"{source}: no such model file")
    request = dict(
        source=source, is_path=is_path,
        defines=[(str(k), str(v)) for k, v in (defines or {}).items()],
        seed=int(seed), weights=os.fspath(weights) if weights else "",
        tokenizer=os.fspath(tokenizer) if tokenizer else "",
        grad=grad or "", recompute=bool(recompute), fuse=bool(fuse),
        external_weights=os.fspath(external_weights) if external_weights
        else "", train_step=None, attention=attention or "",
        attention_functions=[str(f) for f in attention_functions or []],
        attention_blocks=[str(b) for b in attention_blocks or []],
        quantize=quantize or "",
        quantize_params=[str(p) for p in quantize_params or []],
        lora=lora or "", adapter=os.fspath(adapter) if adapter else "",
        decode={None: "auto", True: "required", False: "off"}[decode],
        target=str(target))
    # How the artifact was made, for its history (`kiln inspect`): the call,
    # with the arguments that differ from their defaults, files by their
    # names only (as the CLI records them).
    def name_of(p):
        return None if not p else Path(os.fspath(p)).name
    given = dict(target=None if target == "cpu" else target,
                 defines=dict(defines) if defines else None,
                 seed=seed or None, weights=name_of(weights), grad=grad,
                 recompute=recompute or None,
                 fuse=None if fuse else False, tokenizer=name_of(tokenizer),
                 external_weights=name_of(external_weights),
                 attention=attention,
                 attention_functions=attention_functions,
                 attention_blocks=attention_blocks, quantize=quantize,
                 quantize_params=quantize_params, lora=lora,
                 adapter=name_of(adapter), decode=decode)
    request["provenance"] = "kiln.compile(" + ", ".join(
        [repr(name_of(source)) if is_path else "<model text>"] +
        [f"{k}={v!r}" for k, v in given.items() if v is not None]) + ")"
    ok, data, errors = _kiln.compile(**dict(request, stage="kart"))
    if not ok:
        raise CompileError(errors)
    directory = str(Path(source).parent) if is_path else "."
    impl = _kiln.Model.from_bytes(
        data, directory,
        os.fspath(external_weights) if external_weights else "")
    return Model(impl, request, threads, directory)


def load(path: PathLike, threads: Optional[int] = None,
         weights_file: Optional[PathLike] = None,
         device: str = "cpu") -> Model:
    """Loads a .kart artifact (verified completely before it can run);
    ``threads`` as in ``compile``. An artifact compiled with external
    weights finds them beside itself; ``weights_file`` points elsewhere.
    ``device="cuda"`` (or ``"cuda:N"``) runs the model's calls on a GPU: an
    artifact compiled with ``target="cpu,cuda"``, on the NVIDIA driver
    (``RuntimeError`` says why when there is none; docs/cuda.md)."""
    if not Path(os.fspath(path)).is_file():
        raise FileNotFoundError(f"{os.fspath(path)}: no such artifact" + (
            "" if Path(os.fspath(path)).exists() else
            " (kiln.compile(...).save(path) writes one)"))
    return Model(_kiln.Model.load(
        os.fspath(path),
        os.fspath(weights_file) if weights_file is not None else "",
        str(device)), threads=threads)


def quantize(weight: np.ndarray, spec: str = "nf4",
             name: str = "weight") -> Dict[str, np.ndarray]:
    """Quantizes an f32 weight as ``kiln compile --quantize=SPEC`` does, and
    returns the tensors a checkpoint stores for it, named after ``name``
    (docs/quantization.md):

    - ``"nf4"`` (``nf4:block=64,double=true``): bitsandbytes' NF4, byte for
      byte — ``name`` (packed codes, uint8), ``name.absmax``,
      ``name.quant_map``, ``name.nested_absmax``, ``name.nested_quant_map``
      and ``name.quant_state.bitsandbytes__nf4`` (uint8 JSON);
    - ``"int8"``: ``name`` (int8 [N, K]) and ``name.scale`` (one per row);
    - ``"int4"`` (``int4:group=32``): ``name`` (uint8, two codes a byte),
      ``name.scale``, ``name.zero_point`` and
      ``name.quant_state.kiln__int4``.
    """
    return _kiln.quantize(weight, spec, name)


def dequantize(tensors: Mapping[str, np.ndarray],
               name: str = "weight") -> np.ndarray:
    """The f32 weight that the quantized tensors named after ``name`` stand
    for (any of the formats ``quantize`` writes, including a bitsandbytes
    NF4 state dict). Every tensor's dtype and shape, and the quant state's
    fields, are checked; ValueError names the one that is wrong."""
    return _kiln.dequantize(dict(tensors), name)


@dataclass
class AdamW:
    """AdamW as ``torch.optim.AdamW`` (decoupled weight decay, applied to
    parameters of rank >= 2 only)."""
    lr: float = 1e-3
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class SGD:
    """SGD with momentum as ``torch.optim.SGD`` (coupled weight decay on
    parameters of rank >= 2)."""
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 0.0


Batch = Mapping[str, np.ndarray]


_MAX_BATCH, _MAX_SEQ = 65536, 1 << 20  # as kiln train (tools/Options.h)


class TextDataset:
    """The training data of ``kiln train``, for a loop in Python: the same
    files (text, or token ids: nanoGPT's uint16 arrays, llm.c's files), the
    same tokenizers, the same held-out tail and the same batch sampler, so
    ``kiln.Trainer`` steps on these batches give exactly the weights ``kiln
    train`` gives with the same settings (docs/training.md).

        data = kiln.TextDataset("input.txt", seq=64, batch=8)
        model = kiln.compile("examples/gpt2.kiln", grad="loss",
                             defines={"vocab_size": data.vocab_size})
        trainer = kiln.Trainer(model, kiln.AdamW(lr=3e-3), total_steps=100)
        for step in range(100):
            loss = trainer.step(data.next_batch())

    ``tokenizer``: ``"char"`` (the default for text: the file's distinct
    characters), ``"byte"``, a ``kiln.Tokenizer``, or tokenizer files (as
    ``kiln.load_tokenizer``); token files need none. The last
    ``eval_fraction`` of the tokens is held out (``eval_batch``). Batches
    are dicts ``{"tokens": [batch, seq], "targets": [batch, seq]}`` of
    int32 (``names`` renames them); the sampler's position is
    ``rng_state``, which checkpoints save and restore.
    """

    def __init__(self, path: PathLike, *, tokenizer: Union[str, Tokenizer,
                 "os.PathLike[str]", None] = None, seq: int = 64,
                 batch: int = 8, eval_fraction: float = 0.1, seed: int = 0,
                 token_dtype: Optional[str] = None,
                 names: Tuple[str, str] = ("tokens", "targets")):
        path = os.fspath(path)
        for name, value, top in (("seq", seq, _MAX_SEQ),
                                 ("batch", batch, _MAX_BATCH)):
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not 1 <= value <= top:
                raise ValueError(f"{name} must be an integer from 1 to {top},"
                                 f" got {value!r}")
        if not 0 <= float(eval_fraction) < 0.9:
            raise ValueError(f"eval_fraction must be in [0, 0.9), got "
                             f"{eval_fraction!r}")
        if not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer from 0 to 2**64 - 1, "
                             f"got {seed!r}")
        if token_dtype not in (None, "uint16", "uint32"):
            raise ValueError(f"token_dtype must be 'uint16', 'uint32' or "
                             f"None, got {token_dtype!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such data file")
        token_data = path.endswith(".bin")
        if token_dtype and not token_data:
            raise ValueError("token_dtype applies to token files (.bin)")
        self.path, self.seq, self.batch = path, seq, batch
        self.eval_fraction, self.seed = float(eval_fraction), seed
        self.token_dtype, self.names = token_dtype, tuple(names)
        # The tokenizer as kiln train's settings name it, when it has a name.
        self._tokenizer_spec: Optional[str] = None
        tok: Optional[Tokenizer] = None
        if token_data:
            if tokenizer in ("char", "byte"):
                raise ValueError(
                    f"a '{tokenizer}' tokenizer is built from text; {path} "
                    f"holds token ids (pass the tokenizer that made them, "
                    f"or none)")
            ids, info = _kiln.read_token_file(path, token_dtype or "")
            self.format = info["format"]
        else:
            text = _kiln.read_training_text(path)
            self.format = "text"
        if isinstance(tokenizer, Tokenizer):
            tok = tokenizer
        elif tokenizer is None or tokenizer in ("char", "byte"):
            if not token_data:
                kind = tokenizer or "char"
                tok = Tokenizer(_kiln.tokenizer_from_text(kind, text))
                self._tokenizer_spec = kind
        else:
            tok = load_tokenizer(tokenizer)
            self._tokenizer_spec = os.fspath(tokenizer)
        if not token_data:
            ids = np.asarray(tok._impl.encode(text), dtype=np.int32)
        elif tok is not None and info["max_id"] >= len(tok):
            raise ValueError(
                f"{path}: id {info['max_id']} at byte offset "
                f"{info['max_id_offset']} is outside the tokenizer's "
                f"{len(tok)} tokens" + (
                    " (ids were read as uint16; token_dtype='uint32' for "
                    "32-bit ids)" if info["id_bytes"] == 2 and
                    not token_dtype else ""))
        self.tokenizer = tok
        self._max_id = int(ids.max()) if len(ids) else -1
        try:
            self._data = _kiln.TextData(ids, self.eval_fraction, seq)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        self.rng_state = _kiln.data_rng_state(seed)

    @property
    def vocab_size(self) -> int:
        """The tokenizer's size, or (token files without one) the largest
        id plus one."""
        return len(self.tokenizer) if self.tokenizer else self._max_id + 1

    @property
    def train_tokens(self) -> int:
        return self._data.train_tokens

    @property
    def eval_tokens(self) -> int:
        return self._data.eval_tokens

    def next_batch(self) -> Dict[str, np.ndarray]:
        """The next training batch: ``batch`` windows of ``seq`` tokens at
        random places of the training part, and their next tokens."""
        tokens, targets, self.rng_state = self._data.train_batch(
            self.rng_state, self.batch)
        return {self.names[0]: tokens, self.names[1]: targets}

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        return self.next_batch()

    def eval_batch(self, k: int) -> Dict[str, np.ndarray]:
        """Evaluation batch ``k``: fixed windows of the held-out tail (``kiln
        train`` evaluates on batches 0 to ``--eval-batches`` - 1)."""
        tokens, targets = self._data.eval_batch(int(k), self.batch)
        return {self.names[0]: tokens, self.names[1]: targets}

    def _tokenizer_name(self) -> str:
        return self.tokenizer.kind if self.tokenizer else "none"

    def settings(self) -> Dict[str, Any]:
        """These choices in ``kiln train``'s words (its config file's keys)."""
        out: Dict[str, Any] = {"data": self.path, "seq": self.seq,
                               "batch": self.batch,
                               "eval-fraction": self.eval_fraction,
                               "seed": self.seed}
        if self._tokenizer_spec:
            out["tokenizer"] = self._tokenizer_spec
        if self.token_dtype:
            out["token-dtype"] = self.token_dtype
        return out

    def __repr__(self) -> str:
        return (f"<kiln.TextDataset {Path(self.path).name}: "
                f"{self.train_tokens} training and {self.eval_tokens} "
                f"held-out tokens, {self._tokenizer_name()} tokenizer, "
                f"batches of {self.batch}x{self.seq}>")


class Trainer:
    """Trains a model compiled with ``grad="loss"``: the same machinery as
    ``kiln train`` (runtime/Trainer.h) — dropout on, gradients averaged over
    micro-batches, global-norm clipping, a warmup + cosine schedule, the
    optimizer update, checkpoints that resume exactly.

        model = kiln.compile("examples/gpt2.kiln", defines=..., grad="loss")
        trainer = kiln.Trainer(model, kiln.AdamW(lr=3e-3), total_steps=100)
        loss = trainer.step({"tokens": x, "targets": y})

    ``optimizer_state="moments.bin"`` keeps the optimizer's moments in that
    file (memory-mapped) instead of RAM, as ``kiln train
    --optimizer-state``: the OS pages them out under memory pressure.

    ``communicator=kiln.mpi()`` trains data parallel under ``mpirun``: every
    rank makes the same calls with its own micro-batches, and the weights
    are one process's (docs/distributed.md); ``save_checkpoint`` is then
    written by rank 0, after which every rank returns. ``zero=1`` keeps on
    each rank the optimizer moments of its shard of the parameters only
    (``zero=2``: the accumulated gradients too), with the same results;
    ``optimizer_state_bytes`` says what this rank holds.

    Checkpoints are ``kiln train``'s: given the ``TextDataset`` the batches
    come from, ``save_checkpoint`` records its position and the run's
    settings, so ``kiln train --resume`` continues a Python run, and
    ``load_checkpoint`` continues a ``kiln train`` run here.
    """

    def __init__(self, model: Model, optimizer: Union[AdamW, SGD, None] = None,
                 *, loss: str = "loss", clip: float = 1.0, warmup: int = 0,
                 total_steps: int = 1, min_lr_ratio: float = 0.1,
                 seed: int = 0, optimizer_state: Optional[PathLike] = None,
                 communicator: Optional["_kiln.Communicator"] = None,
                 zero: int = 0):
        opt = optimizer if optimizer is not None else AdamW()
        self.communicator = communicator
        parallel = communicator is not None and communicator.size > 1
        adam = isinstance(opt, AdamW)
        if not adam and not isinstance(opt, SGD):
            raise TypeError("optimizer must be kiln.AdamW or kiln.SGD")
        self.model, self.loss, self.seed = model, loss, int(seed)
        # The compiled update when the model came from kiln.compile(...,
        # grad=loss): one call per step, as kiln train runs it.
        step = dict(optimizer="adamw" if adam else "sgd",
                    beta1=float(opt.betas[0]) if adam else 0.9,
                    beta2=float(opt.betas[1]) if adam else 0.999,
                    eps=float(opt.eps) if adam else 1e-8,
                    weight_decay=float(opt.weight_decay),
                    momentum=0.9 if adam else float(opt.momentum),
                    max_norm=max(0.0, float(clip)))
        # Data parallel steps use loss_grad and the host update (a compiled
        # step has no all-reduce in it), so none is compiled then.
        self.compiled_step = (False if parallel else
                              model._compile_train_step(loss, step))
        self._impl = _kiln.Trainer(
            model._impl, loss, step["optimizer"], float(opt.lr),
            int(warmup), int(total_steps), float(min_lr_ratio),
            step["beta1"], step["beta2"], step["eps"], step["momentum"],
            step["weight_decay"], float(clip), int(seed), self.compiled_step,
            os.fspath(optimizer_state) if optimizer_state else "",
            communicator, int(zero))
        self.last_lr = 0.0
        self.last_grad_norm = 0.0
        # The run in kiln train's words, for checkpoints (its config keys).
        self._settings: Dict[str, Any] = {
            "steps": int(total_steps), "warmup": int(warmup),
            "lr": float(opt.lr), "min-lr-ratio": float(min_lr_ratio),
            "weight-decay": step["weight_decay"], "beta1": step["beta1"],
            "beta2": step["beta2"], "eps": step["eps"],
            "momentum": step["momentum"], "clip": float(clip),
            "optimizer": step["optimizer"], "loss": loss}
        self._optimizer = (f"AdamW(lr={opt.lr:g})" if adam
                           else f"SGD(lr={opt.lr:g})")
        self._accumulate = 1
        self._shape: Optional[Tuple[int, ...]] = None
        self._steps_since_save = 0

    def step(self, batch: Union[Batch, Sequence[Batch]]) -> float:
        """One update from a batch (the loss function's inputs) or a list of
        micro-batches (gradient accumulation); returns the mean loss."""
        batches = [batch] if isinstance(batch, Mapping) else list(batch)
        loss, self.last_lr, self.last_grad_norm = self._impl.step(
            self.model._impl, self.loss, [dict(b) for b in batches])
        self._accumulate = len(batches)
        first = next(iter(batches[0].values()), None) if batches else None
        self._shape = tuple(np.shape(first)) if first is not None else None
        self._steps_since_save += 1
        n = self._steps_since_save
        shape = "x".join(str(d) for d in self._shape or ())
        self.model._training = (
            f"kiln.Trainer({self._optimizer}): {n} step{'s' if n != 1 else ''}"
            + (f" of {shape}" if shape else "")
            + (f" x{self._accumulate} micro-batches"
               if self._accumulate > 1 else "")
            + f", to step {self.step_count}; final loss {loss:.4f}")
        return loss

    def evaluate(self, batch: Batch) -> float:
        """The loss on a batch with dropout off (no update)."""
        return self._impl.evaluate(self.model._impl, self.loss, dict(batch))

    @property
    def step_count(self) -> int:
        """Updates done so far."""
        return self._impl.step_count

    @property
    def optimizer_state_bytes(self) -> int:
        """Bytes of optimizer moments this process holds (with ``zero``, its
        shard's)."""
        return self._impl.optimizer_state_bytes

    @property
    def shard_range(self) -> Tuple[int, int]:
        """The elements ``[first, end)`` of the trainable parameters, in
        parameter order, that this process updates (all without ``zero``)."""
        return tuple(self._impl.shard_range)

    def learning_rate(self, step: int) -> float:
        """The scheduled rate of update ``step`` (0-based)."""
        return self._impl.learning_rate(int(step))

    def _model_settings(self) -> Dict[str, Any]:
        """How the model was compiled, in kiln train's words."""
        r = self.model._request
        if not r or not r.get("is_path"):
            return {}
        out: Dict[str, Any] = {"model": r["source"]}
        defines = {k: v for k, v in r["defines"] if k != "vocab_size"}
        if defines:
            out["define"] = defines
        for key, cli in (("weights", "weights"), ("attention", "attention"),
                         ("quantize", "quantize"), ("lora", "lora"),
                         ("adapter", "adapter")):
            if r.get(key):
                out[cli] = r[key]
        if r.get("attention_functions"):
            out["attention-functions"] = ",".join(r["attention_functions"])
        if r.get("attention_blocks"):
            out["attention-blocks"] = ",".join(r["attention_blocks"])
        if r.get("quantize_params"):
            out["quantize-params"] = ",".join(r["quantize_params"])
        out["recompute"] = bool(r.get("recompute"))
        out["no-fuse"] = not r.get("fuse", True)
        return out

    def save_checkpoint(self, directory: PathLike, keep: int = 2,
                        data: Optional[TextDataset] = None) -> Path:
        """Writes ``directory/step-NNNNNNNN`` atomically (model and
        optimizer safetensors, trainer_state.json) and points
        ``directory/latest`` at it; returns its path. With ``data`` (the
        dataset the batches came from) the checkpoint is complete for
        ``kiln train --resume --checkpoint-dir=DIRECTORY``: it records the
        sampler's position and the run's settings."""
        state: Dict[str, Any] = {
            "format": 1, "written_by": "python", "step": self.step_count,
            "seed": data.seed if data else self.seed,
            "optimizer": self._settings["optimizer"],
            "dropout_seed": self.seed}
        settings = dict(self._model_settings(), **self._settings,
                        accumulate=self._accumulate)
        settings["checkpoint-dir"] = os.fspath(directory)
        if data is not None:
            settings.update(data.settings())
            state.update({"data_rng": str(data.rng_state),
                          "batch": data.batch, "seq": data.seq,
                          "accumulate": self._accumulate,
                          "tokenizer": data._tokenizer_name()})
        state["settings"] = settings
        self._impl.save_checkpoint(os.fspath(directory),
                                   json.dumps(state, indent=2) + "\n",
                                   int(keep))
        return Path(_kiln.latest_checkpoint(os.fspath(directory)))

    def load_checkpoint(self, directory: PathLike,
                        data: Optional[TextDataset] = None) -> None:
        """Restores weights, optimizer state and step from a checkpoint
        directory, or from the newest one of a directory of checkpoints
        (from this class or from ``kiln train``). With ``data``, the dataset
        continues where the checkpoint's left off; it must have been made
        with the same batch, sequence length, seed and tokenizer."""
        d = Path(directory)
        if (d / "latest").is_file():
            d = Path(_kiln.latest_checkpoint(os.fspath(d)))
        state: Dict[str, Any] = {}
        if data is not None:
            try:
                state = json.loads((d / "trainer_state.json").read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"{d / 'trainer_state.json'}: {e}") from None
            if "data_rng" not in state:
                raise ValueError(f"{d}: the checkpoint records no data "
                                 f"position (it was saved without data=)")
            for key, have in (("batch", data.batch), ("seq", data.seq),
                              ("seed", data.seed),
                              ("tokenizer", data._tokenizer_name())):
                if state.get(key) != have:
                    raise ValueError(
                        f"{d}: the checkpoint was made with {key}="
                        f"{state.get(key)!r}, this dataset has {key}="
                        f"{have!r}")
        self._impl.load_checkpoint(os.fspath(d))
        if data is not None:
            data.rng_state = int(state["data_rng"])
        self._steps_since_save = 0


def train(model: Optional[PathLike] = None, /, *,
          config: Optional[PathLike] = None, **options: Any
          ) -> Optional[Model]:
    """Runs ``kiln train`` in this process and returns the trained model
    (None when it stopped early, as with ``stop_after``): the same command,
    options and config files (``config="run.json"``, docs/training.md).
    Options are its long options with underscores:
    ``kiln.train("gpt2.kiln", data="input.txt", steps=100, lr=3e-3,
    define={"n_layer": 2})``; ``resume=True`` with ``checkpoint_dir``
    continues a run with the settings its checkpoint recorded. Progress
    goes to standard error as on the command line. Raises ``ValueError``
    when the run fails; standard error says why."""
    args: List[str] = [os.fspath(model)] if model is not None else []
    if config is not None:
        args.append("--config=" + os.fspath(config))
    for key, value in options.items():
        name = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(name)
        elif isinstance(value, Mapping):
            args += [f"{name}={k}={v}" for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            args += [f"{name}={v}" for v in value]
        else:
            args.append(f"{name}={os.fspath(value) if isinstance(value, os.PathLike) else value}")
    rc, output = _kiln.train_command(args)
    if rc != 0:
        raise ValueError(f"training failed (status {rc}); the lines above "
                         f"say why")
    return load(output) if output else None


Communicator = _kiln.Communicator


def mpi() -> "Communicator":
    """The ranks of this MPI job (``mpirun -np N python3 script.py``), for
    ``kiln.Trainer(..., communicator=kiln.mpi())``: each rank steps on its
    own micro-batches — rank r's k-th is micro-batch k*N + r of what one
    process would run — and every rank ends with the weights of one process
    accumulating all of them, bit for bit (docs/distributed.md).
    ``.rank``, ``.size``, ``.local_size`` (ranks on this machine) and
    ``.barrier()``. Starts MPI on first use (it ends at exit); RuntimeError
    when kiln was built without MPI. No mpi4py needed.

    An uncaught exception on one rank ends every rank (``.abort()``, after
    the traceback): the others may be waiting for it in a collective and
    would wait forever. A rank that leaves through ``sys.exit(code)``
    should call ``.abort(code)`` first for the same reason."""
    comm = _kiln.mpi()
    if comm.size > 1 and not getattr(sys.excepthook, "_kiln_aborts", False):
        previous = sys.excepthook

        def abort_all(kind, value, traceback):
            previous(kind, value, traceback)
            sys.stderr.flush()
            comm.abort(1)

        abort_all._kiln_aborts = True  # type: ignore[attr-defined]
        sys.excepthook = abort_all
    return comm


def __dir__() -> List[str]:
    # The public namespace: what __all__ exports, not the helpers and the
    # typing names this module imports.
    return sorted(__all__ + ["__version__"])
