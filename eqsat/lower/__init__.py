"""lower stage (see ARCHITECTURE.md)."""
