"""sync/sources."""
