"""redline api."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("redline")  # one source: pyproject.toml's version, as installed
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
