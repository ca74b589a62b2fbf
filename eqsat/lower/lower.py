"""lower(): TensorGraph -> LoopProgram, one kernel per fusion group.

Consumes a TensorGraph (:mod:`eqsat.egraph.ir`); produces a :class:`Lowered`: the unscheduled
:class:`~eqsat.lower.loops.LoopProgram`, the weight values by buffer name (they travel beside
the program), the graph-name -> buffer-name map, the memory plan and a report (kernels, what
fused where, peak temporary bytes).

Steps:
1. Constant folding (``egraph.passes.fold_constants``), then the *needed* nodes: backwards from
   the outputs through *data* inputs only (:attr:`Compute.data`), so a shape computation that
   only feeds Reshape's shape input is never lowered. A needed op without a compute definition
   is an error naming every such op (one line; the CLI makes it exit 2).
2. Fusion (:mod:`eqsat.lower.fuse`) picks kernels and materialized values.
3. Views: each value gets a :class:`~eqsat.lower.compute.View`: a load of its buffer when
   materialized, a constant when it is a one-element weight, else its compute definition over
   its inputs' views (memoized; calling it inlines the producer).
4. Kernels: default loop nests, serial. A root's reduction stages accumulate in place into the
   output buffer when there is one stage of the buffer's dtype and no inner loops (``C[i, j] =
   0; for k: C[i, j] += ...``, then ``C[i, j] = epilogue(C[i, j])`` if any); otherwise into
   kernel-local scalars (``Allocate``), one per stage (Softmax: max, then sum). Epilogue values
   used twice are ``Let``-bound. Symbolic sizes a kernel needs but none of its params carry are
   rewritten over one that does (:func:`eqsat.lower.indexing.atom_rewrites`).
5. Memory planning (:mod:`eqsat.lower.memory`).

Weights stay weight buffers in their graph layout (packing for a GEMM micro-kernel is the
backend's schedule); the exception is compile-time folding a compute definition asks for
(BatchNormalization's per-channel scale and shift), registered through ``Ctx.pack``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from eqsat.egraph.ir import Node, TensorGraph, TensorType
from eqsat.egraph.ops import OPS, is_known
from eqsat.lower import fuse
from eqsat.lower.analysis import free_vars, substitute
from eqsat.lower.check import check_program
from eqsat.lower.compute import COMPUTE, Ctx, Reduction, Unsupported, View
from eqsat.lower.compute_ew import k
from eqsat.lower.indexing import atom_rewrites, dim, size_name, size_values
from eqsat.lower.loops import (
    DTYPES,
    Accumulate,
    Allocate,
    Buffer,
    BufferKind,
    Const,
    Expr,
    Kernel,
    Let,
    Load,
    LoopProgram,
    Stmt,
    Store,
    Var,
    loop,
    seq,
)
from eqsat.lower.lowered import KernelInfo, Lowered, LoweringError, Report
from eqsat.lower.memory import plan_memory


def lower(graph: TensorGraph, name: str = "main") -> Lowered:
    from eqsat.egraph.passes import fold_constants

    return _Lowering(fold_constants(graph), name).run()


class _Lowering:
    def __init__(self, graph: TensorGraph, name: str):
        self.g = graph
        self.name = name
        self.types = graph.types
        self.buffers: dict[str, Buffer] = {}  # graph value -> buffer
        self.taken: set[str] = set()
        self.weights: dict[str, np.ndarray] = {}
        self.views: dict[str, View] = {}
        self.products: set[str] = set()
        self.copies: dict[str, Buffer] = {}  # graph output that is an input/weight -> its copy

    # ------------------------------------------------------------------ graph analysis
    def needed(self) -> list[Node]:
        live = set(self.g.outputs)
        keep: list[Node] = []
        for n in reversed(self.g.nodes):
            if not any(o in live for o in n.outputs if o):
                continue
            keep.append(n)
            c = COMPUTE.get(n.op) if is_known(n) else None
            live.update(i for p, i in enumerate(n.inputs) if i and (c is None or c.is_data(p)))
        keep.reverse()
        missing = sorted({f"{n.domain}.{n.op}" if n.domain else n.op
                          for n in keep if not is_known(n) or n.op not in COMPUTE})
        if missing:
            raise LoweringError(f"no compute definition for op(s): {', '.join(missing)}")
        for n in keep:
            m = COMPUTE[n.op].outputs
            for o in n.outputs[m:]:
                if o and o in live:
                    raise LoweringError(
                        f"{n.op} {n.name or n.outputs[0]}: output {o} is used; the compiler "
                        f"computes only the first {'output' if m == 1 else f'{m} outputs'}"
                    )
        self.check_types(keep)
        return keep

    def check_types(self, nodes: list[Node]) -> None:
        """Refuse, naming the value, a dtype the loop IR lacks (uint16/32/64, bfloat16, float8,
        strings) or an empty tensor (a zero dim: buffers and loop extents are positive)."""

        def refuse(where: str, v: str) -> None:
            t = self.types.get(v)
            if t is None:
                return
            if t.dtype not in DTYPES:
                raise LoweringError(
                    f"{where}: {v} has dtype {t.dtype}, which the compiler does not support "
                    f"({', '.join(DTYPES)})"
                )
            if any(d == 0 for d in t.shape):
                raise LoweringError(
                    f"{where}: {v} is an empty tensor {t.dtype}{list(t.shape)} "
                    f"(zero-size tensors are not supported)"
                )

        for i in self.g.inputs:
            refuse("input", i)
        for n in nodes:
            c = COMPUTE[n.op]
            where = f"{n.op} {n.name or n.outputs[0]}"
            for p, i in enumerate(n.inputs):
                if i and c.is_data(p):
                    refuse(where, i)
            for o in n.outputs[: c.outputs]:
                if o:
                    refuse(where, o)
        for o in self.g.outputs:
            refuse("output", o)

    # ------------------------------------------------------------------ buffers and views
    def buffer(self, value: str, kind: BufferKind, t: TensorType | None = None) -> Buffer:
        if value in self.buffers:
            return self.buffers[value]
        t = t or self.types[value]
        base = re.sub(r"\W+", "_", value).strip("_") or "v"
        base = base if base[0].isalpha() else f"v_{base}"
        name, n = base, 1
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        shape = []
        for d in t.shape:
            if isinstance(d, str):
                self.products.add(d)
                shape.append(size_name(d))
            else:
                shape.append(d)
        b = Buffer(name, tuple(shape), t.dtype, kind)
        self.buffers[value] = b
        return b

    def weight_view(self, value: str, arr: np.ndarray, t: TensorType) -> View:
        if arr.size == 1:
            c = k(arr.reshape(-1)[0].item(), t.dtype)
            return View(t, lambda idx: c)
        b = self.buffer(value, BufferKind.WEIGHT, t)
        self.weights[b.name] = np.ascontiguousarray(arr)
        return View(t, lambda idx: Load(b, idx))

    def pack(self, value: str, arr: np.ndarray) -> View:
        t = TensorType(arr.dtype.name, tuple(arr.shape))
        return self.weight_view(value, arr, t)

    def view(self, value: str) -> View:
        v = self.views.get(value)
        if v is not None:
            return v
        t = self.types[value]
        if value in self.g.weights:
            v = self.weight_view(value, np.asarray(self.g.weights[value]), t)
        elif value in self.buffers:
            b = self.buffers[value]
            v = View(t, lambda idx: Load(b, idx))
        else:
            node = self.producer[value]
            res = self.compute(node, {})
            if isinstance(res, Reduction) or any(isinstance(r, Reduction) for r in res):
                raise LoweringError(f"{node.op}: a reduction cannot be inlined ({value})")
            for o, view in zip(node.outputs, res, strict=False):
                if o:
                    self.views[o] = view
            return self.views[value]
        self.views[value] = v
        return v

    def compute(self, node: Node, local: Mapping[str, View]) -> Reduction | list[View]:
        c = COMPUTE[node.op]
        attrs = {k_: v for k_, v in OPS[node.op].attrs.items()} | node.attr
        attrs["_num_outputs"] = len(node.outputs)
        ins = []
        for p, i in enumerate(node.inputs):
            if not i or not c.is_data(p):
                ins.append(None)
            else:
                ins.append(local[i] if i in local else self.view(i))
        ctx = Ctx(
            node,
            attrs,
            ins,
            [self.types[i] if i else None for i in node.inputs],
            [np.asarray(self.g.weights[i]) if i in self.g.weights else None for i in node.inputs],
            [self.types[o] for o in node.outputs if o],
            self.pack,
        )
        where = f"{node.op} {node.name or node.outputs[0]}"
        try:
            res = c.build(ctx)
        except (Unsupported, ValueError, KeyError, TypeError) as e:
            raise LoweringError(f"{where}: {e}") from None
        if isinstance(res, Reduction) or any(isinstance(r, Reduction) for r in res):
            return res
        return [View(v.type, _named(v.at, where)) for v in res]

    # ------------------------------------------------------------------ the pass
    def run(self) -> Lowered:
        nodes = self.needed()
        self.producer = {o: n for n in nodes for o in n.outputs if o}
        uses: dict[str, list[Node]] = {}
        for n in nodes:
            c = COMPUTE[n.op]
            for i in dict.fromkeys(i for p, i in enumerate(n.inputs) if i and c.is_data(p)):
                uses.setdefault(i, []).append(n)
        outs = list(dict.fromkeys(self.g.outputs))
        for i in self.g.inputs:
            self.buffer(i, BufferKind.INPUT)
        fplan = fuse.plan(
            nodes,
            uses,
            outs,
            self.types,
            lambda n: OPS[n.op].kind,
            self.g.meta.fusion,
            lambda n: bool(OPS[n.op].ctor),  # a typed constructor: extraction could fuse it
        )
        for o in outs:
            if o in fplan.materialized:
                self.buffer(o, BufferKind.OUTPUT)
        for g in fplan.groups:
            if g.value not in outs:
                self.buffer(g.value, BufferKind.TEMP)
        kernels, infos = [], []
        for g in fplan.groups:
            kname = f"k{len(kernels)}_{g.root.op.lower()}"
            kernels.append(self.kernel(kname, g))
            infos.append(
                KernelInfo(
                    kname,
                    tuple(n.op for n in g.nodes),
                    tuple(n.name or n.outputs[0] for n in g.nodes),
                    g.value,
                )
            )
        for o in outs:  # outputs that are inputs or weights: a copy kernel
            if o not in fplan.materialized:
                kname = f"k{len(kernels)}_copy"
                kernels.append(self.copy(kname, o))
                infos.append(KernelInfo(kname, ("Identity",), (o,), o))
        bufs = sorted(self.buffers.values(), key=lambda b: _ORDER[b.kind])
        program = LoopProgram(self.name, tuple(bufs), tuple(kernels))
        check_program(program)
        mem = plan_memory(program)
        inlined = tuple(v for v in self.views if v in self.producer and v not in self.buffers)
        report = Report(tuple(infos), inlined, mem.peak_bytes, mem.unshared_bytes)
        copy_keys = {f"{v}_out" for v in self.copies}
        names = {v: b.name for v, b in self.buffers.items() if v not in copy_keys}
        outputs = {o: (self.copies.get(o) or self.buffers[o]).name for o in outs}
        products = tuple(sorted(self.products))
        _check_sizes_determined(program, products)
        return Lowered(program, self.weights, names, outputs, mem, report, products)

    def copy(self, kname: str, value: str) -> Kernel:
        out = self.buffer(f"{value}_out", BufferKind.OUTPUT, self.types[value])
        self.copies[value] = out
        src = self.view(value)
        idx = tuple(Var(f"i{a}") for a in range(len(out.shape)))
        body = self.nest(idx, self.types[value].shape, Store(out, idx, src.at(idx)))
        return self.finish(kname, body)

    # ------------------------------------------------------------------ kernels
    def kernel(self, kname: str, g: fuse.Group) -> Kernel:
        out = self.buffers[g.value]
        t = self.types[g.value]  # the root's shape too: epilogues keep it
        rank = t.rank
        idx = tuple(Var(f"i{a}") for a in range(rank))
        res = self.compute(g.root, {})
        if not isinstance(res, Reduction):  # per output (Split, LayerNormalization): which one
            at = [o for o in g.root.outputs if o].index(g.value) if not g.epilogue else 0
            pick = res[at]
            res = pick if isinstance(pick, Reduction) else [pick]
        epilogue = self.epilogue(g)
        if not isinstance(res, Reduction):
            value, lets = epilogue(res[0].at(idx))
            return self.finish(kname, self.nest(idx, t.shape, _lets(lets, Store(out, idx, value))))
        rows = res.rows
        row_idx = tuple(idx[a] if a in rows else None for a in range(rank))
        inner = [a for a in range(rank) if a not in rows]
        st = res.stages
        if len(st) == 1 and not inner and st[0].dtype == out.dtype:
            s = st[0]
            acc = Load(out, idx)
            rv = tuple(Var(v) for v in s.vars)
            red = self.nest(rv, s.extents, Accumulate(out, idx, s.body(row_idx, rv, {}), s.op))
            value, lets = epilogue(res.final(idx, {s.name: acc}))
            body = [Store(out, idx, k(s.init_value, s.dtype)), red]
            if value != acc:
                body.append(_lets(lets, Store(out, idx, value)))
            nest = self.nest(idx, t.shape, seq(*body))
            return self.finish(kname, nest)
        locals_, vals, body = [], {}, []
        for s in st:
            lb = Buffer(f"{kname}_{s.name}", (1,), s.dtype, BufferKind.LOCAL)
            rv = tuple(Var(v) for v in s.vars)
            acc = Accumulate(lb, (Const(0),), s.body(row_idx, rv, dict(vals)), s.op)
            body += [
                Store(lb, (Const(0),), k(s.init_value, s.dtype)),
                self.nest(rv, s.extents, acc),
            ]
            vals[s.name] = Load(lb, (Const(0),))
            locals_.append(lb)
        value, lets = epilogue(res.final(idx, vals))
        inner_idx = tuple(idx[a] for a in inner)
        body.append(
            self.nest(inner_idx, [t.shape[a] for a in inner], _lets(lets, Store(out, idx, value)))
        )
        stmt: Stmt = seq(*body)
        for lb in reversed(locals_):
            stmt = Allocate(lb, stmt)
        row_vars = tuple(idx[a] for a in rows)
        return self.finish(kname, self.nest(row_vars, [t.shape[a] for a in rows], stmt))

    def epilogue(self, g: fuse.Group):
        """A function: the root's value at the store index -> (stored value, lets)."""

        def apply(root_value: Expr):
            if not g.epilogue:
                return root_value, []
            members = [g.root.outputs[0], *(n.outputs[0] for n in g.epilogue)]
            count = {v: sum(i == v for n in g.epilogue for i in n.inputs) for v in members}
            env: dict[str, Expr] = {}
            lets: list[tuple[Var, Expr]] = []

            def bind(v: str, e: Expr):
                if count.get(v, 0) > 1 and not isinstance(e, Load | Var | Const):
                    var = Var(f"e{len(lets)}", e.dtype)
                    lets.append((var, e))
                    e = var
                env[v] = e

            bind(members[0], root_value)
            for n in g.epilogue:
                local = {
                    i: View(self.types[i], lambda idx, e=env[i]: e) for i in n.inputs if i in env
                }
                (view,) = self.compute(n, local)[:1]
                shape = self.types[n.outputs[0]].shape
                bind(n.outputs[0], view.at(tuple(Var(f"i{a}") for a in range(len(shape)))))
            return env[members[-1]], lets

        return apply

    def nest(self, vars_, extents, body: Stmt) -> Stmt:
        for v, e in reversed(list(zip(vars_, extents, strict=True))):
            body = loop(v.name, e if isinstance(e, Expr) else dim(e), body)
        return body

    def finish(self, kname: str, body: Stmt) -> Kernel:
        from eqsat.lower.analysis import walk

        used = {n.buffer.name for n in walk(body) if isinstance(n, Load | Store | Accumulate)}
        params = tuple(
            sorted(
                (b for b in self.buffers.values() if b.name in used),
                key=lambda b: _ORDER[b.kind],  # program order: by kind, then creation
            )
        )
        have = [d for b in params for d in self._graph_dims(b)]
        needed = free_vars(body)
        fix = atom_rewrites(needed, have)
        if fix:
            body = substitute(body, fix)
        # a size only an extent uses (a fused Softmax over a row whose length is a product of
        # intermediate symbols) is no dim of the kernel's buffers: it has no value at run time
        unbound = sorted(
            free_vars(body) - {d for b in params for d in b.shape if isinstance(d, str)}
        )
        if unbound:
            raise LoweringError(
                f"the size(s) {', '.join(unbound[:2])} of kernel {kname} are no dim of its "
                "buffers (shape arithmetic on intermediate sizes); give the inputs fixed sizes "
                "with --input-shape NAME=D1,D2,..."
            )
        return Kernel(kname, params, body)

    def _graph_dims(self, b: Buffer):
        for d in b.shape:
            if isinstance(d, str):
                yield next((p for p in self.products if size_name(p) == d), d)


