"""Equivalence-verification reports: a self-contained HTML page and its JSON sibling.

Consumes a numeric :class:`~eqsat.verify.numeric.Verdict`, the two models, and for ``optimize``
the e-graph statistics; produces a report a reviewer can read without the code: the inputs used
(seeds, distributions, symbolic dims), per-output error statistics (max abs/rel error, ULPs), op
histograms before and after, modelled cost and *measured* onnxruntime latency before and after
(interleaved runs, with an inline SVG chart), and for ``optimize`` the rules that fired with their
proof status from the ledger. A speedup is never shown without its noise: each model's spread
(min to upper quartile of the interleaved repetitions) is printed beside it, and where the spreads
overlap the page says "within noise" instead of a factor (:func:`.timing.speedup`). The page has
no external assets (inline CSS and SVG only) and is written atomically, like every output of eqsat.

What the rule section claims, precisely: it lists every rewrite that fired in the run (matches
counted by egglog or by the Python-driven rule), each with its ledger status and scope, and the
ops the optimized graph has that the input did not. It does not derive each output node from a
chain of rewrites (egglog-python does not expose explanations); since ``optimize`` uses only
rules the ledger proves (unless ``--allow-unproved``), every step it could have taken is proved.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections import Counter
from pathlib import Path

import onnx

from eqsat.verify import numeric
from eqsat.verify.timing import describe, speedup


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def measure_latency(
    models: list, reps: int = 10, seed: int = 0, dim_values: dict[str, int] | None = None
) -> list[dict]:
    """Per model: its repetitions' spread in onnxruntime (:func:`.timing.spread`: min, median,
    upper quartile, max; ORT_ENABLE_ALL, one intra-op thread), the models' repetitions
    interleaved so that background load hits all; symbolic dims at ``dim_values`` (the sizes
    the gate ran at)."""
    from eqsat.verify.timing import interleaved, spread

    feeds = numeric.random_feeds(numeric.input_specs(models[0]), seed, dim_values)
    return [spread(t) for t in interleaved(models, feeds, threads=1, reps=reps)]


def build(
    kind: str,
    verdict: numeric.Verdict,
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    labels: tuple[str, str],
    egraph: dict | None = None,
    latency_reps: int = 10,
    rules_file: str | None = None,
) -> dict:
    """The report's data (what the JSON sibling holds). ``rules_file``: the run's
    ``--rules-file`` (its rules and their proofs)."""
    data: dict = {
        "kind": kind,
        "models": {"reference": labels[0], "candidate": labels[1]},
        "verdict": verdict.to_json(),
        "ops": {"reference": op_histogram(reference), "candidate": op_histogram(candidate)},
        "nodes": {"reference": len(reference.graph.node), "candidate": len(candidate.graph.node)},
    }
    try:
        lat = measure_latency([reference, candidate], latency_reps, 0, verdict.dim_values)
        data["latency"] = {
            "reference": lat[0],
            "candidate": lat[1],
            "threads": 1,
            **speedup(lat[0], lat[1]),
        }
    except Exception as e:  # a model ORT cannot time still gets its report
        data["latency"] = {"error": str(e).splitlines()[0][:200] if str(e) else type(e).__name__}
    if egraph is not None:
        data["egraph"] = egraph
        data["rules"] = _rules(egraph, rules_file)
    return data


def _rules(egraph: dict, rules_file: str | None = None) -> list[dict]:
    """The rewrites that fired (the statistics' ``rewrites_fired``: the shape analysis' rules
    are not among them), each with its family and ledger status; ``rules_file``: a discovered
    file's rules and the proofs it carries are among them."""
    from eqsat.rules import schedule
    from eqsat.verify.ledger import holds, load_proofs

    ledger = load_proofs(rules_file)
    every = schedule.select(tuple(schedule.FAMILIES), rules_file=rules_file)
    by_name = {r.name: r for r in every}
    out = []
    for name, n in (egraph.get("rewrites_fired") or {}).items():
        r = by_name.get(name)
        entry = ledger.get(name, {})
        out.append(
            {
                "rule": name,
                "family": r.family if r else "",
                "matches": n,
                "proof": "proved" if r and holds(r, ledger) else "not proved",
                "scope": "; ".join(x for x in (entry.get("generic"), entry.get("scope")) if x),
                "exact": "bit-exact" if r and r.fp_exact else "over the reals",
            }
        )
    return out


