"""extract stage (see docs/architecture.md)."""
