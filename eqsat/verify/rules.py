"""Rule verification with Z3, and the proof ledger.

Consumes :class:`~eqsat.rules.base.Rule` records (egglog rules: their printed left- and
right-hand sides); produces a :class:`Verdict` per rule and the ledger ``ledger.json`` next to
this module: one entry per rule name with a hash of the rule's printed form, the result, the
scope it holds in, the semantics and solver versions.

How a rule is checked (bounded, TASO's first method): the printed form of a side
(``Tensor.add(Tensor.mul(a, b), c)``) is parsed (:mod:`eqsat.egraph.term_text`) and folded with
``Tensor`` bound to the Z3 semantics of :mod:`.z3_ops` and each pattern variable bound to a
tensor of fresh real symbols,
for every shape instance the generator draws: ranks 1-3 (or the rank a literal permutation
fixes), every dimension in 1..3, operands equal, broadcast (size-1 or missing axes) or chained
(matmul); permutation variables take every permutation of the rank, slice-bound variables
literal bounds, axes and steps. An instance whose left-hand side is ill-typed is skipped (the
rule cannot match it); for every other one Z3 must prove ``lhs = rhs`` element by element for
all values of the symbols. One refutation refutes the rule (with the instance and a model).

Python-driven rules (:class:`~eqsat.rules.base.PyRule`) are proved on witnesses instead, by
:mod:`.pyrules`; :func:`verify` picks the method. What the provers share (the verdict record,
reading a side's variables) lives in :mod:`.ledger` and :mod:`.patterns`, so that neither
imports this module back.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import z3

from eqsat.egraph.lang import BY_CTOR
from eqsat.egraph.opdefs.base import ShapeError
from eqsat.egraph.term_text import evaluate, parse
from eqsat.verify import ledger, z3_ops
from eqsat.verify.ledger import Verdict, load_ledger, rule_hash
from eqsat.verify.patterns import LITERALS, perm_ranks, variables

MAX_INSTANCES = 200  # shape instances per rule (drawn deterministically)
DIMS = (1, 2, 3)


# ---------------------------------------------------------------------------- evaluation


class _Sym:
    """``Tensor``'s constructors over Z3 tensors (see :mod:`.z3_ops`)."""

    @staticmethod
    def scalar(v, dtype):
        return z3_ops.real(float(v))

    @staticmethod
    def ints(values):
        return np.array(values, dtype=np.int64)

    @staticmethod
    def none():
        return None


def _make_ctor(spec):
    def ctor(*args):
        if spec.inputs == "*":
            inputs, rest = list(args[0]), args[1:]
        else:
            k = len(spec.inputs)
            inputs, rest = list(args[:k]), args[k:]
        attrs = {
            a.name: (list(v) if isinstance(v, tuple) else v)
            for a, v in zip(spec.attrs, rest, strict=True)
        }
        while inputs and inputs[-1] is None:
            inputs.pop()
        return z3_ops.run(spec.op, attrs, inputs)[0]

    return staticmethod(ctor)


for _name, _spec in BY_CTOR.items():
    setattr(_Sym, _name, _make_ctor(_spec))


NAMESPACE = {**LITERALS, "Tensor": _Sym}


def _ranks(side) -> list[int]:
    """Ranks to try: those of the literal permutations in the rule, else 1..3."""
    return sorted(set(perm_ranks(side))) or [1, 2, 3]


def instances(rule, seed: int = 0, limit: int = MAX_INSTANCES):
    """Environments (variable -> value) for the rule's shape instances, deterministic."""
    text = rule.text().split(" => ")[0]
    side = parse(text)
    roles = variables(side)
    tensors = sorted(v for v, r in roles.items() if r == "tensor")
    matmul = "matmul" in text
    rng = np.random.default_rng(seed)
    envs = []
    for rank in _ranks(side):
        if matmul:
            rank = max(rank, 2)
        for base in itertools.product(DIMS, repeat=rank):
            for variant in ("equal", "broadcast", "chain"):
                if variant == "chain" and not matmul:
                    continue
                shapes = _shapes(tensors, list(base), variant, rng)
                perms = (
                    list(itertools.permutations(range(rank)))
                    if "perm" in roles.values()
                    else [None]
                )
                for perm in perms:
                    envs.append((shapes, perm, rank))
    rng.shuffle(envs)
    # always keep the most informative instance first: distinct dims, no broadcasting
    envs.sort(key=lambda e: -len(set(d for s in e[0].values() for d in s)))
    out = []
    for shapes, perm, _ in envs[:limit]:
        env: dict[str, object] = {v: z3_ops.symbols(v, s) for v, s in shapes.items()}
        first = shapes[tensors[0]] if tensors else [2]
        axis = int(rng.integers(0, len(first)))
        d = first[axis]
        bounds = {  # one axis of the first tensor, any bounds, steps 1, 2 and -1
            "slice1": int(rng.integers(-d, d + 1)),
            "slice2": int(rng.integers(-d, d + 2)),
            "slice3": axis,
            "slice4": int(rng.choice([1, 2, -1])),
        }
        for v, role in roles.items():
            if role == "perm":
                env[v] = perm
            elif role.startswith("slice"):
                env[v] = np.array([bounds[role]], dtype=np.int64)
        out.append(env)
    return out


