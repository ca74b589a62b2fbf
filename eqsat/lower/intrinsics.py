"""The intrinsic table: math functions a ``Call`` may name, keyed once by name.

Consumed by the checker (arity, domain), the interpreter (the numpy reference) and, later, the
LLVM backend (the intrinsic's base name, or None where it must call libm or expand a
polynomial) and the CUDA backend (the libdevice function, where it needs one). A new function
is one row here; nothing else lists intrinsics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsic:
    """A math function: its numpy reference and, where LLVM has one, the intrinsic's base name
    (the backend appends the type suffix, e.g. ``llvm.exp`` → ``llvm.exp.v8f32``); ``None`` means
    the backend must call libm or expand a polynomial (tanh, erf)."""

    name: str
    arity: int
    numpy: object  # callable on numpy arrays, dtype-preserving
    llvm: str | None
    domain: str = "float"  # "float", "numeric" (any non-bool) or "bool"
    # the libdevice function a GPU backend calls (``__nv_<name>`` for float64, ``__nv_<name>f``
    # for float32), or None where an LLVM intrinsic (or arithmetic) is lowered by NVPTX itself
    libdevice: str | None = None


def _erf(x):
    import scipy.special  # the op table's Erf reference; imported on use only

    return scipy.special.erf(x).astype(x.dtype, copy=False)


def _rsqrt(x):
    return (1 / np.sqrt(x)).astype(x.dtype, copy=False)


def _sigmoid(x):
    """1 / (1 + e^-x), as e^x / (1 + e^x) for x < 0: no overflow, and the subnormal results
    below x = -87 that the plain formula flushes to 0 (float32) come out right."""
    e = np.exp(-np.abs(x))
    return (np.where(x < 0, e, np.ones_like(e)) / (1 + e)).astype(x.dtype, copy=False)


INTRINSICS: dict[str, Intrinsic] = {
    i.name: i
    for i in (
        Intrinsic("exp", 1, np.exp, "llvm.exp", libdevice="exp"),
        Intrinsic("log", 1, np.log, "llvm.log", libdevice="log"),
        Intrinsic("sqrt", 1, np.sqrt, "llvm.sqrt", libdevice="sqrt"),
        Intrinsic("rsqrt", 1, _rsqrt, None),
        Intrinsic("tanh", 1, np.tanh, None, libdevice="tanh"),
        Intrinsic("erf", 1, _erf, None, libdevice="erf"),
        Intrinsic("sigmoid", 1, _sigmoid, None),
        Intrinsic("sin", 1, np.sin, "llvm.sin", libdevice="sin"),
        Intrinsic("cos", 1, np.cos, "llvm.cos", libdevice="cos"),
        Intrinsic("floor", 1, np.floor, "llvm.floor"),
        Intrinsic("ceil", 1, np.ceil, "llvm.ceil"),
        Intrinsic("roundeven", 1, np.rint, "llvm.roundeven"),  # ONNX quantizing: half to even
        Intrinsic("pow", 2, np.power, "llvm.pow", libdevice="pow"),
        Intrinsic("fma", 3, lambda a, b, c: a * b + c, "llvm.fma"),
        Intrinsic("abs", 1, np.abs, "llvm.fabs", "numeric"),
        Intrinsic("neg", 1, np.negative, None, "numeric"),
        Intrinsic("not", 1, np.logical_not, None, "bool"),
    )
}
