"""The auto-scheduler (issue 18): a search space per kernel, measured search in a worker
process, a tuning log that ``eqsat compile`` reads.

Modules: :mod:`~eqsat.autoschedule.signature` (kernel and machine keys),
:mod:`~eqsat.autoschedule.log` (the JSON-lines tuning log and the lookup compile uses),
:mod:`~eqsat.autoschedule.space` (candidates per kernel class),
:mod:`~eqsat.autoschedule.measure` (build one kernel and time it inside runs of the model, in
a worker process),
:mod:`~eqsat.autoschedule.model` (the learned ranking), :mod:`~eqsat.autoschedule.search`
(per-kernel search and the task scheduler over a model's kernels).

Why here and not in ``eqsat/lower/``: a contraction's knobs are the LLVM backend's ``Plan``
and measuring needs the backend, while ``lower`` must not import a backend (ARCHITECTURE.md);
like :mod:`eqsat.compiled`, this package joins the two.
"""