def _shapes(names, base, variant, rng) -> dict[str, list[int]]:
    out = {}
    for k, n in enumerate(names):
        if variant == "equal" or k == 0:
            out[n] = list(base)
        elif variant == "broadcast":
            s = [d if rng.random() < 0.6 else 1 for d in base]
            out[n] = s[int(rng.integers(0, len(s))) :] if rng.random() < 0.3 else s
        else:  # chain: a [.., m, k], b [.., k, n], c [.., n, p]
            dims = [int(x) for x in rng.choice(DIMS, size=len(names) + 1)]
            out[n] = [*base[:-2], dims[k], dims[k + 1]]
    if variant == "chain" and names:
        dims = [int(x) for x in rng.choice(DIMS, size=len(names) + 1)]
        out = {n: [*base[:-2], dims[k], dims[k + 1]] for k, n in enumerate(names)}
    return out


def verify_rule(rule, limit: int = MAX_INSTANCES) -> Verdict:
    t0 = time.perf_counter()
    lhs_side, rhs_side = parse(str(rule.lhs)), parse(str(rule.rhs))
    checked = 0
    for env in instances(rule, limit=limit):
        try:
            lhs = evaluate(lhs_side, {**NAMESPACE, **env})
        except (ShapeError, ValueError, IndexError, TypeError):
            continue  # ill-typed: the rule cannot match this instance
        except z3_ops.Unsupported as e:
            return Verdict(rule.name, "unsupported", "", checked, time.perf_counter() - t0, str(e))
        try:
            rhs = evaluate(rhs_side, {**NAMESPACE, **env})
        except (ShapeError, ValueError, IndexError, TypeError) as e:
            return Verdict(
                rule.name,
                "refuted",
                _scope(checked),
                checked,
                time.perf_counter() - t0,
                f"rhs ill-typed where lhs is not: {e}",
            )
        lhs, rhs = np.asarray(lhs, dtype=object), np.asarray(rhs, dtype=object)
        verdict, detail = z3_ops.equal(lhs, rhs)
        if verdict != "proved":
            shapes = {k: getattr(v, "shape", v) for k, v in env.items()}
            return Verdict(
                rule.name,
                verdict,
                _scope(checked),
                checked,
                time.perf_counter() - t0,
                f"instance {shapes}: {detail}",
            )
        checked += 1
    result = "proved" if checked else "unknown"
    detail = "" if checked else "no well-typed instance was generated"
    return Verdict(
        rule.name,
        result,
        _scope(checked),
        checked,
        time.perf_counter() - t0,
        detail,
        rule_hash(rule),
    )


def _rank4(shapes: dict) -> bool:
    return any(len(s) == 4 for s in shapes.values())


