"""Fusion: which graph values become buffers, and which nodes each kernel computes.

Consumes the nodes lowering needs (topological order), their data-input uses and the op
table's kinds; produces a :class:`Plan`: one :class:`Group` per kernel (a root node, the
element-wise epilogue fused into its store, the value it stores) and the set of values that are
materialized. Everything else is *inlined*: its compute definition is called with the
consumer's index expressions (TVM's ``compute_inline``), so element-wise and view chains never
touch memory.

Rules (each for a reason):

1. REDUCTION and COMPLEX nodes are kernel roots: inlining one would recompute a reduction per
   consumer element. A root's further outputs that are used (LayerNormalization's Mean and
   InvStdDev) get a kernel each, after the root's own.
2. Epilogues: from each root, element-wise consumers are absorbed greedily in topological order
   (bias, per-channel scale, activation, residual add, a whole GELU) when their output has the
   root's shape (the epilogue runs at the root's store index, so it may not broadcast the root
   out) and their other inputs do not depend on the root (they are read at the same index, so
   they must exist before the kernel runs). The longest absorbed prefix with a *single* exit
   value is kept: every other value of the group is used only inside it, so only the exit needs
   a buffer.
3. An element-wise value not absorbed is inlined unless it is read at several sites: a graph
   output, two or more consumers, or a COMPLEX consumer (MatMul/Conv/pool read each input
   element many times, so inlining there recomputes it per reuse). Read sites are counted
   *through* views: a view is free to recompute (index arithmetic), so a Transpose read by two
   consumers makes its element-wise producer materialize, not the Transpose.
4. Views (INJECTIVE) are never materialized except as graph outputs.

Where extraction chose the kernels (``chosen``: the graph's ``GraphMeta.fusion``, written when
the e-graph held the fusion terms of :mod:`eqsat.rules.fusion`), rule 2 follows it for the
roots extraction could fuse (``decided``: the ops with a typed e-graph constructor; a root kept
as a generic node, e.g. ReduceMean, never had a fused alternative and keeps the greedy
epilogue): a root's epilogue is taken from the values extraction fused into it, and a root
extraction left unfused gets none (its element-wise consumers are inlined or materialized by
rule 3, as priced). The same conditions still apply (the fusion rule only builds epilogues that
meet them; a value the passes after extraction renamed or folded away is simply not fused), so
where extraction and greedy agree the plan is the same.

Kernels run in the topological order of their *exit* nodes, which is a valid order: a group's
external inputs come from nodes before its nodes, and a group whose exit is later than one of its
values would have two exits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from eqsat.egraph.ir import Node, TensorType
from eqsat.egraph.opdefs.base import Kind

MANY = 1 << 20  # read sites of a value a COMPLEX node consumes


@dataclass(frozen=True)
class Group:
    """One kernel: ``root`` computed, then ``epilogue`` applied at its store, into ``value``."""

    root: Node
    value: str
    epilogue: tuple[Node, ...] = ()

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.root, *self.epilogue)


@dataclass(frozen=True)
class Plan:
    groups: tuple[Group, ...]  # in execution order
    materialized: frozenset[str]  # values with a buffer (the groups' values)


def plan(
    nodes: Sequence[Node],
    uses: Mapping[str, list[Node]],
    outputs: Sequence[str],
    types: Mapping[str, TensorType],
    kind: Callable[[Node], Kind],
    chosen: Sequence[Sequence[str]] | None = None,
    decided: Callable[[Node], bool] = lambda n: True,
) -> Plan:
    """``uses``: value -> the needed nodes reading it as a data input (each node once).
    ``chosen``: the kernels extraction chose (``GraphMeta.fusion``: root value, epilogue
    values), followed instead of rule 2's greedy choice for the roots ``decided`` says
    extraction could fuse (see the module docstring)."""
    follow = None
    if chosen is not None:
        follow = {g[0]: frozenset(g[1:]) for g in chosen if g}
    pos = {id(n): p for p, n in enumerate(nodes)}
    producer = {o: n for n in nodes for o in n.outputs if o}
    is_root = {id(n): kind(n).starts_kernel for n in nodes}
    absorbed: dict[int, Node] = {}  # id(node) -> the root whose epilogue it joined
    groups: list[Group] = []
    outs = set(outputs)

    for root in nodes:
        if not is_root[id(root)]:
            continue
        allowed = None
        if follow is not None and decided(root):
            allowed = follow.get(root.outputs[0], frozenset())
        later = nodes[pos[id(root)] + 1 :]
        epi = _epilogue(root, later, uses, outs, types, kind, absorbed, allowed)
        for n in epi:
            absorbed[id(n)] = root
        exit_ = (epi[-1] if epi else root).outputs[0]
        groups.append(Group(root, exit_, tuple(epi)))
        for o in root.outputs[1:]:  # further outputs used (LayerNormalization's statistics)
            if o and (o in outs or uses.get(o)):
                groups.append(Group(root, o))

    # read sites, consumers before producers (reverse topological order)
    sites: dict[str, int] = {}
    materialized = {g.value for g in groups}
    for n in reversed(nodes):
        if is_root[id(n)] or id(n) in absorbed:
            continue
        for v in n.outputs:
            if not v:
                continue
            s = MANY if v in outs else 0
            for c in uses.get(v, ()):
                if is_root[id(c)]:
                    s += MANY if kind(c).rereads_inputs else 1
                elif kind(c) is Kind.INJECTIVE and id(c) not in absorbed:
                    s += sum(sites.get(o, 0) for o in c.outputs if o and o not in materialized)
                    s += sum(1 for o in c.outputs if o in materialized)
                else:
                    s += 1
            sites[v] = s
            if v in outs or (kind(n) is not Kind.INJECTIVE and s >= 2):
                materialized.add(v)
                groups.append(Group(n, v))
    groups.sort(key=lambda g: pos[id(producer[g.value])])
    return Plan(tuple(groups), frozenset(materialized))


def _epilogue(root, later, uses, outs, types, kind, absorbed, allowed=None) -> list[Node]:
    """The longest single-exit run of element-wise consumers to fuse into ``root``'s store
    (only those whose value is in ``allowed``, when given)."""
    out = root.outputs[0]
    shape = types[out].shape
    group_values = {out}
    # values depending on the root (inside or outside the group): all its outputs, so that a
    # consumer of a further output (stored by its own kernel, later) is never absorbed
    tainted = {o for o in root.outputs if o}
    taken: list[Node] = []
    for n in later:
        ins = [i for i in n.inputs if i]
        if not any(i in tainted for i in ins):
            continue
        ok = (
            kind(n) is Kind.ELEMENTWISE
            and id(n) not in absorbed
            and (allowed is None or n.outputs[0] in allowed)
            and len([o for o in n.outputs if o]) == 1
            and types[n.outputs[0]].shape == shape
            and any(i in group_values for i in ins)
            and all(i in group_values or i not in tainted for i in ins)
        )
        if ok:
            taken.append(n)
            group_values.add(n.outputs[0])
        tainted.update(o for o in n.outputs if o)
    # the longest prefix whose values other than one are used only inside it
    for cut in range(len(taken), 0, -1):
        members = {id(root)} | {id(n) for n in taken[:cut]}
        values = [out, *(n.outputs[0] for n in taken[:cut])]
        exits = [
            v for v in values if v in outs or any(id(c) not in members for c in uses.get(v, ()))
        ]
        if exits == [values[-1]]:
            return taken[:cut]
    return []
