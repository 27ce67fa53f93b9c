"""concelier."""
