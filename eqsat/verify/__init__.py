"""verify stage (see docs/architecture.md)."""
