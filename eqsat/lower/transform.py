"""Loop rewrites behind the schedule primitives: each takes a kernel body and returns a new one.

Consumes and produces LoopProgram statements (:mod:`eqsat.lower.loops`); called by
:func:`eqsat.lower.schedule.apply`, one function per primitive. Each rewrite either keeps the
program's results (up to the reassociation ``Accumulate`` allows) or raises ``ScheduleError``
saying why it may not; none is a silent no-op.

Legality is decided syntactically and conservatively, on the buffer classification of
:func:`eqsat.lower.analysis.written_buffer_conflicts`: a buffer that is only accumulated may be
updated in any order; another written buffer is safe to reorder / run in parallel when it has a
single index tuple that uses the loops concerned. That assumes an index is injective in the loop
variables it uses, which holds for the indices lowering writes and for everything split and fuse
make of them (``o * f + i`` with ``i < f``; ``f // n`` beside ``f % n``).
"""

from __future__ import annotations

import dataclasses

from eqsat.lower.analysis import (
    accesses,
    add,
    affine,
    const_int,
    free_vars,
    loops,
    mul,
    rebuild,
    replace_buffer,
    substitute,
    walk,
    written_buffer_conflicts,
)
from eqsat.lower.loops import (
    INDEX,
    Allocate,
    BinaryOp,
    BinOp,
    Buffer,
    BufferKind,
    Cmp,
    CmpOp,
    Const,
    Expr,
    For,
    If,
    Let,
    Load,
    LoopIRError,
    LoopKind,
    Stmt,
    Store,
    Var,
    seq,
)

MAX_GPU_THREADS = 1024  # threads per block on every CUDA architecture


class ScheduleError(LoopIRError):
    """A primitive that does not apply (unknown loop, illegal reordering, ...)."""


def bound_names(body: Stmt) -> set[str]:
    return {n.var for n in loops(body)} | {n.var.name for n in walk(body) if isinstance(n, Let)}


def find(body: Stmt, name: str) -> For:
    for f in loops(body):
        if f.var == name:
            return f
    raise ScheduleError(f"no loop named {name!r}")


def replace_loop(body: Stmt, name: str, new: Stmt) -> Stmt:
    if isinstance(body, For) and body.var == name:
        return new
    return rebuild(body, lambda c: replace_loop(c, name, new) if isinstance(c, Stmt) else c)


def _fresh(body: Stmt, *names: str) -> None:
    taken = bound_names(body) & set(names)
    if taken:
        raise ScheduleError(f"loop name {sorted(taken)[0]!r} is already used")


def _band_safe(body: Stmt, band: set[str], what: str, parallel: bool = False) -> None:
    """Refuse unless iterations of the ``band`` loops around ``body`` may run in another order
    (``parallel``: at the same time). Points that reach one element of an owned buffer must
    differ in one band loop only, so that any order of the band keeps their order; in parallel
    they must not exist. A reduction may run in any order but not in parallel into one element.
    """
    extents = {f.var: f.extent for f in loops(body)}
    for buf, (how, indices) in written_buffer_conflicts(body).items():
        indices = tuple(dict.fromkeys(_canonical(ix, extents) for ix in indices))
        if len(indices) > 1:
            raise ScheduleError(f"{what}: {buf.name} is accessed at different indices")
        missing = band - set().union(*(free_vars(i) for i in indices[0]))
        if how == "reduction" and parallel and missing:
            raise ScheduleError(f"{what}: iterations race on the reduction into {buf.name}")
        if how == "owned" and (missing if parallel else len(missing) > 1):
            raise ScheduleError(f"{what}: iterations may conflict on {buf.name}")


def _canonical(index: tuple[Expr, ...], extents: dict[str, Expr]) -> tuple[Expr, ...]:
    """``index`` with the loops bound inside the body renamed by order of appearance and
    extent, so that a copy-in and a copy-out nest (same box, other loop names) compare equal."""
    names: dict[str, Expr] = {}
    for n in (n for e in index for n in walk(e)):
        if isinstance(n, Var) and n.name in extents and n.name not in names:
            names[n.name] = Var(f"#{len(names)}:{extents[n.name]}")
    return tuple(substitute(i, names) for i in index)


