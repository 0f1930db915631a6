"""The bundled sample layers: real public extracts, loaded into an empty cache by ``make run``.

What they hold and where they come from: ``datasets/data/samples/ATTRIBUTION.md``.
"""

from __future__ import annotations

from importlib import resources

import geopandas as gpd

from .cache import LayerCache


def sample_files() -> dict[str, object]:
    folder = resources.files("datasets") / "data" / "samples"
    return {p.name.removesuffix(".parquet"): p for p in folder.iterdir() if p.name.endswith(".parquet") and p.name != "coverage.parquet"}


def sample_coverage() -> dict[str, object]:
    """Where each sample layer is complete (EPSG:4326); outside it a check answers unknown, not "no"."""
    path = resources.files("datasets") / "data" / "samples" / "coverage.parquet"
    frame = gpd.read_parquet(str(path))
    return dict(zip(frame["dataset"], frame.geometry, strict=True))


NOWHERE_SAMPLE = "nowhere: the sample holds a scattering of features, complete for no area"


def load_samples(cache: LayerCache, *, only_missing: bool = False) -> dict[str, int]:
    """Write every bundled sample layer into ``cache``; returns features loaded per dataset."""
    present = set(cache.datasets()) if only_missing else set()
    coverage = sample_coverage()
    loaded = {}
    for dataset, path in sorted(sample_files().items()):
        if dataset in present:
            continue
        frame = gpd.read_parquet(str(path))
        area = coverage[dataset]
        note = NOWHERE_SAMPLE if area.is_empty else "the regions the bundled sample extract is complete for (datasets/data/samples/coverage.parquet)"
        cache.write(dataset, frame, source={"type": "sample", "path": f"datasets/data/samples/{path.name}"}, coverage=area, coverage_note=note)
        loaded[dataset] = len(frame)
    return loaded
