"""lower stage (see docs/architecture.md)."""
