"""Where redline keeps its data when ``REDLINE_DATA_DIR`` does not say (kept free of heavy imports:
the settings of every command read it)."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """The data folder when ``REDLINE_DATA_DIR`` is not set: one per user, wherever a command is run.

    ``$XDG_DATA_HOME/redline``, else ``~/.local/share/redline``. Not ``./.redline``: a command run from
    another folder would make a fresh cache there holding only the samples, and a council's own layers
    would vanish from its answers without a word.
    """
    base = os.environ.get("XDG_DATA_HOME") or ""
    return (Path(base) if Path(base).is_absolute() else Path.home() / ".local" / "share") / "redline"
