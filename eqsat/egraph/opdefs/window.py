"""Sliding-window arithmetic shared by Conv, ConvTranspose and the pooling ops.

:class:`Window` parses the ONNX window attributes (kernel, strides, dilations, pads, auto_pad,
ceil_mode) and computes output sizes and the effective pads; symbolic spatial dims get a readable
formula as their symbol. :func:`windows` gives a padded, strided view ``(N, C, *out, *kernel)`` of
an array for the numpy reference implementations (no Python loops over output pixels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from eqsat.egraph.ir import Dim
from eqsat.egraph.opdefs.base import ShapeError, sym_dim


def attr_str(v, default: str = "NOTSET") -> str:
    if v is None:
        return default
    return v.decode() if isinstance(v, bytes) else str(v)


def int_list(v, n: int, default: int, what: str) -> tuple[int, ...]:
    """An optional per-spatial-axis attribute, checked to have ``n`` entries."""
    if v is None or len(v) == 0:
        return (default,) * n
    out = tuple(int(x) for x in v)
    if len(out) != n:
        raise ShapeError(f"{what} has {len(out)} entries, expected {n}")
    return out


def _formula(d: str, num: int, s: int, ceil: bool) -> Dim:
    """Symbolic ``(d + num) / s + 1`` (floor or ceil), simplified where exact."""
    base = d.replace("*", "x")
    if s == 1:
        c = num + 1
        return d if c == 0 else f"{base}{c:+d}"
    op = "ceil" if ceil else "floor"
    return f"{op}(({base}{num:+d})/{s})+1" if num else f"{op}({base}/{s})+1"


@dataclass(frozen=True)
class Window:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # begins then ends; ignored under SAME_* / VALID
    auto_pad: str = "NOTSET"
    ceil_mode: bool = False

    @staticmethod
    def of(attrs: Mapping, kernel: Sequence[int]) -> Window:
        nd = len(kernel)
        auto_pad = attr_str(attrs.get("auto_pad"))
        if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
            raise ShapeError(f"unknown auto_pad {auto_pad!r}")
        w = Window(
            tuple(int(k) for k in kernel),
            int_list(attrs.get("strides"), nd, 1, "strides"),
            int_list(attrs.get("dilations"), nd, 1, "dilations"),
            int_list(attrs.get("pads"), 2 * nd, 0, "pads"),
            auto_pad,
            bool(attrs.get("ceil_mode", 0)),
        )
        if min(w.kernel + w.strides + w.dilations, default=1) < 1:
            raise ShapeError("kernel sizes, strides and dilations must be positive")
        return w

    @property
    def nd(self) -> int:
        return len(self.kernel)

    def extent(self, i: int) -> int:
        return (self.kernel[i] - 1) * self.dilations[i] + 1

    def _out1(self, i: int, d: Dim) -> tuple[Dim, int, int]:
        """(output size, pad begin, pad end) along spatial axis ``i``; pads 0 if symbolic."""
        s, ext = self.strides[i], self.extent(i)
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if isinstance(d, str):
                return (d if s == 1 else f"ceil({d.replace('*', 'x')}/{s})"), 0, 0
            out = -(-d // s)
            total = max(0, (out - 1) * s + ext - d)
            small, big = total // 2, total - total // 2
            return (out, small, big) if self.auto_pad == "SAME_UPPER" else (out, big, small)
        pb, pe = (0, 0) if self.auto_pad == "VALID" else (self.pads[i], self.pads[i + self.nd])
        num = pb + pe - ext
        if isinstance(d, str):
            return _formula(d, num, s, self.ceil_mode), pb, pe
        if d + num < 0:
            raise ShapeError(f"window extent {ext} exceeds padded input size {d + pb + pe}")
        if not self.ceil_mode:
            return (d + num) // s + 1, pb, pe
        out = -(-(d + num) // s) + 1
        if (out - 1) * s >= d + pb:  # the last window would start inside the end padding
            out -= 1
        return out, pb, pe

    def out_shape(self, spatial: Sequence[Dim]) -> list[Dim]:
        if len(spatial) != self.nd:
            raise ShapeError(f"input has {len(spatial)} spatial dims, kernel has {self.nd}")
        return [self._out1(i, d)[0] for i, d in enumerate(spatial)]

    def resolve(self, spatial: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
        """Concrete (output sizes, pad begins, pad ends) for a static input."""
        res = [self._out1(i, int(d)) for i, d in enumerate(spatial)]
        return [r[0] for r in res], [r[1] for r in res], [r[2] for r in res]  # type: ignore[misc]


def windows(
    x: np.ndarray, w: Window, out: Sequence[int], pb: Sequence[int], pe: Sequence[int], fill
) -> np.ndarray:
    """Strided view ``(N, C, *out, *kernel)`` of ``x`` padded with ``fill``.

    The end padding grows where ceil_mode needs more than the declared pads.
    """
    spatial = x.shape[2:]
    ends = [
        max(pe[i], (out[i] - 1) * w.strides[i] + w.extent(i) - spatial[i] - pb[i])
        for i in range(w.nd)
    ]
    width = [(0, 0), (0, 0)] + list(zip(pb, ends, strict=True))
    xp = np.pad(x, width, constant_values=fill) if any(pb) or any(ends) else x
    axes = tuple(range(2, 2 + w.nd))
    v = sliding_window_view(xp, [w.extent(i) for i in range(w.nd)], axis=axes)
    outs = tuple(slice(0, (out[i] - 1) * w.strides[i] + 1, w.strides[i]) for i in range(w.nd))
    kers = tuple(slice(None, None, dl) for dl in w.dilations)
    return v[(slice(None), slice(None)) + outs + kers]


def sym_mul(d: Dim, k: int) -> Dim:
    """``d * k`` for an int or symbolic dim."""
    return d * k if isinstance(d, int) else sym_dim(k, d.split("*")) if k != 1 else d


def sym_add(d: Dim, k: int) -> Dim:
    """``d + k`` for an int or symbolic dim."""
    if isinstance(d, int) or k == 0:
        return d + k if isinstance(d, int) else d
    return f"{d.replace('*', 'x')}{k:+d}"
