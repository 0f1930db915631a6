"""redline datasets."""
