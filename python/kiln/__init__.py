"""kiln: a compiler and runtime for transformer models.

    import kiln, numpy as np
    model = kiln.compile("examples/gpt2.kiln", defines={"n_layer": 2})
    logits = model.forward(tokens=np.array([[1, 2, 3]], np.int32))
    print(model.ir("mlir")[:200])

The package is a thin layer over the extension module ``_kiln``, which links
the same compiler and runtime libraries as the ``kiln`` command line.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _kiln

__all__ = ["CompileError", "Model", "compile", "load"]

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


class Model:
    """A compiled model: call its functions with NumPy arrays.

    ``model.run("forward", tokens=x)`` or ``model.forward(tokens=x)`` returns
    one array, or a tuple for functions with several results. Inputs must
    have the declared dtype and rank (``ValueError`` names the input
    otherwise); symbolic dimensions (batch, sequence) take any size.
    """

    def __init__(self, impl: Any, request: Optional[Dict[str, Any]] = None):
        self._impl = impl
        self._request = request

    @property
    def name(self) -> str:
        """The model's name (``model gpt2(...)``)."""
        return self._impl.name

    def functions(self) -> List[Dict[str, Any]]:
        """Each function's name, inputs and outputs (name, dtype, dims)."""
        return self._impl.functions()

    def hyperparameters(self) -> Dict[str, float]:
        """The hyperparameters the model was compiled with."""
        return self._impl.hyperparameters()

    def run(self, function: str, **inputs: np.ndarray):
        """Runs ``function``; returns an array or a tuple of arrays."""
        out = self._impl.run(function, inputs)
        return out[0] if len(out) == 1 else tuple(out)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if any(f["name"] == name for f in self._impl.functions()):
            return lambda **inputs: self.run(name, **inputs)
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

    def save(self, path: PathLike) -> None:
        """Writes the artifact (.kart), with the current parameter values."""
        self._impl.save(os.fspath(path))

    def ir(self, stage: str = "mlir") -> str:
        """The text of a compilation stage: ``ast``, ``mlir`` (after the
        frontend pipeline, and autodiff when compiled with ``grad``),
        ``lowered`` (with kernels and arena slots) or ``params``."""
        if self._request is None:
            raise ValueError("ir() needs a model made by kiln.compile(); "
                             "this one was loaded from an artifact")
        if stage not in ("ast", "mlir", "lowered", "params"):
            raise ValueError(f"unknown stage '{stage}'; use ast, mlir, "
                             f"lowered or params")
        ok, text, errors = _kiln.compile(**dict(self._request, stage=stage))
        if not ok:
            raise CompileError(errors)
        return text


def compile(path_or_source: Union[PathLike, str], target: str = "cpu",
            defines: Optional[Mapping[str, Any]] = None, seed: int = 0,
            weights: Optional[PathLike] = None, grad: Optional[str] = None,
            recompute: bool = False) -> Model:
    """Compiles a model from a .kiln file or from model text.

    ``defines`` overrides hyperparameters (``{"n_layer": 2}``), ``seed``
    seeds the initializers, ``weights`` imports trained weights (.safetensors
    or a llama2.c .bin), ``grad="loss"`` also derives ``loss_grad``
    (``recompute`` recomputes block activations in it). Raises
    ``CompileError`` with the file, line and column of the first error.
    """
    if target != "cpu":
        raise ValueError(f"target '{target}' is not available in this build; "
                         f"use 'cpu'")
    is_path = not _is_source(path_or_source)
    source = os.fspath(path_or_source)
    if is_path and not Path(source).is_file():
        raise FileNotFoundError(f"{source}: no such model file")
    request = dict(
        source=source, is_path=is_path,
        defines=[(str(k), str(v)) for k, v in (defines or {}).items()],
        seed=int(seed), weights=os.fspath(weights) if weights else "",
        grad=grad or "", recompute=bool(recompute))
    ok, data, errors = _kiln.compile(**dict(request, stage="kart"))
    if not ok:
        raise CompileError(errors)
    directory = str(Path(source).parent) if is_path else "."
    return Model(_kiln.Model.from_bytes(data, directory), request)


def load(path: PathLike) -> Model:
    """Loads a .kart artifact (verified completely before it can run)."""
    return Model(_kiln.Model.load(os.fspath(path)))
