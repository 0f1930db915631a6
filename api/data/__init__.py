"""Data files shipped with the API, rebuilt by scripts (``build_datasets``, ``api.examples``)."""

from __future__ import annotations

import json
from pathlib import Path


def write_bundled_json(path: Path, document: dict) -> None:
    """Write a shipped JSON file in the one layout they share: indented, non-ASCII kept, a final newline."""
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
