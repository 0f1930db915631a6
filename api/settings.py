"""Service settings, from ``REDLINE_*`` environment variables or a ``.env`` file (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from boundary.geometry import BoundaryLimits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REDLINE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".redline"), description="Layer cache, manifest, derived index files and the SQLite store.")
    database_url: str | None = Field(None, description="postgresql://... to keep boundaries in PostgreSQL; SQLite in data_dir when unset.")
    local_catalogue: Path | None = Field(None, description="A council's own constraint keys and datasets (JSON, same shape as the shipped catalogue).")
    article4_dir: Path | None = Field(None, description="Folder of per-council granular article 4 rule files.")
    load_samples: bool = Field(True, description="Load the bundled sample layers into an empty cache at start.")

    pdp_files_url: str = "https://files.planning.data.gov.uk"
    pdp_api_url: str = "https://www.planning.data.gov.uk"
    pdp_connect_timeout_s: float = 10.0
    pdp_read_timeout_s: float = 60.0
    pdp_retries: int = 4
    sync_min_fraction: float = Field(0.5, description="Refuse a download with fewer features than this fraction of the last copy.")
    sync_count_tolerance: float = Field(0.01, ge=0, description="Refuse a download whose rows differ from the platform's published entity count by more than this fraction.")
    pdp_download_deadline_s: float = Field(1800.0, gt=0, description="Seconds one bulk file may take to download, retries included, however slowly it trickles in.")
    stale_after_hours: float = 48.0
    sync_interval_s: float | None = Field(None, description="Run the platform sync in the service every N seconds (off by default).")
    live_fallback: bool = Field(False, description="Ask the platform's live API for datasets that are not cached.")
    live_cache_ttl_s: float = 300.0
    reload_poll_s: float = Field(5.0, description="How often a replica looks for a newer cache (written by a sync elsewhere).")

    max_body_bytes: int = Field(2_000_000, gt=0, description="Every request body, uploads included: refused (413) as soon as it passes this, whatever Content-Length says.")
    max_upload_unpacked_bytes: int = Field(20_000_000, gt=0, description="What an uploaded zip may hold once unpacked (its members' declared sizes, checked before extraction).")
    max_upload_ratio: float = Field(100.0, gt=1, description="Refuse a zip member over 1 MB that unpacks to more than this many times its packed size (a zip bomb).")
    max_upload_files: int = Field(20, gt=0, description="Members an uploaded zip may hold (a shapefile is 3 to 8 files).")
    max_vertices: int = 10_000
    max_geometries: int = 100
    max_boundary_area_ha: float = 100.0
    tolerance_m2: float = 0.5
    tolerance_pct: float = 0.1

    check_process: bool = Field(True, description="Answer POST /v1/check in child processes forked from each worker (sharing its memory), so checks and the event loop never trade the GIL; off runs them on a thread in the worker. Always a thread where fork is missing or with live_fallback.")
    check_processes: int = Field(1, ge=1, le=64, description="Check processes per worker: each check goes to the one with the fewest waiting.")

    require_keys: bool = Field(False, description="Refuse protected requests (503) whenever no API key is usable. Set by 'redline serve' off loopback; a service started with keys is closed that way anyway.")
    cors_origins: list[str] = Field(default_factory=list)
    rate_limit_per_s: float = Field(50.0, description="Token bucket refill rate per API key.")
    rate_limit_burst: int = 100
    auto_approve_working_days: int = 5


def boundary_limits(settings: Settings) -> BoundaryLimits:
    """The limits of a red-line boundary and of an uploaded boundary file, from the settings."""
    return BoundaryLimits(
        max_area_ha=settings.max_boundary_area_ha,
        max_vertices=settings.max_vertices,
        max_upload_bytes=settings.max_body_bytes,
        max_unpacked_bytes=settings.max_upload_unpacked_bytes,
        max_ratio=settings.max_upload_ratio,
        max_files=settings.max_upload_files,
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
