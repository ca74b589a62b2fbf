"""backends stage (see ARCHITECTURE.md)."""
