"""Service settings, from ``REDLINE_*`` environment variables or a ``.env`` file (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from datasets.data_dir import default_data_dir


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REDLINE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Layer cache, manifest, derived index files, keys and the SQLite store "
        "(default: $XDG_DATA_HOME/redline or ~/.local/share/redline, the same from every folder).",
    )
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
    max_parts: int = Field(100, ge=1, description="Separate polygons in one site.")
    max_holes: int = Field(100, ge=0, description="Holes in one site, all its polygons together.")
    max_repair_vertices: int = Field(5_000, ge=4, description="A site that crosses itself is repaired only up to this many vertices.")
    max_self_intersections: int = Field(50, ge=0, description="A site is repaired (or overlapping parts merged) only up to this many points where edges cross.")
    max_boundary_area_ha: float = 100.0
    tolerance_m2: float = 0.5
    tolerance_pct: float = 0.1

    check_process: bool = Field(True, description="Answer POST /v1/check in child processes forked from each worker (sharing its memory), so checks and the event loop never trade the GIL; off runs them on a thread in the worker. Always a thread where fork is missing or with live_fallback.")
    check_processes: int = Field(1, ge=1, le=64, description="Check processes per worker: each check goes to the one with the fewest waiting.")
    check_deadline_s: float = Field(5.0, gt=0, le=600, description="How long a check may take, queueing included, before it is abandoned with 503 and Retry-After; a check process that overruns it is killed and replaced.")

    require_keys: bool = Field(False, description="Refuse protected requests (503) whenever no API key is usable. Set by 'redline serve' off loopback; a service started with keys is closed that way anyway.")
    cors_origins: list[str] = Field(default_factory=list)
    rate_limit_per_s: float = Field(50.0, description="Token bucket refill rate per API key.")
    rate_limit_burst: int = 100
    public_read: bool = Field(True, description="Answer the platform-compatible reads (/entity*, /dataset*, /gis/{team}) without an API key, as the platform and PlanX do; keys stay mandatory for everything else.")
    anonymous_rate_limit_per_s: float = Field(10.0, description="Token bucket refill rate per client address for requests without an API key.")
    anonymous_rate_limit_burst: int = Field(1000, description="Burst per client address without a key: 20 back-to-back PlanX checks of about 30 requests each fit.")
    failed_auth_per_s: float = Field(0.1, description="Refill rate of each client address's allowance of failed authentications.")
    failed_auth_burst: int = Field(10, description="Failed authentications a client address may make before its keyed requests get 429.")
    auto_approve_working_days: int = 5


@lru_cache
def get_settings() -> Settings:
    return Settings()
