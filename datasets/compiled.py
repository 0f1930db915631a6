"""How the project's numba kernels are compiled: ahead of the first call, and kept between processes.

Each kernel gives its signatures, so it is compiled (or, with ``cache=True``, loaded from ``__pycache__``
in milliseconds) when its module is imported, never inside a check, and before a worker forks.
"""

from __future__ import annotations

import numba


def compiled(signatures):
    """``njit`` for ``signatures``, the compiled code kept between processes where a cache directory can be written."""

    def decorate(function):
        try:
            return numba.njit(signatures, cache=True)(function)
        except RuntimeError:  # no writable cache location (a read-only install with no home directory)
            return numba.njit(signatures)(function)

    return decorate
