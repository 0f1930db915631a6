"""The bundled sample layers: real public extracts, loaded into an empty cache by ``make run``.

What they hold and where they come from: ``datasets/data/samples/ATTRIBUTION.md``.
"""

from __future__ import annotations

from importlib import resources

import geopandas as gpd

from .cache import LayerCache


def sample_files() -> dict[str, object]:
    folder = resources.files("datasets") / "data" / "samples"
    return {p.name.removesuffix(".parquet"): p for p in folder.iterdir() if p.name.endswith(".parquet")}


def load_samples(cache: LayerCache, *, only_missing: bool = False) -> dict[str, int]:
    """Write every bundled sample layer into ``cache``; returns features loaded per dataset."""
    present = set(cache.datasets()) if only_missing else set()
    loaded = {}
    for dataset, path in sorted(sample_files().items()):
        if dataset in present:
            continue
        frame = gpd.read_parquet(str(path))
        cache.write(dataset, frame, source={"type": "sample", "path": f"datasets/data/samples/{path.name}"})
        loaded[dataset] = len(frame)
    return loaded
