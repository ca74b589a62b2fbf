"""Expressions of the loop IR as LLVM IR: types, loads/stores, arithmetic, casts, intrinsics.

Consumes LoopProgram expressions (:mod:`eqsat.lower.loops`) inside a function that
:mod:`eqsat.backends.llvm.codegen` is building; produces scalar llvmlite IR values through its
``IRBuilder``. Scalar only, on purpose: the loop vectorizer widens it (see codegen's docstring).

Semantics follow :func:`eqsat.lower.interpret.interpret` (numpy), and why each choice:
- bool is ``i1`` in registers and one byte (``i8``) in memory, like numpy's bool.
- ``//`` and ``%`` on ints floor (numpy): ``sdiv``/``srem`` then fixed when the remainder's sign
  differs from the divisor's; a zero divisor gives 0 as numpy does (x86 ``idiv`` would trap, and
  the guard folds away for the constant divisors index arithmetic uses). On floats, numpy's
  ``divmod`` recipe (``frem`` + sign fix + ``floor``).
- float min/max are ``llvm.minimum``/``llvm.maximum``: NaN-propagating like ``np.minimum``
  (``minnum``/``maxnum`` would drop the NaN).
- compares are ordered (false on NaN) except ``!=``, unordered (true on NaN), as numpy.
- int64 ``+ - *`` carry ``nsw``: int64 is the index dtype, and no-wrap lets SCEV see affine
  addresses (the vectorizer needs them); narrower ints wrap as numpy's do.
- ``Select`` is lazy: an arm that loads anything the condition did not already load is emitted
  in its own block (a padded read ``select(i >= 1, x[i - 1], 0)`` never runs out of bounds);
  otherwise both arms are computed and joined with ``select``, which vectorizes.
- float32 exp, log, tanh, erf and sigmoid are straight-line arithmetic from
  :mod:`eqsat.backends.llvm.vmath` (range reduction + polynomial, ``select`` for the special
  values; within 2 ulp of the true value, see its docstring), so loops calling them vectorize.
  float64 keeps libm: intrinsics with an LLVM intrinsic use it (``llvm.exp.f64`` …; the backend
  lowers it to libm's ``exp``, which MCJIT resolves from the process); tanh and erf call libm
  (``tanh``, ``erf``); sigmoid and rsqrt are written out (``1 / (1 + exp(-|x|))``, its
  numerator ``exp(-|x|)`` for x < 0, and ``1 / sqrt(x)``) as the reference computes them.
  float16 math runs in float32.
"""

from __future__ import annotations

from llvmlite import ir

from eqsat.backends.llvm.vmath import FUNCTIONS as VMATH
from eqsat.backends.llvm.vmath import emit_f32
from eqsat.lower.analysis import walk
from eqsat.lower.intrinsics import INTRINSICS
from eqsat.lower.loops import (
    INDEX,
    BinaryOp,
    BinOp,
    Buffer,
    Call,
    Cast,
    Cmp,
    CmpOp,
    Const,
    Expr,
    Load,
    Select,
    Var,
    is_float,
)

I1, I8, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(64)
PTR = ir.PointerType()
_FLOATS = {"float16": ir.HalfType(), "float32": ir.FloatType(), "float64": ir.DoubleType()}
_SUFFIX = {"float16": "f16", "float32": "f32", "float64": "f64"}


def reg_type(dtype: str) -> ir.Type:
    """The type of a value of ``dtype`` in a register."""
    if dtype == "bool":
        return I1
    if is_float(dtype):
        return _FLOATS[dtype]
    return ir.IntType(int(dtype.removeprefix("u").removeprefix("int")))


def mem_type(dtype: str) -> ir.Type:
    """The element type of a ``dtype`` buffer in memory (numpy's layout: bool is a byte)."""
    return I8 if dtype == "bool" else reg_type(dtype)


def _suffix(dtype: str) -> str:
    return _SUFFIX.get(dtype) or f"i{reg_type(dtype).width}"


def _unsigned(dtype: str) -> bool:
    return dtype.startswith("uint") or dtype == "bool"


def loads_in(e: Expr) -> set[Load]:
    return {n for n in walk(e) if isinstance(n, Load)}