_ORDER = {BufferKind.INPUT: 0, BufferKind.WEIGHT: 1, BufferKind.TEMP: 2, BufferKind.OUTPUT: 3}


def _named(at, where: str):
    """``at``, with an unsupported variant found while indexing reported against its node."""

    def guarded(idx):
        try:
            return at(idx)
        except Unsupported as e:
            raise LoweringError(f"{where}: {e}") from None

    return guarded


def _lets(lets: list[tuple[Var, Expr]], body: Stmt) -> Stmt:
    for var, e in reversed(lets):
        body = Let(var, e, body)
    return body


__all__ = ["KernelInfo", "Lowered", "LoweringError", "Report", "lower"]


def _check_sizes_determined(program: LoopProgram, products: tuple[str, ...]) -> None:
    """Every size param must follow from the inputs' dims (an input's own symbol, or a product
    of them): a symbol that shape inference made for an intermediate value (``floor_1_2_1``
    for a strided window over a symbolic width) has no value at run time — the compiled code
    does not evaluate shape arithmetic. Refused here with what to do, not a KeyError later."""
    atoms = {d for b in program.inputs for d in b.shape if isinstance(d, str)}
    known = atoms | set(size_values(products, dict.fromkeys(atoms, 1)))
    missing = [d for d in program.sizes if d not in known]
    if missing:
        named = ", ".join(missing[:2]) + (f" and {len(missing) - 2} more" if len(missing) > 2
                                          else "")
        raise LoweringError(
            f"the size(s) {named} of intermediate values do not follow from the "
            "input shapes (no shape arithmetic at run time); give the inputs fixed sizes with "
            "--input-shape NAME=D1,D2,..."
        )

