"""LoopProgram: the loop-nest IR that lowering produces and the backends compile.

Consumes nothing (it is the type of the lower stage); produced by ``lower.lower`` (a later step)
from a TensorGraph and by :func:`eqsat.lower.schedule.apply` from itself; consumed by
:func:`eqsat.lower.interpret.interpret` (the numpy oracle) and, later, the LLVM backend.

Map of the IR::

    LoopProgram(name, buffers, kernels)      buffers in signature order; kernels run in order
      Buffer(name, shape, dtype, kind)       kind: input | output | weight | temp | local
      Kernel(name, params, body)             one function over its param buffers
        Stmt  = For(var, extent, body, kind, annotations) | Seq(stmts) | Store(buf, index, value)
              | Accumulate(buf, index, value, op) | Let(var, value, body) | If(cond, then, orelse)
              | Allocate(buf, body)
        Expr  = Const | Var | Load(buf, index) | BinOp | Cmp | Select | Cast | Call(intrinsic)

Design choices (why):
- Frozen dataclasses and tuples, so programs compare and hash structurally: the schedule
  round-trip test compares two scheduled kernels with ``==``.
- Every expression knows its dtype locally (``Var`` and ``Const`` carry it, ``Load`` holds the
  ``Buffer`` itself), so builders and the checker never need an environment to type a node.
- A reduction is its own statement, ``Accumulate(buf, index, value, op)`` = ``buf[index] op=
  value`` with an associative, commutative ``op``; its init is an ordinary ``Store`` before the
  reduction loop (``op.identity`` gives the natural value). Because the IR says "this is a
  reduction", the interpreter may evaluate it in any order (``ufunc.at``), reorder is legal
  across it, and the backend may keep the accumulator in registers (the FMA micro-kernel).
- Loops are named by their variable (names are unique in a kernel) so schedule primitives refer
  to them by name. Extents are loop-invariant: an int64 expression over constants and size
  params (``str`` dims of the buffers, bound at run time), never over loop variables. Nests are
  rectangular; a split with a non-dividing factor guards its body with ``If``.
- ``Select`` is lazy (like C's ``?:``): only the chosen arm is evaluated, so a padded read
  ``select(i >= 1, x[i - 1], 0)`` is valid. The backend may emit a masked load or a branch.
- Weight *values* are not part of the program (they travel beside it, as feeds to
  ``interpret``), so the program stays hashable and comparable.

Checking lives in :mod:`eqsat.lower.check` (``check_program``), the text form in
:mod:`eqsat.lower.printer` (``print_program``), the intrinsic table in
:mod:`eqsat.lower.intrinsics`: functions, not methods, because they walk the IR with the helpers
of :mod:`eqsat.lower.analysis`, which imports this module (a method importing them would close
an import cycle, which tests/unit/test_layering.py forbids).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

Dim = int | str  # a str dim is a size param, bound when the program runs
DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64")
INDEX = "int64"  # the dtype of loop variables, size params and index arithmetic


class LoopIRError(ValueError):
    """A malformed loop program: the message starts with the path of the offending node."""


def is_float(dtype: str) -> bool:
    return dtype.startswith("float")


def is_int(dtype: str) -> bool:
    return dtype.startswith(("int", "uint"))


# ---------------------------------------------------------------------------------- buffers
class BufferKind(enum.Enum):
    INPUT = "input"
    OUTPUT = "output"
    WEIGHT = "weight"
    TEMP = "temp"  # program-level intermediate between kernels
    LOCAL = "local"  # scoped to an Allocate inside one kernel (cache_write, packing tiles)


@dataclass(frozen=True)
class Buffer:
    """A named array. The loop IR indexes it by its logical ``shape`` always; ``blocked`` = B
    (a temp of rank 4, ``B`` dividing dim 1) stores it in the blocked channel layout
    ``[N][C/B][H][W][B]`` (NCHW[B]c) instead of row-major — a schedule choice (the LLVM
    backend's ``layout.py`` makes it) that the interpreter ignores and that backend's
    addressing honours (the same elements, another order)."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    kind: BufferKind = BufferKind.TEMP
    blocked: int = 0

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def writable(self) -> bool:
        return self.kind not in (BufferKind.INPUT, BufferKind.WEIGHT)

    def __getitem__(self, index) -> Load:
        index = index if isinstance(index, tuple) else (index,)
        return Load(self, tuple(as_expr(i) for i in index))

    def sized(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The concrete shape with the size params bound in ``sizes``."""
        try:
            return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)
        except KeyError as e:
            raise LoopIRError(f"buffer {self.name}: size {e.args[0]!r} is not bound") from None

    def bind(self, value, sizes: dict[str, int]) -> np.ndarray:
        """``value`` as this (input or weight) buffer's array, in its dtype and C order (a 0-d
        value stays 0-d, which ``np.ascontiguousarray`` would make 1-d); the size params its
        shape names are bound into ``sizes``. LoopIRError when the rank or a dim does not fit."""
        a = np.array(value, dtype=self.dtype, order="C", copy=None)
        if a.ndim != self.rank:
            raise LoopIRError(f"feed {self.name}: rank {a.ndim}, buffer {self}")
        for d, n in zip(self.shape, a.shape, strict=True):
            if (sizes.setdefault(d, n) if isinstance(d, str) else d) != n:
                raise LoopIRError(f"feed {self.name}: shape {a.shape} does not fit {self}")
        return a

    def __str__(self) -> str:
        lay = f" nchw{self.blocked}c" if self.blocked else ""
        return f"{self.name}: {self.dtype}[{', '.join(str(d) for d in self.shape)}]{lay}"


# ---------------------------------------------------------------------------------- expressions
class BinaryOp(enum.Enum):
    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"  # true division, floats only
    FLOORDIV = "//"  # floor division (index arithmetic), like Python and numpy
    MOD = "%"  # floor modulo: the result has the divisor's sign
    MIN = "min"
    MAX = "max"
    AND = "and"  # bools only
    OR = "or"


class CmpOp(enum.Enum):
    LT = "<"
    LE = "<="
    EQ = "=="
    NE = "!="
    GT = ">"
    GE = ">="


def _op(op, swap: bool = False):
    def method(self, other):
        other = as_expr(other, self.dtype)
        return BinOp(op, other, self) if swap else BinOp(op, self, other)

    return method


def _cmp(op):
    return lambda self, other: Cmp(op, self, as_expr(other, self.dtype))


class Expr:
    """Base of expressions; Python operators build BinOps (``==`` stays structural equality)."""

    __slots__ = ()
    dtype: str
    __add__, __radd__ = _op(BinaryOp.ADD), _op(BinaryOp.ADD, True)
    __sub__, __rsub__ = _op(BinaryOp.SUB), _op(BinaryOp.SUB, True)
    __mul__, __rmul__ = _op(BinaryOp.MUL), _op(BinaryOp.MUL, True)
    __truediv__, __floordiv__, __mod__ = (
        _op(BinaryOp.DIV),
        _op(BinaryOp.FLOORDIV),
        _op(BinaryOp.MOD),
    )
    __lt__, __le__, __gt__, __ge__ = _cmp(CmpOp.LT), _cmp(CmpOp.LE), _cmp(CmpOp.GT), _cmp(CmpOp.GE)


def _wrap_index(self) -> None:
    """``__post_init__`` of nodes with an index: builders may write plain ints."""
    if not all(isinstance(e, Expr) for e in self.index):
        object.__setattr__(self, "index", tuple(as_expr(e) for e in self.index))


@dataclass(frozen=True)
class Const(Expr):
    value: int | float | bool
    dtype: str = INDEX


@dataclass(frozen=True)
class Var(Expr):
    """A loop variable, a Let-bound value or a size param (by name)."""

    name: str
    dtype: str = INDEX


@dataclass(frozen=True)
class Load(Expr):
    buffer: Buffer
    index: tuple[Expr, ...]
    __post_init__ = _wrap_index

    @property
    def dtype(self) -> str:
        return self.buffer.dtype


@dataclass(frozen=True)
class BinOp(Expr):
    op: BinaryOp
    a: Expr
    b: Expr

    @property
    def dtype(self) -> str:
        return self.a.dtype


@dataclass(frozen=True)
class Cmp(Expr):
    op: CmpOp
    a: Expr
    b: Expr

    @property
    def dtype(self) -> str:
        return "bool"


@dataclass(frozen=True)
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr

    @property
    def dtype(self) -> str:
        return self.a.dtype


@dataclass(frozen=True)
class Cast(Expr):
    dtype: str
    value: Expr


@dataclass(frozen=True)
class Call(Expr):
    intrinsic: str
    args: tuple[Expr, ...]

    @property
    def dtype(self) -> str:
        return self.args[0].dtype


def as_expr(x, dtype: str | None = None) -> Expr:
    """Wrap a Python number as a Const (of ``dtype`` when given, else int64 / float32)."""
    if isinstance(x, Expr):
        return x
    if isinstance(x, bool):
        return Const(x, "bool")
    if dtype is None:
        dtype = INDEX if isinstance(x, int) else "float32"
    return Const(float(x) if is_float(dtype) else x, dtype)


def minimum(a, b) -> Expr:
    a = as_expr(a)
    return BinOp(BinaryOp.MIN, a, as_expr(b, a.dtype))


def maximum(a, b) -> Expr:
    a = as_expr(a)
    return BinOp(BinaryOp.MAX, a, as_expr(b, a.dtype))


def call(name: str, *args) -> Call:
    return Call(name, tuple(as_expr(a) for a in args))


# ---------------------------------------------------------------------------------- statements
class LoopKind(enum.Enum):
    SERIAL = "serial"
    PARALLEL = "parallel"
    VECTORIZED = "vectorized"
    UNROLLED = "unrolled"
    # GPU: the loop's iterations are the blocks of the grid (``blockIdx.x``) or the threads of a
    # block (``threadIdx.x``); a backend that has neither runs the loop serially
    # (:mod:`eqsat.lower.gpu_schedule` says which nests a GPU backend accepts)
    GPU_BLOCK = "block"
    GPU_THREAD = "thread"


class ReduceOp(enum.Enum):
    SUM = "+"
    PROD = "*"
    MAX = "max"
    MIN = "min"

    def identity(self, dtype: str):
        """The init value that makes the reduction of nothing come out right."""
        if dtype == "bool":  # max is "any", min is "all"
            return {"+": False, "*": True, "max": False, "min": True}[self.value]
        if is_float(dtype):
            low, high = -np.inf, np.inf
        else:
            low, high = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        return {"+": 0, "*": 1, "max": low, "min": high}[self.value]

    @property
    def ufunc(self) -> np.ufunc:
        return {"+": np.add, "*": np.multiply, "max": np.maximum, "min": np.minimum}[self.value]


class Stmt:
    __slots__ = ()


@dataclass(frozen=True)
class For(Stmt):
    var: str
    extent: Expr
    body: Stmt
    kind: LoopKind = LoopKind.SERIAL
    annotations: tuple[tuple[str, str], ...] = ()  # e.g. (("tensorize", "gemm_6x16"),)

    @property
    def loop_var(self) -> Var:
        return Var(self.var)


@dataclass(frozen=True)
class Seq(Stmt):
    stmts: tuple[Stmt, ...]


@dataclass(frozen=True)
class Store(Stmt):
    buffer: Buffer
    index: tuple[Expr, ...]
    value: Expr
    __post_init__ = _wrap_index


@dataclass(frozen=True)
class Accumulate(Stmt):
    """``buffer[index] = op(buffer[index], value)``; iterations may be combined in any order."""

    buffer: Buffer
    index: tuple[Expr, ...]
    value: Expr
    op: ReduceOp = ReduceOp.SUM
    __post_init__ = _wrap_index


@dataclass(frozen=True)
class Let(Stmt):
    var: Var
    value: Expr
    body: Stmt


@dataclass(frozen=True)
class If(Stmt):
    cond: Expr
    then: Stmt
    orelse: Stmt | None = None


@dataclass(frozen=True)
class Allocate(Stmt):
    """A kernel-local buffer (kind LOCAL) live for ``body``: fresh storage on each entry."""

    buffer: Buffer
    body: Stmt


Node = Expr | Stmt


def seq(*stmts: Stmt) -> Stmt:
    """A Seq, flattened; a single statement stands alone."""
    flat: list[Stmt] = []
    for s in stmts:
        flat.extend(s.stmts if isinstance(s, Seq) else (s,))
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def loop(var: str, extent, body: Stmt, kind: LoopKind = LoopKind.SERIAL) -> For:
    return For(var, as_expr(extent), body, kind)


# ---------------------------------------------------------------------------------- kernels
@dataclass(frozen=True)
class Kernel:
    name: str
    params: tuple[Buffer, ...]
    body: Stmt


@dataclass(frozen=True)
class LoopProgram:
    name: str
    buffers: tuple[Buffer, ...]
    kernels: tuple[Kernel, ...]

    inputs = property(lambda self: self._of(BufferKind.INPUT), doc="in signature order")
    outputs = property(lambda self: self._of(BufferKind.OUTPUT), doc="in signature order")
    weights = property(lambda self: self._of(BufferKind.WEIGHT))
    temps = property(lambda self: self._of(BufferKind.TEMP))

    def _of(self, kind: BufferKind) -> tuple[Buffer, ...]:
        return tuple(b for b in self.buffers if b.kind is kind)

    @property
    def sizes(self) -> tuple[str, ...]:
        """The size params, in first-appearance order over the buffers' shapes."""
        seen = dict.fromkeys(d for b in self.buffers for d in b.shape if isinstance(d, str))
        return tuple(seen)
