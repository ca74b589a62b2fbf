"""The pipeline as a list of named passes: run in order, each timed and its graph checked, the
record in ``--json``; the target chooses the passes."""

import json
import re

import pytest
from onnx import helper

import eqsat
from eqsat import cli, pipeline
from eqsat.errors import InputError
from tests.helpers import model, vi

ONNX_PASSES = [
    "import",
    "fold",
    "dce",
    "egraph",
    "fold-weights",
    "export",
    "save",
    "onnx-checker",
    "verify",
    "write",
]


@pytest.fixture
def tiny():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Relu", ["r"], ["s"]),  # relu(relu(x)) = relu(x)
        helper.make_node("Tanh", ["s"], ["y"]),
    ]
    return model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])])


def _names(passes) -> list[str]:
    return [p.name for p in passes]


def test_the_onnx_target_chooses_its_passes_from_the_options():
    assert _names(pipeline.passes_for(pipeline.Options())) == ONNX_PASSES
    lean = pipeline.Options(fold_constants=False, egraph=False, verify=False)
    assert _names(pipeline.passes_for(lean)) == [
        "import",
        "dce",
        "export",
        "save",
        "onnx-checker",
        "write",
    ]


def test_passes_run_in_order_each_timed_and_its_graph_checked(tiny, tmp_path):
    said = []
    out = tmp_path / "o.onnx"
    result = pipeline.optimize(
        tiny, pipeline.Options(iter_limit=3), output=out, progress=said.append
    )
    assert _names(result.passes) == ONNX_PASSES
    assert all(p.seconds >= 0 for p in result.passes)
    checked = {p.name for p in result.passes if p.checked}
    # the passes that made a new graph; export and the rest only read it
    assert {"import", "egraph"} <= checked <= {"import", "fold", "dce", "egraph", "fold-weights"}
    assert [s for s in said if s in ONNX_PASSES] == ONNX_PASSES  # announced in order
    assert {"encode", "saturate", "extract"} <= set(said)  # the e-graph pass's phases
    assert [n.op for n in result.graph.nodes] == ["Relu", "Tanh"]
    assert result.output == out and out.is_file()
    # times_s keeps the e-graph stage's phases rather than its total
    assert {"encode", "saturate", "extract", "import", "verify"} <= set(result.times)
    assert "egraph" not in result.times


def test_a_pass_that_breaks_the_graph_is_named_and_nothing_is_written(tiny, tmp_path, monkeypatch):
    def drop_first_node(state):
        g = state.graph
        state.graph = g.replace(nodes=g.nodes[1:])  # the next node reads an undefined value
        return state

    real = pipeline.passes_for

    def with_a_broken_pass(options):
        chosen = real(options)
        at = _names(chosen).index("dce") + 1
        return [*chosen[:at], pipeline.Pass("drop-first-node", drop_first_node), *chosen[at:]]

    monkeypatch.setattr(pipeline, "passes_for", with_a_broken_pass)
    out = tmp_path / "never.onnx"
    with pytest.raises(pipeline.PassError, match="pass drop-first-node produced an invalid graph"):
        pipeline.optimize(tiny, pipeline.Options(egraph=False), output=out)
    assert list(tmp_path.iterdir()) == []


def test_the_runner_records_what_it_ran(tiny):
    steps = [
        pipeline.Pass("import", pipeline._import),
        pipeline.Pass("export", pipeline._export),
    ]
    state = pipeline.run_passes(steps, pipeline.State(pipeline.Options(), tiny))
    assert [(p.name, p.checked) for p in state.passes] == [("import", True), ("export", False)]
    assert state.exported is not None and set(state.times) == {"import", "export"}


def test_json_carries_the_passes(capsys, tiny, tmp_path):
    src = tmp_path / "tiny.onnx"
    src.write_bytes(tiny.SerializeToString())
    code = cli.main(["optimize", str(src), "-o", str(tmp_path / "o.onnx"), "--json"])
    s = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [p["name"] for p in s["passes"]] == ONNX_PASSES
    assert all(set(p) == {"name", "seconds", "checked"} for p in s["passes"])
    assert s["passes"][0]["checked"] is True


def test_a_target_not_built_yet_is_a_usage_error(capsys, tiny, tmp_path):
    with pytest.raises(InputError, match="target cuda is not built yet"):
        pipeline.compile(tiny, pipeline.Options(target="cuda"))
    src = tmp_path / "tiny.onnx"
    src.write_bytes(tiny.SerializeToString())
    code = cli.main(["compile", str(src), "-o", str(tmp_path / "o.eqsat"), "--target", "cuda"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "eqsat: error: target cuda is not built yet (onnx, llvm and ref are)"
    assert not (tmp_path / "o.eqsat").exists()


@pytest.mark.parametrize("target", ["llvm", "ref"])
def test_optimize_refuses_a_compiled_target(tiny, target):
    with pytest.raises(InputError, match=f"target {target} is compiled code: use `eqsat compile`"):
        pipeline.optimize(tiny, pipeline.Options(target=target))
    with pytest.raises(InputError, match="use `eqsat compile`"):
        eqsat.optimize(tiny, target=target)


def test_an_unknown_target_lists_the_known_ones():
    with pytest.raises(InputError, match="known: onnx, llvm, ref, cuda"):
        pipeline.passes_for(pipeline.Options(target="tpu"))


@pytest.fixture(scope="module")
def nasrnn_small():
    from eqsat.examples import build_example

    return pipeline.optimize(
        build_example("nasrnn", "small"), pipeline.Options(verify=False)
    )


def test_the_summary_fits_a_screen_and_the_json_keeps_the_detail(nasrnn_small):
    r = nasrnn_small
    text = r.summary()
    lines = text.splitlines()
    assert len(lines) <= 12 and all(len(line) <= 400 for line in lines), text
    fired = next(line for line in lines if line.startswith("rewrites fired"))
    assert not re.search(r"[a-z] 0\b", fired)  # no rule listed that matched nothing
    assert not re.search(r"\b(shape|view)-(?!analysis)", text)  # nor an analysis rule
    assert "merge-matmul-shared-lhs" in text and "shape-analysis rules" in text
    detail = r.to_json()
    assert detail["egraph"]["saturation"]["matches"]  # every rule egglog reported, zeros too
    assert json.loads(json.dumps(detail, default=str))["nodes_after"] < detail["nodes_before"]


def test_rules_fired_counts_the_rewrites_apart_from_the_shape_analysis(nasrnn_small):
    eg = nasrnn_small.egraph
    fired, matches = eg["rewrites_fired"], eg["saturation"]["matches"]
    assert fired and all(n > 0 for n in fired.values())
    assert not any(k.startswith(("shape-", "view-")) for k in fired)
    assert "merge-matmul-shared-rhs" in fired
    analysis = {k: n for k, n in matches.items() if n and k not in fired}
    assert analysis and all(k.startswith(("shape-", "view-")) for k in analysis)
    assert eg["analysis"] == {"rules_fired": len(analysis), "matches": sum(analysis.values())}


def test_the_iteration_limit_bounds_every_run_of_the_rules(nasrnn_small):
    sat = nasrnn_small.egraph["saturation"]
    limit = pipeline.Options().iter_limit
    assert sat["iter_limit_per_run"] == limit and sat["stop_reason"] == "saturated"
    assert len(sat["runs"]) > 1 and all(1 <= k <= limit for k in sat["runs"])
    assert sat["iterations"] == sum(sat["runs"])
    assert f"in {len(sat['runs'])} runs of the rules" in nasrnn_small.summary()
    assert f"the limit, {limit}, bounds each run" in nasrnn_small.summary()
