"""redline constraints."""
