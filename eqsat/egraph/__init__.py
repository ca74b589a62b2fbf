"""egraph stage (see ARCHITECTURE.md)."""
