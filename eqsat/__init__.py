"""eqsat: an equality-saturation superoptimizer and compiler for ONNX models.

The Python API mirrors ``eqsat optimize``::

    import eqsat
    result = eqsat.optimize("model.onnx", output="fast.onnx", extractor="ilp")
    result.model          # the optimized onnx.ModelProto
    result.egraph         # e-graph size, iterations, stop reason, per-rule matches, costs
    result.verdict        # the verification gate's numbers

Keyword arguments are the fields of :class:`eqsat.pipeline.Options`.
"""

from __future__ import annotations

from eqsat.version import __version__

__all__ = ["__version__", "optimize"]


def optimize(model, output=None, **options):
    """Optimize ``model`` (a path or an ``onnx.ModelProto``); see :func:`eqsat.pipeline.optimize`.
    Raises ``eqsat.errors.InputError`` for bad input or options and ``VerificationError`` when
    the optimized model does not match (nothing is written then)."""
    from eqsat import pipeline
    from eqsat.errors import InputError

    fields = pipeline.Options.__dataclass_fields__
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise InputError(f"unknown option(s) {unknown}; known: {sorted(fields)}")
    return pipeline.optimize(model, pipeline.Options(**options), output=output)
