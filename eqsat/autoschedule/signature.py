"""Keys for the tuning log: what a kernel computes (:func:`kernel_signature`) and the machine
it was measured on (:func:`machine_key`).

Consumes a :class:`~eqsat.lower.loops.Kernel` as :func:`eqsat.lower.lower.lower` emits it
(unscheduled) and the host's Capabilities; produces short hex digests.

The kernel signature is a sha256 of the kernel's tree with every name replaced by its
first-appearance number (buffers, loop and let variables, size params) — so the same compute
on the same shapes, dtypes and buffer kinds has one key in every model, process and run,
whatever the kernel and its buffers are called — and the kernel's name left out. Whether a
buffer is a weight stays in (a weight operand is packed once, an activation per call, which
changes the best blocking); input, output and temporary are one role (the code is the same).
The machine key is the CPU's (``Capabilities.key``: CPU name, features, triple,
vector width, llvmlite) plus the thread count the schedule runs on.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib

from eqsat.lower.loops import Buffer, BufferKind, For, Kernel, Var


def canonical(kernel: Kernel) -> str:
    """The kernel's tree as text with names numbered in order of first appearance."""
    names: dict[str, str] = {}

    def name(s: str) -> str:
        return names.setdefault(s, f"n{len(names)}")

    def go(x) -> str:
        if isinstance(x, Buffer):
            dims = ",".join(name(d) if isinstance(d, str) else str(d) for d in x.shape)
            role = "weight" if x.kind is BufferKind.WEIGHT else "data"
            return f"B({name(x.name)},[{dims}],{x.dtype},{role})"
        if isinstance(x, Var):
            return f"V({name(x.name)},{x.dtype})"
        if isinstance(x, For):
            notes = ",".join(f"{k}={v}" for k, v in x.annotations)
            return f"For({name(x.var)},{go(x.extent)},{go(x.body)},{x.kind.value},{notes})"
        if dataclasses.is_dataclass(x):
            fields = ",".join(go(getattr(x, f.name)) for f in dataclasses.fields(x))
            return f"{type(x).__name__}({fields})"
        if isinstance(x, tuple | list):
            return "[" + ",".join(go(v) for v in x) + "]"
        if isinstance(x, enum.Enum):
            return str(x.value)
        return repr(x)

    params = ",".join(go(p) for p in kernel.params)
    return f"({params}){go(kernel.body)}"


def kernel_signature(kernel: Kernel) -> str:
    return hashlib.sha256(canonical(kernel).encode()).hexdigest()[:24]


def machine_key(threads: int) -> str:
    from eqsat.backends.llvm.capabilities import Capabilities

    return f"{Capabilities.host().key()}-t{threads}"
