"""Rule discovery, measured: counts and times per phase for N = 2 and 3 ops, and how many of
the hand-written rules the generated set rediscovers (and why it misses the others).

    python benchmarks/discover_bench.py [--max-ops 2,3] [--workers 2] [--iterations 6]

(``--max-ops ''`` skips discovery and checks the committed rules file.)

A hand-written egglog rule counts as *rediscovered* when its two sides, instantiated on
matrices whose shapes make its left-hand side well-typed, end in one e-class after the
generated rules of the largest N (with the shape analysis) run on them for ``--iterations``
passes. A rule with a permutation variable is tried on its rank-2 instance (the swap). A
rule is out of reach when it uses an op, a literal or a rank the generator does not
enumerate; the script prints which.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egglog import EGraph, String, Vec, eq, f64, i64, ruleset  # noqa: E402

from eqsat.egraph.encode import encode  # noqa: E402
from eqsat.egraph.lang import Tensor  # noqa: E402
from eqsat.egraph.onnx_io import import_onnx  # noqa: E402
from eqsat.egraph.saturate import saturate  # noqa: E402
from eqsat.egraph.shapes import dims, has_shape, shape_rules  # noqa: E402
from eqsat.egraph.term_text import calls, evaluate, parse  # noqa: E402
from eqsat.rules import schedule  # noqa: E402
from eqsat.rules.base import Rule  # noqa: E402
from eqsat.rules.discover import search  # noqa: E402
from eqsat.rules.generated import lift, rulefile  # noqa: E402
from eqsat.verify import pyrules, z3_ops  # noqa: E402
from eqsat.verify import rules as vr  # noqa: E402
from eqsat.verify.patterns import variables  # noqa: E402

IN_SET = {"add", "mul", "matmul", "transpose", "relu", "concat", "slice", "conv", "pad"}
IN_SET |= {"max_pool", "average_pool"}
SHAPES = [(2, 3), (3, 3), (3, 2), (3, 4), (4, 3), (2, 2)]


def ctors(text: str) -> set[str]:
    return {c.ctor for c in calls(parse(text))}


def out_of_reach(rule: Rule) -> str:
    text = rule.text().split(" if ")[0]
    extra = set().union(*(ctors(side) for side in text.split(" => ")))
    extra -= IN_SET | {"scalar", "ints", "none"}
    if extra:
        return "ops outside the op set: " + ", ".join(sorted(extra))
    if "Tensor.scalar(" in text:
        return "a literal constant (the generator has variables only)"
    perms = re.findall(r"transpose\([^V]*Vec\[i64\]\(([^)]*\)[^)]*)\)", text)
    if any(p.count("i64(") != 2 for p in perms):
        return "a permutation of rank > 2 (matrices only)"
    if rule.when:
        return "a side condition the generator does not express"
    return ""


def instance(rule: Rule) -> dict | None:
    """Matrix shapes for the rule's tensor variables that make both sides well-typed."""
    lhs, rhs = rule.text().split(" => ")
    rhs = rhs.split(" if ")[0]
    roles = variables(parse(lhs))
    names = sorted(v for v, r in roles.items() if r == "tensor")
    perms = {v: (1, 0) for v, r in roles.items() if r == "perm"}  # the rank-2 instance
    for combo in itertools.product(SHAPES, repeat=len(names)):
        env = {n: z3_ops.symbols(n, s) for n, s in zip(names, combo, strict=True)} | perms
        try:
            evaluate(parse(lhs), {**vr.NAMESPACE, **env})
            evaluate(parse(rhs), {**vr.NAMESPACE, **env})
        except Exception:  # noqa: BLE001 - ill-typed: try the next shapes
            continue
        return dict(zip(names, combo, strict=True))
    return None


def rediscovered(rule: Rule, shapes: dict, gen_rs, iterations: int) -> bool:
    lhs, rhs = rule.text().split(" => ")
    rhs = rhs.split(" if ")[0]
    ns = {"Tensor": Tensor, "Vec": Vec, "i64": i64, "f64": f64, "String": String}
    ns.update({v: Tensor.input(v) for v in shapes})
    perm = Vec[i64](i64(1), i64(0))
    ns.update({v: perm for v, r in variables(parse(lhs)).items() if r == "perm"})
    gl, gr = evaluate(parse(lhs), ns), evaluate(parse(rhs), ns)
    eg = EGraph()
    eg.register(gl, gr, *(has_shape(Tensor.input(v), dims(s)) for v, s in shapes.items()))
    for _ in range(iterations):
        eg.run(shape_rules().saturate())
        if eg.check_bool(eq(gl).to(gr)):
            return True
        if not eg.run(gen_rs).updated:
            break
    eg.run(shape_rules().saturate())
    return eg.check_bool(eq(gl).to(gr))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-ops", default="2,3")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=6)
    args = ap.parse_args()
    last = rulefile.read()["rules"]  # the committed file, unless this run discovers
    for n in (int(v) for v in args.max_ops.split(",") if v):
        t0 = time.perf_counter()
        entries, s = search.discover(vr.prove_unit, max_ops=n, workers=args.workers)
        wall = time.perf_counter() - t0
        print(f"\nN = {n}: {', '.join(s.settings['ops'])}  ({wall:.1f} s in all)")
        for label, count, t in s.table():
            print(f"  {label:40s} {count:>10s} {t:>9s}")
        last = entries
    rules = [r for e in last for r in rulefile.rules_of(e)]
    gen_rs = ruleset(*(r.egglog() for r in rules), name="bench-generated")
    hand = [
        r for f in schedule.DEFAULT_FAMILIES for r in schedule.FAMILIES[f]() if isinstance(r, Rule)
    ]
    found, missed, reach = [], [], []
    for r in hand:
        why = out_of_reach(r)
        if why:
            reach.append((r.name, why))
            continue
        shapes = instance(r)
        if shapes is None:
            reach.append((r.name, "no matrix instance"))
        elif rediscovered(r, shapes, gen_rs, args.iterations):
            found.append(r.name)
        else:
            missed.append(r.name)
    python_driven = schedule.rewrites(
        [r for f in schedule.DEFAULT_FAMILIES for r in schedule.FAMILIES[f]()]
    )
    print(
        f"\nhand-written egglog rules: {len(hand)} (and {len(python_driven)} Python-driven "
        "rules: N-ary or type-guarded, see below)"
    )
    print(f"  rediscovered: {len(found)}: {', '.join(found)}")
    print(f"  within the op set but not derived: {len(missed)}: {', '.join(missed)}")
    print(f"  out of reach of the op set: {len(reach)}")
    for name, why in reach:
        print(f"    {name:34s} {why}")
    lifted = lift.rules(last)
    print(
        f"\nhand-written Python-driven rules: {len(python_driven)}; the {len(lifted)} N-ary merges "
        "lifted from the generated rules that rewrite each one's witness (size 2):"
    )
    for r in python_driven:
        print(f"    {r.name:34s} {', '.join(covering(r, lifted)) or '-'}")


def covering(rule, lifted) -> list[str]:
    """The lifted merges that fire on ``rule``'s proof witness (none without one)."""
    build = pyrules.WITNESSES.get(rule.name)
    if build is None:
        return []
    sat = saturate(encode(import_onnx(build(2))), (), rewrites=lifted)
    return [r.name for r in lifted if sat.matches.get(r.name)]


if __name__ == "__main__":
    main()
