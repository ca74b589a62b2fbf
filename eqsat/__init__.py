"""eqsat: an equality-saturation superoptimizer and compiler for ONNX models.

The Python API mirrors ``eqsat optimize``::

    import eqsat
    result = eqsat.optimize("model.onnx", output="fast.onnx", extractor="ilp")
    result.model          # the optimized onnx.ModelProto
    result.egraph         # e-graph size, iterations, stop reason, per-rule matches, costs
    result.verdict        # the verification gate's numbers

Keyword arguments are the fields of :class:`eqsat.pipeline.Options`. And ``eqsat compile``::

    model = eqsat.compile("model.onnx")           # eqsat's own kernels for this CPU (llvm)
    outputs = model.run({"x": x})                 # like InferenceSession.run(None, feeds)
    model.save("model.eqsat"); eqsat.load("model.eqsat")

and ``eqsat tune``: ``eqsat.tune("model.onnx", trials=64)`` measures schedules into the tuning
log in the user's cache folder, which the next ``eqsat.compile`` of the model reads.
"""

from __future__ import annotations

from eqsat.version import __version__

__all__ = ["__version__", "compile", "load", "optimize", "tune"]


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


def compile(model, target="llvm", threads=None, optimize=True, **options):  # noqa: A001
    """Compile ``model`` (a path or an ``onnx.ModelProto``) to eqsat's own code: a
    :class:`eqsat.compiled.CompiledModel` (``run(feeds)``, ``save(path)``). ``optimize=False``
    skips the e-graph; other keywords are fields of :class:`eqsat.pipeline.Options`. The result
    went through the verification gate against onnxruntime (``verify=False`` skips it)."""
    from eqsat import pipeline
    from eqsat.errors import InputError

    fields = pipeline.Options.__dataclass_fields__
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise InputError(f"unknown option(s) {unknown}; known: {sorted(fields)}")
    opts = pipeline.Options(target=target, threads=threads, egraph=optimize, **options)
    return pipeline.compile(model, opts).compiled


def tune(model, trials=64, time_limit=None, log=None, threads=None, optimize=True, **options):
    """Tune ``model``'s kernels (``trials`` measured schedules, at most ``time_limit`` seconds)
    into the tuning log (``log``, else the user's cache folder), for the next ``compile`` with
    the same ``threads`` and options; each kernel's best is confirmed against its default in
    the model, and the whole model against the default schedules (the defaults are logged
    where tuning made it slower). Returns the report (``eqsat.autoschedule.search``)."""
    from eqsat import pipeline
    from eqsat.errors import InputError

    fields = pipeline.Options.__dataclass_fields__
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise InputError(f"unknown option(s) {unknown}; known: {sorted(fields)}")
    opts = pipeline.Options(target="llvm", threads=threads, egraph=optimize, **options)
    return pipeline.tune(model, opts, trials, time_limit, log)


def load(path, threads=None):
    """A compiled model saved with ``CompiledModel.save`` (see :func:`eqsat.compiled.load`)."""
    from eqsat.compiled import load as load_compiled

    return load_compiled(path, threads=threads)
