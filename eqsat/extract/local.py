"""Local search over a DAG extraction plan: greedy's plan, improved by exact incremental moves.

Consumes a :class:`~eqsat.egraph.serialized.SerializedEGraph`, root e-classes, a cost per
e-node and a starting :class:`~eqsat.extract.greedy.Choice` (greedy_dag's); produces a
:class:`LocalResult` whose choice is acyclic, covers the roots, and costs no more than the start
(DAG cost: each chosen class once). The node semantics are greedy_dag's and the ILP's, and the
candidate nodes are the ILP's shrunk model (:func:`eqsat.extract.ilp.shrink`, without a cost
bound: on BERT bounding by the start's cost took 0.7 s more to shrink at load 10 than the
12,000 more candidates cost the search, 0.3 s).

Why: greedy picks each class's node by the cost of its own sub-DAG, so it never takes a node
whose price pays off only when several users share it (Tensat's merged MatMuls and Convs: one
``split(merged)`` per user is dearer alone, cheaper once every user takes its split). The ILP
finds those, but slowly on large e-graphs with cycles: measured on Tensat's e-graphs (this
2-core host, load 5-10; ``benchmarks/extract_gym.py``), HiGHS reached BERT 0.8115, BERT-acyclic
0.8091 and ResNet-50 4.3869 only after 60 s (greedy: 0.8247, 0.8270, 4.3969); greedy and this
search reach 0.7561, 0.7583 and 4.3858 in 0.3-3.6 s (ResNet-50-acyclic: 4.4160, the ILP's
proven optimum; VGG: greedy's 4.8508, as the ILP in 60 s). The ILP started from the search's
plan improves none of them in 10 s. On the examples' e-graphs the search reaches the ILP's
proven optimum (``benchmarks/egraphs``, egglog's static costs: all 7; NAS-RNN under the
compiler's costs: 2006.0, greedy 3341.3). Tried and dropped: random kicks of 3 classes, each
followed by one-class moves, kept when cheaper (10 s on BERT, ResNet-50, VGG: nothing).

The state is a full assignment (a node for every class of the model; the classes off the plan
take, at the start of each round, their cheapest addition to the plan as it stands, by Knuth's
Dijkstra with the plan's classes free, so that a move can pull in a class and find it decided,
acyclic and reusing what the plan already computes: NAS-RNN stopped at 2051.3 with trees apart
from the plan, which re-bought a merged MatMul's slices), the reference count of each class
(roots count once, each chosen node of an active class once per distinct child class) and a
topological rank of the active classes. A move gives one class another node; its cost change
is exact and touches only what changes: classes whose count rises from zero join (their cost
and, recursively, their chosen children's counts), classes whose count falls to zero leave. A
move closes a cycle iff the class is reachable from the new node; the walk to check it skips an
active class ranked below the moved class (it cannot reach it: ranks are a topological order of
the acyclic active graph).

Moves, in rounds until a round improves nothing (or ``max_rounds``/``time_limit``):

* one class: every other candidate node of every active class with more than one;
* shared child: for each class ``M``, every active class with a node that has ``M`` as a child
  takes its cheapest such node at once, then members are put back one at a time while that
  lowers the cost; kept if the whole is cheaper. This is the merge that one-class moves cannot
  reach (each split alone is dearer);
* unshared child: for each active class ``M``, every active class whose node has ``M`` as a
  child takes its best node without it, members put back the same way: the reverse of a merge.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from eqsat.egraph.serialized import SerializedEGraph
from eqsat.extract.greedy import Choice
from eqsat.extract.ilp import shrink

# A move must lower the cost by more than this share of the start's cost (and 1e-12): the total
# is kept as a running sum of move deltas, and two plans of equal cost summed in different orders
# differ by float noise. With 1e-12 absolute, NAS-RNN's search (total ~2000) went on to its time
# limit, 10 s, trading such plans back and forth after 0.3 s. Extraction's tie-break (1e-6 of a
# rewritten node's cost) is above this for any node costing over 1e-4 of the plan.
EPS = 1e-10


@dataclass
class LocalResult:
    choice: Choice  # never dearer than the start
    start_cost: float
    moves: int  # moves kept
    tries: int  # moves evaluated
    rounds: int
    time: float  # seconds, shrinking included


def local_search(
    eg: SerializedEGraph,
    roots: Iterable[str],
    cost: Callable[[str], float],
    start: Choice,
    max_rounds: int = 50,
    time_limit: float | None = None,
) -> LocalResult:
    """Improve ``start`` by exact single-class, shared-child and unshared-child moves (see
    module doc).
    ``time_limit`` (seconds, None: none) stops between moves; ``max_rounds`` bounds the rounds."""
    t0 = time.perf_counter()
    deadline = math.inf if time_limit is None else t0 + time_limit
    roots = list(dict.fromkeys(roots))
    m = shrink(eg, roots, cost, None)  # all candidates: bounding by the start costs more (BERT:
    # +0.7 s to shrink at load 10) than the 12,000 more candidates cost the search (+0.3 s)
    s = _State(eg, m, roots, start)
    rounds = 0
    while rounds < max_rounds and time.perf_counter() < deadline:
        rounds += 1
        before = s.total
        if rounds > 1:  # the first round's picks are __init__'s
            s.repick()
        s.single_moves(deadline)
        s.shared_moves(deadline)
        s.unshared_moves(deadline)
        if s.total >= before - s.eps:
            break
    choice = s.choice()
    if choice.cost > start.cost:  # cannot happen (moves only lower it); keep the contract
        choice = start
    return LocalResult(choice, start.cost, s.kept, s.tries, rounds, time.perf_counter() - t0)


class _State:
    """The assignment, reference counts, active total and ranks over integer ids."""

    def __init__(self, eg: SerializedEGraph, m, roots: list[str], start: Choice) -> None:
        self.cls = m.classes
        ci = {c: i for i, c in enumerate(self.cls)}
        self.nodes = [n for c in self.cls for n in m.cands[c]]
        ni = {n: i for i, n in enumerate(self.nodes)}
        self.kids = [tuple(ci[d] for d in m.kids[n]) for n in self.nodes]
        self.cost = [m.costs[n] for n in self.nodes]
        self.owner = [ci[m.eclass[n]] for n in self.nodes]
        self.cands = [[ni[n] for n in m.cands[c]] for c in self.cls]
        self.roots = [ci[r] for r in roots]
        self.users: list[list[int]] = [[] for _ in self.cls]
        for n, ks in enumerate(self.kids):
            for d in ks:
                self.users[d].append(n)
        self.pick = [-1] * len(self.cls)  # the start's plan; the other classes by repick()
        for c, n in start.choice.items():  # a node shrinking dropped: its cheapest dominator
            if c not in ci:
                continue  # only the start's dominated node reached it: shrinking dropped it
            if n in ni:
                self.pick[ci[c]] = ni[n]
            else:  # a sibling that costs no more with a subset of its child classes
                have = {ci[d] for d in eg.child_classes(n) if d in ci}
                self.pick[ci[c]] = min(
                    (k for k in self.cands[ci[c]] if set(self.kids[k]) <= have),
                    key=self.cost.__getitem__,
                )
        self.ref = [0] * len(self.cls)
        self.total = 0.0
        self.kept = self.tries = 0
        self._join(self.roots, {})
        for d, v in self._last.items():
            self.ref[d] += v
        self.total = self._gain
        self.eps = EPS * abs(self.total) + 1e-12
        self._rerank()
        self.repick()

    def _tree_pick(self, active: list[int]) -> list[int]:
        """An acyclic assignment (Knuth's Dijkstra over sums): the ``active`` classes keep
        their node and count as free, the others take their cheapest addition to the active
        plan (a tree over what is not there yet)."""
        least = [math.inf] * len(self.cls)
        pick = [-1] * len(self.cls)
        pending = [len(k) for k in self.kids]
        heap = [(self.cost[n], n) for n, ks in enumerate(self.kids) if not ks]
        heapq.heapify(heap)

        def final(c: int, n: int, v: float) -> None:
            pick[c], least[c] = n, v
            for p in self.users[c]:
                pending[p] -= 1
                if pending[p] == 0 and pick[self.owner[p]] < 0:
                    heapq.heappush(heap, (self.cost[p] + sum(least[d] for d in self.kids[p]), p))

        for c in active:
            final(c, self.pick[c], 0.0)
        while heap:
            v, n = heapq.heappop(heap)
            if pick[self.owner[n]] < 0:
                final(self.owner[n], n, v)
        return pick

    def repick(self) -> None:
        """Give the inactive classes their cheapest addition to the plan as it now stands, so
        that a move pulling them in reuses what the plan computes (the start's picks are trees
        apart from any plan)."""
        self.pick = self._tree_pick(self.order)

    def _join(self, classes: Iterable[int], dr: dict[int, int]) -> None:
        """Count one more reference to each of ``classes`` in ``dr``; those that join add
        their cost (to ``_gain``) and reference their chosen node's children in turn."""
        gain = 0.0
        stack = list(classes)
        ref, pick, kids, cost = self.ref, self.pick, self.kids, self.cost
        while stack:
            d = stack.pop()
            was = ref[d] + dr.get(d, 0)
            dr[d] = dr.get(d, 0) + 1
            if was == 0:
                gain += cost[pick[d]]
                stack.extend(kids[pick[d]])
        self._gain, self._last = gain, dr

    def _leave(self, classes: Iterable[int], dr: dict[int, int]) -> float:
        """Count one reference fewer to each of ``classes``; the cost of those that leave."""
        loss = 0.0
        stack = list(classes)
        ref, pick, kids, cost = self.ref, self.pick, self.kids, self.cost
        while stack:
            d = stack.pop()
            dr[d] = dr.get(d, 0) - 1
            if ref[d] + dr[d] == 0:
                loss += cost[pick[d]]
                stack.extend(kids[pick[d]])
        return loss

    def _closes_cycle(self, c: int, n: int) -> bool:
        """Whether class ``c`` is reachable from node ``n``'s children (``pick[c]`` = n). The
        ranks prune the walk unless moves since the last ranking made them stale."""
        seen: set[int] = set()
        stack = list(self.kids[n])
        ref, rank = self.ref, self.rank
        limit = -1 if self.stale else rank[c]
        while stack:
            d = stack.pop()
            if d == c:
                return True
            if d in seen or (ref[d] > 0 and rank[d] < limit):
                continue
            seen.add(d)
            stack.extend(self.kids[self.pick[d]])
        return False

    def delta(self, c: int, n: int) -> tuple[float, dict[int, int]] | None:
        """The exact cost change of choosing ``n`` for active class ``c`` and its count changes,
        or None if that closes a cycle."""
        self.tries += 1
        if self._closes_cycle(c, n):
            return None
        old = self.pick[c]
        self._join(self.kids[n], {})
        gain, dr = self._gain, self._last
        loss = self._leave(self.kids[old], dr)  # old's classes never reach c: acyclic
        return self.cost[n] - self.cost[old] + gain - loss, dr

    def apply(self, c: int, n: int, change: tuple[float, dict[int, int]], rank=True) -> None:
        """Make the move; ``rank=False`` leaves the ranks stale (a group re-ranks once at its
        end: ranking after each of its moves took 88 % of NAS-RNN's search, 10 s)."""
        d, dr = change
        for k, v in dr.items():
            self.ref[k] += v
        self.pick[c] = n
        self.total += d
        if rank:
            self._rerank()
        else:
            self.stale = True

    def _rerank(self) -> None:
        """Ranks of the active classes, children below parents (depth-first post-order)."""
        self.stale = False
        rank = self.rank = [-1] * len(self.cls)
        order: list[int] = []
        self.order = order
        for r in self.roots:
            if rank[r] >= 0:
                continue
            rank[r] = -2  # on the walk
            stack = [(r, iter(self.kids[self.pick[r]]))]
            while stack:
                c, it = stack[-1]
                d = next(it, None)
                if d is None:
                    stack.pop()
                    rank[c] = len(order)
                    order.append(c)
                elif rank[d] == -1:
                    rank[d] = -2
                    stack.append((d, iter(self.kids[self.pick[d]])))

    def single_moves(self, deadline: float) -> None:
        for c in range(len(self.cls)):
            if len(self.cands[c]) < 2 or self.ref[c] == 0:
                continue
            if time.perf_counter() > deadline:
                return
            for n in self.cands[c]:
                if n == self.pick[c]:
                    continue
                change = self.delta(c, n)
                if change is not None and change[0] < -self.eps:
                    self.apply(c, n, change)
                    self.kept += 1

    def shared_moves(self, deadline: float) -> None:
        """Every active class with a node that has ``shared`` as a child takes its cheapest
        such node, for each class ``shared`` (the merge)."""
        for shared in range(len(self.cls)):
            if time.perf_counter() > deadline:
                return
            group: dict[int, int] = {}
            for n in self.users[shared]:
                c = self.owner[n]
                if self.ref[c] > 0 and self.pick[c] != n:
                    if c not in group or self.cost[n] < self.cost[group[c]]:
                        group[c] = n
            if len(group) > 1:  # one member is a single-class move
                self._group(group, lambda c, group=group: self._change(c, [group[c]]))

    def unshared_moves(self, deadline: float) -> None:
        """Every active class whose node has active ``shared`` as a child takes its best node
        without it, for each class ``shared``: the reverse of a merge, which frees ``shared``
        only once all its users leave (NAS-RNN under the compiler's costs: the activations of
        the merged gates' sum, sliced, against each gate's activation of its own slices)."""
        for shared in range(len(self.cls)):
            if self.ref[shared] == 0:
                continue
            if time.perf_counter() > deadline:
                return
            group = {self.owner[n]: n for n in self.users[shared] if self.pick[self.owner[n]] == n}
            group = {c: n for c, n in group.items() if self.ref[c] > 0}
            if len(group) > 1:
                self._group(group, lambda c, d=shared: self._change(c, self._without(c, d)))

    def _without(self, c: int, shared: int) -> list[int]:
        return [n for n in self.cands[c] if shared not in self.kids[n]]

    def _change(self, c: int, nodes: list[int]) -> tuple[int, tuple] | None:
        """The node of ``nodes`` whose move is cheapest now, and its change (None: none)."""
        best = None
        for n in nodes:
            change = self.delta(c, n)
            if change is not None and (best is None or change[0] < best[1][0]):
                best = n, change
        return best

    def _group(self, group: dict[int, int], choose) -> None:
        """Move every class of ``group`` (``choose(c)``: its node and change), then put members
        back one at a time while that lowers the cost; keep the whole if it is cheaper."""
        before = self.total
        snapshot = self.pick[:], self.ref[:], self.rank, self.order
        saved = {}
        for c in group:
            if self.ref[c] == 0:
                continue  # left when an earlier member changed
            move = choose(c)
            if move is not None:
                saved[c] = snapshot[0][c]
                self.apply(c, move[0], move[1], rank=False)
        improved = True
        while improved and len(saved) > 1:  # put members back while that helps
            improved = False
            for c in list(saved):
                change = self.delta(c, saved[c]) if self.ref[c] > 0 else None
                if change is not None and change[0] < -self.eps:
                    self.apply(c, saved.pop(c), change, rank=False)
                    improved = True
        if self.total < before - self.eps:
            self.kept += 1
            self._rerank()
            return
        self.pick, self.ref, self.rank, self.order = snapshot
        self.total, self.stale = before, False

    def choice(self) -> Choice:
        plan = {self.cls[c]: self.nodes[self.pick[c]] for c in self.order}
        return Choice(plan, sum(self.cost[self.pick[c]] for c in self.order),
                      [self.cls[c] for c in self.order])  # fmt: skip
