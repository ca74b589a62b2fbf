"""Tests of eqsat.backends."""
