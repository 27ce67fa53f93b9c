"""excititor/sources."""
