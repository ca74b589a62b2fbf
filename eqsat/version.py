"""eqsat's version string, in a leaf module.

``eqsat.__version__`` re-exports it. Modules inside the package read it from here, not from
``eqsat``: the package's ``__init__`` is the public API, whose :func:`eqsat.optimize` imports
the pipeline, and the pipeline imports the examples, so ``examples -> eqsat`` closed a cycle.
"""

__version__ = "0.1.0"