# ---------------------------------------------------------------------------------- primitives
def split(body: Stmt, name: str, factor: int) -> Stmt:
    """``for i in range(n)`` → ``for i.o in range(ceil(n / f)): for i.i in range(f)`` with
    ``i = i.o * f + i.i``; a non-dividing (or symbolic) extent guards the body with ``If``,
    placed under the perfect nest the body starts with."""
    if not isinstance(factor, int) or factor < 1:
        raise ScheduleError(f"split {name}: factor {factor!r} is not a positive int")
    f = find(body, name)
    o, i = f"{name}.o", f"{name}.i"
    _fresh(body, o, i)
    n = const_int(f.extent)
    outer = Const(-(-n // factor)) if n is not None else (f.extent + (factor - 1)) // factor
    j = add(mul(Var(o), factor), Var(i))
    inner_body = substitute(f.body, {name: j})
    if n is None or n % factor:
        inner_body = _guard(Cmp(CmpOp.LT, j, f.extent), inner_body)
    inner = For(i, Const(factor), inner_body)
    return replace_loop(body, name, dataclasses.replace(f, var=o, extent=outer, body=inner))


def _guard(cond: Expr, body: Stmt) -> Stmt:
    """``If(cond, body)`` sunk through the perfect nest ``body`` starts with (the condition reads
    only outer loops, so it may move inside): the nest stays perfect for reorder and fuse."""
    if isinstance(body, For):
        return dataclasses.replace(body, body=_guard(cond, body.body))
    return If(cond, body)


def _chain(body: Stmt, names: list[str], what: str) -> list[For]:
    """The perfectly nested loops from the outermost of ``names`` down to the last of them."""
    top = next((f for f in loops(body) if f.var in names), None)
    if top is None:
        raise ScheduleError(f"{what}: no loop named {names[0]!r}")
    chain, left = [top], set(names) - {top.var}
    while left:
        if not isinstance(chain[-1].body, For):
            raise ScheduleError(f"{what}: {sorted(left)} not perfectly nested under {top.var}")
        chain.append(chain[-1].body)
        left.discard(chain[-1].var)
    return chain


def reorder(body: Stmt, names: tuple[str, ...]) -> Stmt:
    """Permute loops of one perfect nest: the listed loops take their chain positions in the
    listed order; unlisted loops in between keep theirs. Extents are loop-invariant, so any
    order is well-formed; the conflict test decides whether it is legal."""
    if len(set(names)) != len(names):
        raise ScheduleError(f"reorder {names}: a loop is listed twice")
    chain = _chain(body, list(names), f"reorder {names}")
    _band_safe(chain[-1].body, {f.var for f in chain}, f"reorder {names}")
    slots = iter(names)
    by_name = {f.var: f for f in chain}
    order = [by_name[next(slots)] if f.var in names else f for f in chain]
    new: Stmt = chain[-1].body
    for f in reversed(order):
        new = dataclasses.replace(f, body=new)
    return replace_loop(body, chain[0].var, new)


def fuse(body: Stmt, outer: str, inner: str) -> Stmt:
    """Two directly nested loops → one of extent ``n_o * n_i`` (``outer = f // n_i``, ``inner =
    f % n_i``); the iteration order is unchanged, so it is always legal."""
    fo = find(body, outer)
    fi = fo.body
    if not (isinstance(fi, For) and fi.var == inner):
        raise ScheduleError(f"fuse {outer}, {inner}: {inner} is not directly inside {outer}")
    name = f"{outer}.{inner}.fused"
    _fresh(body, name)
    no, ni = const_int(fo.extent), const_int(fi.extent)
    ext = Const(no * ni) if no is not None and ni is not None else fo.extent * fi.extent
    v = Var(name)
    new_body = substitute(fi.body, {outer: v // fi.extent, inner: v % fi.extent})
    return replace_loop(body, outer, dataclasses.replace(fo, var=name, extent=ext, body=new_body))


def set_kind(body: Stmt, name: str, kind: LoopKind) -> Stmt:
    """Mark a loop parallel, vectorized or unrolled: the code is unchanged, the backend reads the
    kind. Vectorized and unrolled loops need a constant extent; a vectorized loop is innermost
    but for unrolled loops (LLVM fully unrolls them before it vectorizes: a pool's window);
    parallel iterations must not conflict (reductions across them would race)."""
    f = find(body, name)
    what = f"{kind.value} {name}"
    if kind in (LoopKind.VECTORIZED, LoopKind.UNROLLED) and const_int(f.extent) is None:
        raise ScheduleError(f"{what}: the extent must be a constant")
    if kind is LoopKind.VECTORIZED and any(g.kind is not LoopKind.UNROLLED for g in loops(f.body)):
        raise ScheduleError(f"{what}: only an innermost loop is vectorized (or unrolled ones)")
    if kind is LoopKind.GPU_THREAD:
        n = const_int(f.extent)
        if n is None or not 1 <= n <= MAX_GPU_THREADS:
            raise ScheduleError(f"{what}: threads per block must be a constant in 1..1024")
    if kind in (LoopKind.PARALLEL, LoopKind.GPU_BLOCK, LoopKind.GPU_THREAD):
        _band_safe(f.body, {name}, what, parallel=True)
    return replace_loop(body, name, dataclasses.replace(f, kind=kind))


def annotate(body: Stmt, name: str, key: str, value: str) -> Stmt:
    f = find(body, name)
    notes = tuple(sorted(dict(f.annotations, **{key: value}).items()))
    return replace_loop(body, name, dataclasses.replace(f, annotations=notes))


def _region(f: For, buf: Buffer, what: str):
    """The box of ``buf`` one iteration of ``f`` touches: per dim (base, extent, local index)."""
    accs = {a.index for a in _accesses(f.body, buf)}
    if len(accs) != 1:
        raise ScheduleError(f"{what}: needs one index tuple for {buf.name}, found {len(accs)}")
    inner = {g.var: const_int(g.extent) for g in loops(f.body)}
    if None in inner.values():
        raise ScheduleError(f"{what}: inner loops need constant extents")
    out = []
    for comp in accs.pop():
        form = affine(comp, set(inner))
        if form is None:
            raise ScheduleError(f"{what}: index {comp} is not affine in the inner loops")
        coeffs, base = form
        if free_vars(base) & bound_names(f.body):
            raise ScheduleError(f"{what}: index {comp} depends on a let inside the loop")
        local, size = Const(0), 1
        for v, c in sorted(coeffs.items(), key=lambda vc: vc[1]):
            if c != size:  # dense mixed radix only: every element of the box is reached
                raise ScheduleError(f"{what}: index of {buf.name} is not dense in {v}")
            local, size = add(local, mul(Var(v), c)), size * inner[v]
        out.append((base, size, local))
    return out


def _accesses(body: Stmt, buf: Buffer):
    return [a for a in accesses(body) if a.buffer == buf]


def cache(body: Stmt, buf: Buffer, at: str, write: bool) -> Stmt:
    """Stage the box of ``buf`` that one iteration of loop ``at`` touches in a local buffer:
    copy it in, run the body on the local, copy it back (write) — ``cache_write`` keeps a
    micro-kernel's accumulators local; without the copy back (read) it is ``pack``: the tile is
    contiguous, e.g. a KC × 16 panel of B. Copies are guarded by bounds where the body has a
    guard (a split tail): the box may then stick out of the buffer."""
    f = find(body, at)
    tag = "local" if write else "pack"
    what = f"{'cache_write' if write else 'pack'} {buf.name} at {at}"
    accs = _accesses(f.body, buf)
    if not accs:
        raise ScheduleError(f"{what}: the loop does not access {buf.name}")
    if write == all(a.kind == "load" for a in accs):
        raise ScheduleError(f"{what}: {'no write to' if write else 'writes to'} {buf.name}")
    region = _region(f, buf, what)
    local = Buffer(f"{buf.name}.{tag}", tuple(s for _, s, _ in region), buf.dtype, BufferKind.LOCAL)
    if any(isinstance(n, Allocate) and n.buffer.name == local.name for n in walk(body)):
        raise ScheduleError(f"{what}: {local.name} already exists")
    new_index = tuple(ix for _, _, ix in region)
    staged = replace_buffer(f.body, buf, local, lambda _: new_index)
    guarded = any(isinstance(n, If) for n in walk(f.body))

    def copy(direction: str) -> Stmt:
        vs = [Var(f"{buf.name}.{direction}{d}") for d in range(len(region))]
        _fresh(body, *(v.name for v in vs))
        orig = tuple(add(b, v) for (b, _, _), v in zip(region, vs, strict=True))
        s: Stmt = (
            Store(local, tuple(vs), Load(buf, orig))
            if direction == "in"
            else Store(buf, orig, Load(local, tuple(vs)))
        )
        if guarded:
            conds = [c for o, d in zip(orig, buf.shape, strict=True) for c in _in_bounds(o, d)]
            cond = conds[0]
            for c in conds[1:]:
                cond = BinOp(BinaryOp.AND, cond, c)
            s = If(cond, s)
        for v, (_, size, _) in reversed(list(zip(vs, region, strict=True))):
            s = For(v.name, Const(size), s)
        return s

    parts = [copy("in"), staged] + ([copy("out")] if write else [])
    return replace_loop(body, at, dataclasses.replace(f, body=Allocate(local, seq(*parts))))


def _in_bounds(e: Expr, dim) -> list[Expr]:
    hi = Const(dim) if isinstance(dim, int) else Var(dim)
    return [Cmp(CmpOp.GE, e, Const(0, INDEX)), Cmp(CmpOp.LT, e, hi)]


def compute_at(body: Stmt, producer: str, at: str) -> Stmt:
    """Move the nest ``producer`` into the next sibling nest at loop ``at`` (loop fusion).

    Restricted form: the two nests are adjacent in one sequence and perfectly nested down to
    ``at`` with equal extents, which are aligned one to one; the producer's remaining body runs
    first in ``at``'s body, nothing is recomputed. Legal when the consumer writes nothing the
    producer touches and, for each buffer the producer writes, every aligned loop is a bare
    component of its (single) index, the consumer reads it with the same aligned components, and
    each other component is a bare inner loop spanning the whole dim (so a consumer point finds
    its elements complete). Region inference (a consumer tile needing a larger producer tile,
    e.g. a padded conv input) is not implemented: such schedules raise ScheduleError.
    """
    what = f"compute_at {producer} at {at}"
    for node in walk(body):
        stmts = getattr(node, "stmts", ())
        for k, st in enumerate(stmts[:-1]):
            if isinstance(st, For) and st.var == producer:
                fused = _fuse_nests(st, stmts[k + 1], at, what)
                new = seq(*stmts[:k], fused, *stmts[k + 2 :])
                return _replace_node(body, node, new)
    raise ScheduleError(f"{what}: {producer} is not a nest followed by a sibling")


def _fuse_nests(prod: For, cons: Stmt, at: str, what: str) -> Stmt:
    cchain = [cons]
    while isinstance(cchain[-1], For) and cchain[-1].var != at:
        cchain.append(cchain[-1].body)
    if not isinstance(cchain[-1], For):
        raise ScheduleError(f"{what}: {at} is not perfectly nested in the next nest")
    pchain = [prod]
    while len(pchain) < len(cchain):
        if not isinstance(pchain[-1].body, For):
            raise ScheduleError(f"{what}: the producer is shallower than {at}")
        pchain.append(pchain[-1].body)
    if [p.extent for p in pchain] != [c.extent for c in cchain]:
        raise ScheduleError(f"{what}: the aligned loops' extents differ")
    aligned = {p.var: Var(c.var) for p, c in zip(pchain, cchain, strict=True)}
    rest = substitute(pchain[-1].body, aligned)
    inner = cchain[-1].body
    p_acc, c_acc = accesses(rest), accesses(inner)
    p_written = {a.buffer for a in p_acc if a.kind != "load"}
    c_written = {a.buffer for a in c_acc if a.kind != "load"}
    if c_written & {a.buffer for a in p_acc}:
        raise ScheduleError(f"{what}: the consumer writes a buffer the producer uses")
    if any(isinstance(n, If) for n in walk(rest)):
        raise ScheduleError(f"{what}: the producer is guarded; its coverage is unknown")
    extents = {f.var: f.extent for f in loops(rest)}
    for buf in p_written:
        indices = {a.index for a in p_acc if a.buffer == buf}
        if len(indices) != 1:
            raise ScheduleError(f"{what}: the producer accesses {buf.name} at different indices")
        (index,) = indices
        keep = {}
        for k, (comp, dim) in enumerate(zip(index, buf.shape, strict=True)):
            if isinstance(comp, Var) and comp in aligned.values():
                keep[k] = comp
            elif not (isinstance(comp, Var) and extents.get(comp.name) == Const(dim)):
                raise ScheduleError(f"{what}: the producer's index of {buf.name} is not a box")
        if len(set(keep.values())) != len(aligned) or len(set(index)) != len(index):
            raise ScheduleError(f"{what}: {buf.name} is not indexed by each aligned loop")
        if any(a.index[k] != v for a in c_acc if a.buffer == buf for k, v in keep.items()):
            raise ScheduleError(f"{what}: the consumer reads {buf.name} at other points")
    return _replace_node(cons, cchain[-1], dataclasses.replace(cchain[-1], body=seq(rest, inner)))


def _replace_node(root: Stmt, old: Stmt, new: Stmt) -> Stmt:
    if root is old:
        return new
    return rebuild(root, lambda c: _replace_node(c, old, new) if isinstance(c, Stmt) else c)
