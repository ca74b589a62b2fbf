"""rules stage (see ARCHITECTURE.md)."""
