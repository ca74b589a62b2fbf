"""verify stage (see ARCHITECTURE.md)."""
