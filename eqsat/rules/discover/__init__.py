"""TASO-style rule discovery: enumerate small graphs, fingerprint them, prove the pairs.

See :mod:`eqsat.rules.discover.search` for the pipeline and its phases.
"""
