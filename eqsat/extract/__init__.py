"""extract stage (see ARCHITECTURE.md)."""
