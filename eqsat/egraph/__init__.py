"""egraph stage (see docs/architecture.md)."""
