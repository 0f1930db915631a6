"""redline api."""
