"""Extraction on Tensat's saturated e-graphs (extraction-gym JSON): DAG cost and time.

    .venv/bin/python benchmarks/extract_gym.py [DIR] [--ilp-time S] [--local-time S]
    (default DIR: ../shared/...; ILP 30 s, local search 5 s)

Each file holds a peer's e-graph in the egraph-serialize format (nodes with ``op``, ``cost``,
``eclass``, ``children``; ``root_eclasses``). Every eqsat extractor runs on it with the file's
own per-node costs; reported: the DAG cost of the chosen plan (each chosen e-class counted
once), whether the plan is acyclic, and the time — for the greedy DAG extractor, for the ILP
(started from greedy's plan, time-limited; with its status, lower bound and optimality gap) and
for the local search (greedy then :mod:`eqsat.extract.local`, its time including greedy's).
The cost and the acyclicity are checked here, apart from the extractors, on the file's graph.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from eqsat.egraph.serialized import ENode, SerializedEGraph
from eqsat.extract.greedy import greedy_dag
from eqsat.extract.ilp import ilp_dag
from eqsat.extract.local import local_search

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared/benchmarks/extraction-gym-tensat"


def load(path: Path) -> tuple[SerializedEGraph, list[str], dict[str, float]]:
    data = json.loads(path.read_text())
    nodes, classes, costs = {}, {}, {}
    for nid, n in data["nodes"].items():
        nodes[nid] = ENode(n["op"], tuple(n["children"]), str(n["eclass"]))
        classes.setdefault(str(n["eclass"]), []).append(nid)
        costs[nid] = float(n.get("cost", 1.0))
    eg = SerializedEGraph(nodes, classes, {c: "Tensor" for c in classes})
    return eg, [str(r) for r in data["root_eclasses"]], costs


def dag_cost(eg: SerializedEGraph, roots: list[str], choice: dict[str, str], costs) -> float:
    seen, stack, total = set(), list(roots), 0.0
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        nid = choice[c]
        total += costs[nid]
        stack.extend(eg.child_classes(nid))
    return total


def acyclic(eg: SerializedEGraph, roots: list[str], choice: dict[str, str]) -> bool:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(c: str) -> bool:
        stack = [(c, iter(eg.child_classes(choice[c])))]
        state[c] = 1
        while stack:
            cls, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[cls] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return False
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(eg.child_classes(choice[nxt]))))
        return True

    return all(visit(r) for r in roots if r not in state)


def main(argv: list[str]) -> int:
    limits = {"--ilp-time": 30.0, "--local-time": 5.0}
    for flag in limits:
        if flag in argv:
            k = argv.index(flag)
            try:
                limits[flag] = float(argv[k + 1])
            except (IndexError, ValueError):
                print(f"{flag} needs a number of seconds", file=sys.stderr)
                return 2
            argv = argv[:k] + argv[k + 2 :]
    ilp_time, local_time = limits["--ilp-time"], limits["--local-time"]
    folder = Path(argv[0]) if argv else DEFAULT_DIR
    files = sorted(folder.glob("*.json"))
    if not files:
        print(f"no .json e-graphs in {folder}", file=sys.stderr)
        return 2
    print(
        f"{'e-graph':22s} {'e-nodes':>8s} {'classes':>8s} {'extractor':>10s} "
        f"{'DAG cost':>10s} {'acyclic':>8s} {'time s':>8s}  ILP status (bound, gap)"
    )
    print(f"loadavg {Path('/proc/loadavg').read_text().strip()}")
    for f in files:
        eg, roots, costs = load(f)
        t0 = time.perf_counter()
        chosen = greedy_dag(eg, roots, lambda nid, costs=costs: costs[nid])
        dt = time.perf_counter() - t0
        cost = dag_cost(eg, roots, chosen.choice, costs)
        ok = acyclic(eg, roots, chosen.choice)
        print(
            f"{f.stem:22s} {len(eg.nodes):8d} {len(eg.classes):8d} {'greedy-dag':>10s} "
            f"{cost:10.4f} {str(ok):>8s} {dt:8.3f}"
        )
        t0 = time.perf_counter()
        res = ilp_dag(eg, roots, lambda nid, c=costs: c[nid], ilp_time, incumbent=chosen)
        dt = time.perf_counter() - t0
        plan = res.choice.choice if res.choice else chosen.choice
        cost = dag_cost(eg, roots, plan, costs)
        ok = acyclic(eg, roots, plan)
        bound = f"{res.bound:.4f}" if res.bound is not None else "-"
        gap = f"{100 * res.gap:.2f}%" if res.gap is not None else "-"
        print(
            f"{'':22s} {'':8s} {'':8s} {'ilp':>10s} {cost:10.4f} {str(ok):>8s} {dt:8.3f}  "
            f"{res.status} ({bound}, {gap})"
        )
        t0 = time.perf_counter()
        start = greedy_dag(eg, roots, lambda nid, costs=costs: costs[nid])
        left = local_time - (time.perf_counter() - t0)
        found = local_search(eg, roots, costs.__getitem__, start, time_limit=max(0.0, left))
        dt = time.perf_counter() - t0
        cost = dag_cost(eg, roots, found.choice.choice, costs)
        ok = acyclic(eg, roots, found.choice.choice)
        print(
            f"{'':22s} {'':8s} {'':8s} {'local':>10s} {cost:10.4f} {str(ok):>8s} {dt:8.3f}  "
            f"{found.moves} moves of {found.tries} tried, {found.rounds} rounds"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
