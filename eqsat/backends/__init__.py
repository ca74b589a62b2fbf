"""Backends: code generators behind the lowering (docs/architecture.md, "Lowering and backends").

Each backend lives in its own subpackage and imports its heavy dependency (llvmlite, a GPU
driver) only when that subpackage is imported, so ``import eqsat`` needs none of them.
"""
