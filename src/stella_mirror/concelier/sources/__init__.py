"""concelier/sources."""
