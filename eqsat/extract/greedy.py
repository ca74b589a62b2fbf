"""Greedy DAG extraction over a serialized e-graph.

Consumes a :class:`~eqsat.egraph.serialized.SerializedEGraph`, root e-classes and a cost for
each e-node; produces a :class:`Choice`: one e-node per e-class reachable from the roots, with
no cycle, and the DAG cost of the selection (every e-class counted once however many parents
share it).

The cost of choosing e-node ``n`` for its class is ``cost(n)`` plus the cost of the *union* of
the e-classes below its children (shared subterms once): the "greedy DAG" of extraction-gym.
extraction-gym computes it as a fixpoint that revisits classes until no cost improves; a class
may then keep a choice computed from a child's *older* set, which can close a cycle. Here the
same equations are solved in the order of Knuth's generalisation of Dijkstra: an e-node becomes
a candidate once all its child classes are final, and the cheapest candidate overall finalises
its class. Because a node's cost is at least each of its children's (costs are >= 0 and the
union contains each child's set), no later candidate could have beaten a finalised class, so
every class's set is computed exactly once, from final children, and the finalisation order is a
topological order of the selection: acyclic by construction.

Sets of classes are Python ints used as bitsets (a union is one ``|``); the cost of a union is
the larger child's total plus the weights of the classes the other children add, summed with
numpy over the few extra bits.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from eqsat.egraph.serialized import SerializedEGraph


class ExtractionError(RuntimeError):
    """No finite-cost, acyclic term exists for a root."""


@dataclass
class Choice:
    choice: dict[str, str]  # class id -> chosen node id (classes reachable from the roots)
    cost: float  # DAG cost of everything the roots need
    order: list[str]  # classes in finalisation order (children before parents)


def reachable(eg: SerializedEGraph, roots: Iterable[str]) -> list[str]:
    """Classes reachable from ``roots`` through any (unsubsumed) e-node, roots first."""
    seen: dict[str, None] = {}
    stack = list(roots)
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen[c] = None
        for nid in eg.classes.get(c, ()):
            if not eg.nodes[nid].subsumed:
                stack.extend(eg.child_classes(nid))
    return list(seen)


def _bits_weight(bits: int, weights: np.ndarray) -> float:
    if not bits:
        return 0.0
    if bits.bit_count() <= 16:
        total = 0.0
        while bits:
            low = bits & -bits
            total += weights[low.bit_length() - 1]
            bits ^= low
        return float(total)
    raw = np.frombuffer(bits.to_bytes((bits.bit_length() + 7) // 8, "little"), np.uint8)
    return float(weights[np.flatnonzero(np.unpackbits(raw, bitorder="little"))].sum())


def greedy_dag(eg: SerializedEGraph, roots: Iterable[str], cost: Callable[[str], float]) -> Choice:
    """Choose one e-node per reachable class minimising DAG cost greedily (see module doc).

    ``cost(node_id)`` is called once per candidate e-node, only after all of its child classes
    are final (so a caller may look up what it decided for them); ``math.inf`` excludes a node.
    """
    roots = list(roots)
    classes = reachable(eg, roots)
    index = {c: i for i, c in enumerate(classes)}
    weights = np.zeros(len(classes))
    pending: dict[str, int] = {}
    parents: dict[str, list[str]] = {}
    heap: list[tuple[float, int, str]] = []
    union: dict[str, int] = {}  # candidate node -> bitset of the classes below it
    owns: dict[str, float] = {}  # candidate node -> its own cost
    sets: dict[str, int] = {}  # final class -> bitset of itself and everything below
    totals: dict[str, float] = {}
    choice: dict[str, str] = {}
    order: list[str] = []
    seq = 0

    def offer(nid: str) -> None:
        nonlocal seq
        own = cost(nid)
        if math.isinf(own):
            return
        kids = sorted(set(eg.child_classes(nid)), key=lambda k: -totals[k])
        bits = sets[kids[0]] if kids else 0
        total = own + (totals[kids[0]] if kids else 0.0)
        extra = 0
        for k in kids[1:]:
            extra |= sets[k]
        extra &= ~bits
        total += _bits_weight(extra, weights)
        union[nid] = bits | extra
        owns[nid] = own
        heapq.heappush(heap, (total, seq, nid))
        seq += 1

    for c in classes:
        for nid in eg.classes.get(c, ()):
            if eg.nodes[nid].subsumed:
                continue
            kids = set(eg.child_classes(nid))
            if c in kids:
                continue  # a node that needs its own class can never be in an acyclic term
            pending[nid] = len(kids)
            for k in kids:
                parents.setdefault(k, []).append(nid)
    for nid, n in list(pending.items()):
        if n == 0:
            offer(nid)
    while heap:
        total, _, nid = heapq.heappop(heap)
        c = eg.nodes[nid].eclass
        if c in choice:
            union.pop(nid)
            continue
        choice[c] = nid
        order.append(c)
        totals[c] = total
        sets[c] = union.pop(nid) | (1 << index[c])
        weights[index[c]] = owns[nid]
        for p in parents.get(c, ()):
            pending[p] -= 1
            if pending[p] == 0 and eg.nodes[p].eclass not in choice:
                offer(p)
    missing = [c for c in roots if c not in choice]
    if missing:
        raise ExtractionError(f"no finite-cost acyclic term for e-class(es) {missing[:5]}")
    everything = 0
    for c in roots:
        everything |= sets[c]
    used = set(_classes_of(everything, classes))
    return Choice(
        {c: n for c, n in choice.items() if c in used},
        _bits_weight(everything, weights),
        [c for c in order if c in used],
    )


def _classes_of(bits: int, classes: list[str]) -> Iterable[str]:
    raw = np.frombuffer(bits.to_bytes((bits.bit_length() + 7) // 8 or 1, "little"), np.uint8)
    for i in np.flatnonzero(np.unpackbits(raw, bitorder="little")):
        yield classes[int(i)]
