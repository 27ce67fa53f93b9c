"""excititor."""