class ExprEmitter:
    """Mixin of the function emitter: needs ``self.b`` (builder), ``self.module``, ``self.env``
    (var name -> value), ``self.bufs`` (buffer name -> base pointer), ``self.bounds`` (var name
    -> the constant iteration count of its enclosing loop, where it has one) and
    ``self.new_block``."""

    b: ir.IRBuilder
    module: ir.Module
    env: dict[str, ir.Value]
    bufs: dict[str, ir.Value]
    bounds: dict[str, int]

    # ------------------------------------------------------------------ memory
    def address(self, buf: Buffer, index: tuple[Expr, ...]) -> ir.Value:
        """Row-major: the flat offset by Horner's rule over the dims (size params from env); a
        ``blocked`` buffer's (NCHW[B]c) as the row-major one of ``[N][C/B][H][W][B]``."""
        off = ir.Constant(I64, 0)
        shape = buf.shape
        if buf.blocked:
            n, c, h, w = index
            split = self.block_lane(c, buf.blocked)
            if split is None:
                blk = Const(buf.blocked)
                split = (BinOp(BinaryOp.FLOORDIV, c, blk), BinOp(BinaryOp.MOD, c, blk))
            index = (n, split[0], h, w, split[1])
            shape = (shape[0], shape[1] // buf.blocked, shape[2], shape[3], buf.blocked)
        for k, (e, dim) in enumerate(zip(index, shape, strict=True)):
            i = self.expr(e)
            if k == 0:
                off = i
            else:
                d = self.env[dim] if isinstance(dim, str) else ir.Constant(I64, dim)
                off = self.b.add(self.b.mul(off, d, flags=["nsw"]), i, flags=["nsw"])
        return self.b.gep(
            self.bufs[buf.name], [off], inbounds=True, source_etype=mem_type(buf.dtype)
        )

    def block_lane(self, c: Expr, blk: int) -> tuple[Expr, Expr] | None:
        """``(X, l)`` when the channel index ``c`` is ``X * blk + l`` with ``l`` the variable of
        an enclosing loop of at most ``blk`` iterations (``layout._lanes_inner`` writes it so):
        block and lane as they are, so that the lane loop's accesses are contiguous (through
        ``// blk`` and ``% blk`` the loop vectorizer saw gathers)."""
        bounds = self.bounds
        if (isinstance(c, BinOp) and c.op is BinaryOp.ADD and isinstance(c.b, Var)
                and isinstance(c.a, BinOp) and c.a.op is BinaryOp.MUL and c.a.b == Const(blk)
                and 0 < bounds.get(c.b.name, blk + 1) <= blk):
            return c.a.a, c.b
        return None

    def load(self, buf: Buffer, index: tuple[Expr, ...]) -> ir.Value:
        v = self.b.load(self.address(buf, index), typ=mem_type(buf.dtype))
        return self.b.icmp_unsigned("!=", v, ir.Constant(I8, 0)) if buf.dtype == "bool" else v

    def store(self, buf: Buffer, index: tuple[Expr, ...], value: ir.Value) -> None:
        if buf.dtype == "bool":
            value = self.b.zext(value, I8)
        self.b.store(value, self.address(buf, index))

    # ------------------------------------------------------------------ expressions
    def expr(self, e: Expr) -> ir.Value:
        if isinstance(e, Const):
            return ir.Constant(
                reg_type(e.dtype), int(e.value) if not is_float(e.dtype) else e.value
            )
        if isinstance(e, Var):
            return self.env[e.name]
        if isinstance(e, Load):
            return self.load(e.buffer, e.index)
        if isinstance(e, BinOp):
            return self.binop(e.op, e.a.dtype, self.expr(e.a), self.expr(e.b))
        if isinstance(e, Cmp):
            return self.cmp(e.op, e.a.dtype, self.expr(e.a), self.expr(e.b))
        if isinstance(e, Select):
            return self.select(e)
        if isinstance(e, Cast):
            return self.cast(self.expr(e.value), e.value.dtype, e.dtype)
        if isinstance(e, Call):
            return self.call(e.intrinsic, e.dtype, [self.expr(a) for a in e.args])
        raise TypeError(f"cannot emit {type(e).__name__}")

    def binop(self, op: BinaryOp, t: str, a: ir.Value, b: ir.Value, fmf=()) -> ir.Value:
        B = self.b
        if is_float(t):
            simple = {"+": B.fadd, "-": B.fsub, "*": B.fmul, "/": B.fdiv}.get(op.value)
            if simple is not None:
                return simple(a, b, flags=list(fmf))
            if op in (BinaryOp.MIN, BinaryOp.MAX):
                name = "llvm.minimum" if op is BinaryOp.MIN else "llvm.maximum"
                return B.call(self.intrinsic(name, t, 2), [a, b], fastmath=list(fmf))
            return self._float_divmod(op, t, a, b)
        if op is BinaryOp.AND:
            return B.and_(a, b)
        if op is BinaryOp.OR:
            return B.or_(a, b)
        nsw = ["nsw"] if t == INDEX else []
        if op in (BinaryOp.ADD, BinaryOp.SUB, BinaryOp.MUL):
            return {"+": B.add, "-": B.sub, "*": B.mul}[op.value](a, b, flags=nsw)
        if op in (BinaryOp.MIN, BinaryOp.MAX):
            name = ("u" if _unsigned(t) else "s") + op.value
            return B.call(self.intrinsic(f"llvm.{name}", t, 2), [a, b])
        return self._int_divmod(op, t, a, b)

    def _int_divmod(self, op: BinaryOp, t: str, a: ir.Value, b: ir.Value) -> ir.Value:
        B, zero = self.b, ir.Constant(a.type, 0)
        bz = B.icmp_unsigned("==", b, zero)
        safe = B.select(bz, ir.Constant(a.type, 1), b)  # numpy: x // 0 == x % 0 == 0
        if _unsigned(t):
            r = (B.udiv if op is BinaryOp.FLOORDIV else B.urem)(a, safe)
            return B.select(bz, zero, r)
        q, r = B.sdiv(a, safe), B.srem(a, safe)
        # floor: the remainder is nonzero and its sign differs from the divisor's
        fix = B.and_(B.icmp_signed("!=", r, zero), B.icmp_signed("<", B.xor(r, safe), zero))
        if op is BinaryOp.FLOORDIV:
            out = B.sub(q, B.zext(fix, a.type))
        else:
            out = B.select(fix, B.add(r, safe), r)
        return B.select(bz, zero, out)

    def _float_divmod(self, op: BinaryOp, t: str, a: ir.Value, b: ir.Value) -> ir.Value:
        """numpy's ``npy_divmod``, step by step (C truthiness: NaN is true)."""
        B, zero, one = self.b, ir.Constant(a.type, 0.0), ir.Constant(a.type, 1.0)
        copysign = self.intrinsic("llvm.copysign", t, 2)
        mod = B.frem(a, b)
        div = B.fdiv(B.fsub(a, mod), b)
        fix = B.and_(
            B.fcmp_unordered("!=", mod, zero),
            B.icmp_unsigned("!=", B.fcmp_ordered("<", b, zero), B.fcmp_ordered("<", mod, zero)),
        )
        if op is BinaryOp.MOD:
            mod = B.select(fix, B.fadd(mod, b), mod)
            return B.select(B.fcmp_ordered("==", mod, zero), B.call(copysign, [zero, b]), mod)
        div = B.select(fix, B.fsub(div, one), div)
        fl = B.call(self.intrinsic("llvm.floor", t, 1), [div])
        up = B.fcmp_ordered(">", B.fsub(div, fl), ir.Constant(a.type, 0.5))
        fl = B.select(up, B.fadd(fl, one), fl)
        quot = B.fdiv(a, b)
        fl = B.select(B.fcmp_unordered("!=", div, zero), fl, B.call(copysign, [zero, quot]))
        return B.select(B.fcmp_ordered("==", b, zero), quot, fl)  # b == 0: a / b, as numpy

    def cmp(self, op: CmpOp, t: str, a: ir.Value, b: ir.Value) -> ir.Value:
        if is_float(t):
            if op is CmpOp.NE:
                return self.b.fcmp_unordered("!=", a, b)
            return self.b.fcmp_ordered(op.value, a, b)
        icmp = self.b.icmp_unsigned if _unsigned(t) else self.b.icmp_signed
        return icmp(op.value, a, b)

    def select(self, e: Select) -> ir.Value:
        cond = self.expr(e.cond)
        safe = loads_in(e.cond)
        if loads_in(e.a) <= safe and loads_in(e.b) <= safe:
            return self.b.select(cond, self.expr(e.a), self.expr(e.b))
        then_bb, else_bb, join = (self.new_block(f"sel.{s}") for s in ("a", "b", "join"))
        self.b.cbranch(cond, then_bb, else_bb)
        incoming = []
        for bb, arm in ((then_bb, e.a), (else_bb, e.b)):
            self.b.position_at_end(bb)
            v = self.expr(arm)
            incoming.append((v, self.b.block))
            self.b.branch(join)
        self.b.position_at_end(join)
        phi = self.b.phi(incoming[0][0].type)
        for v, bb in incoming:
            phi.add_incoming(v, bb)
        return phi

    def cast(self, v: ir.Value, src: str, dst: str) -> ir.Value:
        B, to = self.b, reg_type(dst)
        if src == dst:
            return v
        if dst == "bool":  # numpy: nonzero (NaN included) is True
            if is_float(src):
                return B.fcmp_unordered("!=", v, ir.Constant(v.type, 0.0))
            return B.icmp_unsigned("!=", v, ir.Constant(v.type, 0))
        if is_float(src) and is_float(dst):
            return B.fpext(v, to) if _bits(dst) > _bits(src) else B.fptrunc(v, to)
        if is_float(src):  # as numpy (C on x86): narrow ints through int64, wrapping
            if to.width == 64:
                return (B.fptoui if _unsigned(dst) else B.fptosi)(v, to)
            return B.trunc(B.fptosi(v, I64), to)
        if is_float(dst):
            return (B.uitofp if _unsigned(src) else B.sitofp)(v, to)
        if to.width == v.type.width:
            return v
        if to.width < v.type.width:
            return B.trunc(v, to)
        return (B.zext if _unsigned(src) else B.sext)(v, to)

    # ------------------------------------------------------------------ intrinsics
    def intrinsic(self, name: str, dtype: str, arity: int, ret: ir.Type | None = None):
        """Declare (once) the overload of an LLVM intrinsic for ``dtype``."""
        t = reg_type(dtype)
        extra = [I1] if name == "llvm.abs" else []
        full = f"{name}.{_suffix(dtype)}"
        return self.declare(full, ret or t, [t] * arity + extra)

    def declare(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, args), name)
        return fn

    def call(self, name: str, t: str, args: list[ir.Value]) -> ir.Value:
        B = self.b
        if name == "neg":
            return B.fneg(args[0]) if is_float(t) else B.neg(args[0])
        if name == "not":
            return B.not_(args[0])
        if name == "abs" and not is_float(t):
            if _unsigned(t):
                return args[0]
            return B.call(self.intrinsic("llvm.abs", t, 1), [args[0], ir.Constant(I1, 0)])
        if t == "float16":  # math in float32, rounded back
            wide = [B.fpext(a, _FLOATS["float32"]) for a in args]
            return B.fptrunc(self.call(name, "float32", wide), _FLOATS["float16"])
        if t == "float32" and name in VMATH:  # arithmetic the vectorizer widens (vmath)
            return emit_f32(B, name, args[0])
        one = ir.Constant(args[0].type, 1.0)
        if name == "sigmoid":  # e^x / (1 + e^x) for x < 0, as the reference
            e = self.call("exp", t, [B.fneg(self.call("abs", t, args))])
            num = B.select(B.fcmp_ordered("<", args[0], ir.Constant(args[0].type, 0.0)), e, one)
            return B.fdiv(num, B.fadd(one, e))
        if name == "rsqrt":
            return B.fdiv(one, self.call("sqrt", t, args))
        base = INTRINSICS[name].llvm
        if base is not None:
            return B.call(self.intrinsic(base, t, len(args)), args)
        libm = name + ("f" if t == "float32" else "")  # tanhf / tanh, erff / erf
        return B.call(self.declare(libm, args[0].type, [a.type for a in args]), args)


def _bits(dtype: str) -> int:
    return int(dtype.removeprefix("float"))
