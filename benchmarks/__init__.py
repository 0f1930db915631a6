"""redline benchmarks."""
