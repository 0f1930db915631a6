"""redline boundary."""