def verify_typed(rule, limit: int = 60) -> Verdict:
    """Prove a rule that carries symbolic shapes (``rule.shapes``, generated rules): for every
    assignment of sizes 1..3 to the dim atoms (a deterministic sample of ``limit`` when there are
    more, always including the all-distinct ones), each variable a tensor of fresh real symbols
    of its shape, Z3 must prove lhs = rhs element by element. A literal atom (``"3"``, a 3x3
    kernel) is that size. Rules over rank-4 tensors (convolutions: building one instance's
    terms costs up to a second) take a fifth of ``limit``; the scope says how many."""
    t0 = time.perf_counter()
    lhs_text, rhs_text = rule.source or (str(rule.lhs), str(rule.rhs))
    shapes = dict(rule.shapes)
    n = max(6, limit // 5) if _rank4(shapes) else limit
    result, scope, checked, detail = prove_typed(lhs_text, rhs_text, shapes, n)
    digest = rule_hash(rule) if result == "proved" else ""
    return Verdict(rule.name, result, scope, checked, time.perf_counter() - t0, detail, digest)


def prove_typed(lhs_text: str, rhs_text: str, shapes: dict, limit: int = 60, dims=DIMS):
    """:func:`verify_typed` on printed sides, sizes from ``dims``: (result, scope, size
    assignments checked, detail)."""
    atoms = sorted({a for s in shapes.values() for d in s for a in d if not a.isdigit()})
    sizes = list(itertools.product(dims, repeat=len(atoms)))
    if len(sizes) > limit:
        rng = np.random.default_rng(0)
        distinct = [s for s in sizes if len(set(s)) == min(len(atoms), len(dims))]
        if len(distinct) > limit // 2:  # a random half of them, not the first in order
            distinct = [distinct[i] for i in sorted(rng.permutation(len(distinct))[: limit // 2])]
        chosen = set(distinct)
        rest = [s for s in sizes if s not in chosen]
        pick = rng.permutation(len(rest))[: max(0, limit - len(distinct))]
        sizes = distinct + [rest[i] for i in sorted(pick)]
    lhs_side, rhs_side = parse(lhs_text), parse(rhs_text)
    checked = 0
    for assignment in sizes:
        size = dict(zip(atoms, assignment, strict=True))
        env = {
            v: z3_ops.symbols(v, [sum(size.get(a) or int(a) for a in d) for d in s])
            for v, s in shapes.items()
        }
        env.update({f"size_{a}": n for a, n in size.items()})  # a split's bounds
        try:
            lhs = np.asarray(evaluate(lhs_side, {**NAMESPACE, **env}), dtype=object)
            rhs = np.asarray(evaluate(rhs_side, {**NAMESPACE, **env}), dtype=object)
        except (ShapeError, ValueError, IndexError, TypeError) as e:
            return "refuted", "", checked, f"ill-typed at sizes {size}: {e}"
        verdict, detail = z3_ops.equal(lhs, rhs)
        if verdict != "proved":
            return verdict, "", checked, f"sizes {size}: {detail}"
        checked += 1
    lo, hi = min(dims), max(dims)
    scope = f"bounded: {checked} size assignments of the dim atoms {atoms} in {lo}..{hi}"
    return "proved", scope, checked, ""


def prove_unit(unit: list[tuple]) -> list[tuple[str, str]]:
    """Rule discovery's proving work unit: (lhs text, rhs text, shapes) per candidate ->
    (result, detail), by :func:`prove_typed` on a sample of 30 size assignments; rank-4
    candidates on 6 assignments of sizes 1..2 (a conv instance at sizes 3 costs up to 0.3 s to
    build; the candidates were checked in float64 at unequal sizes before, and the rules kept
    are proved again by :func:`verify_typed`, at sizes 1..3, when they are written). No egglog
    rule is built here: printing one for its hash took half the time."""
    out = []
    for lhs, rhs, shapes in unit:
        shapes = dict(shapes)
        if _rank4(shapes):
            result, _, _, detail = prove_typed(lhs, rhs, shapes, limit=6, dims=(1, 2))
        else:
            result, _, _, detail = prove_typed(lhs, rhs, shapes, limit=30)
        out.append((result, detail))
    return out


def verify_entries(entries: list[dict]) -> list[Verdict]:
    """The verdicts of rules-file entries (each entry's rule and its reverse): a work unit for
    a process pool, which cannot ship egglog terms but can ship the entries.

    An entry used both ways is proved once: its reverse ``NAME-rev`` states the same equation
    (the sides swapped, the same shape guard), so it takes the forward rule's verdict under
    its own hash. Proving it again doubled the cost of those entries, and could disagree with
    the forward proof: Z3's timeouts depend on the order of a query's terms (measured: a conv
    rule proved forwards and "canceled" backwards at one size assignment)."""
    from eqsat.rules.generated.rulefile import rules_of

    out = []
    for e in entries:
        forward, *back = rules_of(e)
        v = verify(forward)
        out.append(v)
        for r in back:
            scope = f"{v.scope} (the equation of {v.name}, read right to left)"
            digest = rule_hash(r) if v.result == "proved" else ""
            out.append(Verdict(r.name, v.result, scope, v.instances, 0.0, v.detail, digest))
    return out


def _scope(n: int) -> str:
    return f"bounded: {n} shape instances (dims in 1..3; ranks 1-3 or the literal permutation's)"


def verify(rule) -> Verdict:
    """Prove ``rule``: an egglog rule from its printed form over bounded shapes and, where its
    ops allow, for every size (:mod:`.generic`); a Python-driven one on witnesses."""
    if hasattr(rule, "find"):
        from eqsat.verify.pyrules import verify_pyrule

        return verify_pyrule(rule)
    if getattr(rule, "shapes", ()):
        return verify_typed(rule)
    from eqsat.verify import generic

    v = verify_rule(rule)
    if v.result == "proved":
        result, scope = generic.prove(rule)
        if result == "proved":
            v.generic = scope
        elif result == "refuted":  # cannot happen when the bounded proof holds; never hide it
            v.result, v.detail = "refuted", f"generic proof: {scope}"
    return v


# ---------------------------------------------------------------------------- the ledger


def ledger_entry(v: Verdict) -> dict:
    d = asdict(v)
    d.pop("name")
    d.pop("time_s")  # the ledger is committed: only what the proof depends on
    d["semantics"] = z3_ops.SEMANTICS_VERSION
    d["solver"] = f"z3 {z3.get_version_string()}"
    return d


def write_ledger(
    verdicts: list[Verdict], path: Path | None = None, replace_prefix: str = ""
) -> None:
    """Record ``verdicts`` (in ``path``: the package's ledger by default); entries whose name
    starts with ``replace_prefix`` (when given) and that are not among them are removed (a
    regenerated rule set replaces the old one)."""
    path = ledger.LEDGER if path is None else Path(path)
    data = load_ledger(path, missing_ok=True)
    if replace_prefix:
        data = {k: v for k, v in data.items() if not k.startswith(replace_prefix)}
    for v in verdicts:
        data[v.name] = ledger_entry(v)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(data.items())), indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