def write(data: dict, path: Path) -> tuple[Path, Path]:
    """Write ``path`` (HTML) and its ``.json`` sibling, each atomically."""
    path = Path(path)
    sibling = path.with_suffix(".json")
    for target, text in ((path, render(data)), (sibling, json.dumps(data, indent=1, default=str))):
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(target)
    return path, sibling


# ---------------------------------------------------------------------------- HTML

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;max-width:960px;margin:2em auto;
padding:0 1em;color:#1d1d1f}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid
#ddd;padding-bottom:.2em}table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;
text-align:left;border-bottom:1px solid #eee;vertical-align:top}th{background:#f6f6f6}
td.n{text-align:right;font-variant-numeric:tabular-nums}.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}
.muted{color:#666}code{background:#f4f4f4;padding:0 .25em;border-radius:3px}
"""


_NUMBER = re.compile(r"^-?[0-9.]+(e[-+]?[0-9]+)?$")


def _e(x) -> str:
    return html.escape(str(x))


def _table(head: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='n'>{c}</td>" if _NUMBER.match(str(c)) else f"<td>{c}</td>" for c in r
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{h}</tr>{body}</table>"


def _bars(items: list[tuple[str, float]], unit: str) -> str:
    """A horizontal bar chart as inline SVG."""
    top = max((v for _, v in items), default=1.0) or 1.0
    width, row = 560, 30
    parts = [f'<svg width="{width + 200}" height="{row * len(items) + 10}" role="img">']
    for k, (label, v) in enumerate(items):
        y = 5 + k * row
        w = max(1.0, width * v / top)
        parts.append(f'<text x="0" y="{y + 18}" font-size="13">{_e(label)}</text>')
        parts.append(f'<rect x="110" y="{y}" width="{w:.1f}" height="22" fill="#4a7bd0"/>')
        parts.append(
            f'<text x="{115 + w:.1f}" y="{y + 16}" font-size="13">{v:.3f} {_e(unit)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render(d: dict) -> str:
    v = d["verdict"]
    ok = v["ok"]
    title = "eqsat optimize report" if d["kind"] == "optimize" else "eqsat verify report"
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"]
    out.append(f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>")
    verdict = "EQUIVALENT" if ok else "DIFFERENT"
    out.append(
        f"<p class='{'ok' if ok else 'bad'}'>{verdict} within rtol {v['rtol']:g}, atol "
        f"{v['atol']:g}</p>" + ("" if ok else f"<p class='bad'>{_e(v.get('reason', ''))}</p>")
    )
    out.append(
        f"<p>reference <code>{_e(d['models']['reference'])}</code> ({d['nodes']['reference']} "
        f"nodes) — candidate <code>{_e(d['models']['candidate'])}</code> "
        f"({d['nodes']['candidate']} nodes)</p>"
    )
    out.append("<h2>Inputs used</h2>")
    dims = ", ".join(f"{k} = {n}" for k, n in v.get("dim_values", {}).items()) or "none"
    out.append(
        f"<p>{len(v['seeds'])} random input sets, seeds {_e(', '.join(map(str, v['seeds'])))};"
        f" distributions: {_e(v['distribution'])}; symbolic dims bound to: {_e(dims)}.</p>"
    )
    out.append("<h2>Outputs</h2>")
    rows = [
        [
            _e(o["name"]),
            _e("×".join(map(str, o["shape"])) or "scalar"),
            f"{o['max_abs']:.3g}",
            f"{o['max_rel']:.3g}",
            f"{o['scale']:.3g}",
            str(o["max_ulp"]),
            f"{o['median_ulp']:.3g}",
            "<span class='ok'>yes</span>" if o["ok"] else "<span class='bad'>NO</span>",
        ]
        for o in v["outputs"]
    ]
    out.append(
        _table(
            ["output", "shape", "max abs", "max rel", "max |ref|", "max ULP", "median ULP", "ok"],
            rows,
        )
    )
    lat = d.get("latency", {})
    out.append("<h2>Cost and latency</h2>")
    if "error" in lat:
        out.append(f"<p class='muted'>latency not measured: {_e(lat['error'])}</p>")
    else:
        a, b = lat["reference"], lat["candidate"]
        words = describe(a, b)
        claim = words if lat["within_noise"] else f"<b>{_e(words.split(' ', 1)[0])}</b> " + _e(
            words.split(" ", 1)[1]
        )
        out.append(
            f"<p>onnxruntime, ORT_ENABLE_ALL, one intra-op thread; latency of the candidate "
            f"against the reference: {claim}. Medians {a['median_ms']:.3f} / "
            f"{b['median_ms']:.3f} ms.</p>"
        )
        out.append(_bars([("reference", a["min_ms"]), ("candidate", b["min_ms"])], "ms (min)"))
    eg = d.get("egraph")
    if eg and "cost_before" in eg:
        out.append(
            f"<p>modelled cost ({_e(eg.get('cost_model', ''))}): {eg['cost_before']:.4g} → "
            f"{eg['cost_after']:.4g}</p>"
        )
    out.append("<h2>Ops</h2>")
    ra, rb = d["ops"]["reference"], d["ops"]["candidate"]
    rows = [[_e(op), str(ra.get(op, 0)), str(rb.get(op, 0))] for op in sorted(set(ra) | set(rb))]
    out.append(_table(["op", "reference", "candidate"], rows))
    if d["kind"] == "optimize":
        out.append(_rules_html(d))
    out.append("</body></html>")
    return "".join(out)


def _rules_html(d: dict) -> str:
    eg = d.get("egraph") or {}
    parts = ["<h2>Rules</h2>"]
    if "error" in eg:
        parts.append(
            f"<p>the e-graph stages did not complete ({_e(eg['error'])}); the candidate is the "
            "input after constant folding and dead-code removal only.</p>"
        )
        return "".join(parts)
    rules = d.get("rules", [])
    an = eg.get("analysis") or {}
    if an:
        parts.append(
            f"<p class='muted'>besides the rewrites, {an['rules_fired']} shape-analysis rules "
            f"matched {an['matches']} times (they type e-classes and rewrite nothing).</p>"
        )
    if not rules:
        parts.append("<p>no rewrite fired: the candidate is the input after constant folding.</p>")
    else:
        if d["ops"]["reference"] == d["ops"]["candidate"]:
            parts.append(
                "<p>the rewrites below fired in the e-graph, but extraction found nothing "
                "cheaper under the cost model: the candidate has the input's ops.</p>"
            )
        unproved = [r for r in rules if r["proof"] == "not proved"]
        parts.append(
            f"<p>{len(rules)} rewrites fired; "
            + (
                "<span class='ok'>every one is proved</span> (Z3, bounded scope below)."
                if not unproved
                else f"<span class='bad'>{len(unproved)} not proved</span> (run with "
                "<code>--allow-unproved</code>)."
            )
            + "</p>"
        )

        def proof(r: dict) -> str:
            cls = "ok" if r["proof"] == "proved" else "bad"
            return f"<span class='{cls}'>{_e(r['proof'])}</span>"

        rows = [
            [
                _e(r["rule"]),
                _e(r["family"]),
                str(r["matches"]),
                proof(r),
                _e(r["exact"]),
                f"<span class='muted'>{_e(r['scope'])}</span>",
            ]
            for r in rules
        ]
        parts.append(_table(["rule", "family", "matches", "proof", "exactness", "scope"], rows))
    ra, rb = d["ops"]["reference"], d["ops"]["candidate"]
    new = {op: n - ra.get(op, 0) for op, n in rb.items() if n > ra.get(op, 0)}
    if new:
        listed = ", ".join(f"{op} +{n}" for op, n in sorted(new.items()))
        parts.append(f"<p>ops the candidate has more of than the input: {_e(listed)}.</p>")
    left = eg.get("unproved_left_out") or []
    if left:
        parts.append(f"<p class='muted'>left out as unproved: {_e(', '.join(left))}</p>")
    return "".join(parts)
