"""Service settings, from ``REDLINE_*`` environment variables or a ``.env`` file (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from constraints.index import Tolerance
from datasets.data_dir import default_data_dir

if TYPE_CHECKING:
    from datasets.sync import Syncer

NOTIFY_API = "https://api.notifications.service.gov.uk"


class LocalAuthorityNotifications(BaseModel):
    """Where one council's change-request events go (an entry of ``REDLINE_NOTIFICATIONS``)."""

    webhook_url: str | None = Field(None, description="The back-office system's endpoint; every change-request event is POSTed to it.")
    webhook_secret: str | None = Field(None, description="The Standard Webhooks signing secret (whsec_...), shared with the receiver.")
    notify_api_key: str | None = Field(None, description="The council's GOV.UK Notify API key.")
    notify_base_url: str = Field(NOTIFY_API, description="GOV.UK Notify's API (a stub or a proxy in tests and staging).")
    notify_templates: dict[str, str] = Field(default_factory=dict, description="Notify email template id per event type (change_request.opened, ...); events without one are not emailed.")
    notify_reply_to_id: str | None = Field(None, description="A Notify email reply-to id, if the council has one.")


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
    pdp_connect_timeout_s: float = Field(10.0, gt=0)
    pdp_read_timeout_s: float = Field(60.0, gt=0)
    pdp_retries: int = Field(4, ge=0, le=20)
    sync_min_fraction: float = Field(0.5, description="Refuse a download with fewer features than this fraction of the last copy.")
    sync_count_tolerance: float = Field(0.01, ge=0, description="Refuse a download whose rows differ from the platform's published entity count by more than this fraction.")
    pdp_download_deadline_s: float = Field(1800.0, gt=0, description="Seconds one bulk file may take to download, retries included, however slowly it trickles in.")
    stale_after_hours: float = Field(48.0, gt=0)
    sync_interval_s: float | None = Field(None, description="Run the platform sync in the service every N seconds (off by default).")
    live_fallback: bool = Field(False, description="Ask the platform's live API for datasets that are not cached.")
    live_cache_ttl_s: float = Field(300.0, ge=0)
    reload_poll_s: float = Field(5.0, description="How often a replica looks for a newer cache (written by a sync elsewhere).")

    max_body_bytes: int = Field(2_000_000, ge=1_000, description="Every request body, uploads included: refused (413) as soon as it passes this, whatever Content-Length says.")
    max_upload_unpacked_bytes: int = Field(20_000_000, gt=0, description="What an uploaded zip may hold once unpacked (its members' declared sizes, checked before extraction).")
    max_upload_ratio: float = Field(100.0, gt=1, description="Refuse a zip member over 1 MB that unpacks to more than this many times its packed size (a zip bomb).")
    max_upload_files: int = Field(20, gt=0, description="Members an uploaded zip may hold (a shapefile is 3 to 8 files).")
    max_vertices: int = Field(10_000, ge=4)
    max_geometries: int = Field(100, ge=1)
    max_parts: int = Field(100, ge=1, description="Separate polygons in one site.")
    max_holes: int = Field(100, ge=0, description="Holes in one site, all its polygons together.")
    max_repair_vertices: int = Field(5_000, ge=4, description="A site that crosses itself is repaired only up to this many vertices.")
    max_self_intersections: int = Field(50, ge=0, description="A site is repaired (or overlapping parts merged) only up to this many points where edges cross.")
    max_boundary_area_ha: float = Field(100.0, gt=0)
    tolerance_m2: float = Field(Tolerance.m2, ge=0, le=1e6, description="Overlaps below this many m² are slivers, listed as nearby.")
    tolerance_pct: float = Field(Tolerance.pct, ge=0, le=100, description="Overlaps below this % of the site are slivers.")

    check_process: bool = Field(True, description="Answer POST /v1/check in child processes forked from each worker (sharing its memory), so checks and the event loop never trade the GIL; off runs them on a thread in the worker. Always a thread where fork is missing or with live_fallback.")
    check_processes: int = Field(1, ge=1, le=64, description="Check processes per worker: each check goes to the one with the fewest waiting.")
    check_deadline_s: float = Field(5.0, gt=0, le=600, description="How long a check may take, queueing included, before it is abandoned with 503 and Retry-After; a check process that overruns it is killed and replaced.")

    require_keys: bool = Field(False, description="Refuse protected requests (503) whenever no API key is usable. Set by 'redline serve' off loopback; a service started with keys is closed that way anyway.")
    cors_origins: list[str] = Field(default_factory=list)
    rate_limit_per_s: float = Field(50.0, description="Token bucket refill rate per API key.")
    rate_limit_burst: int = Field(100, ge=1)
    public_read: bool = Field(True, description="Answer the platform-compatible reads (/entity*, /dataset*, /gis/{team}) without an API key, as the platform and PlanX do; keys stay mandatory for everything else.")
    anonymous_rate_limit_per_s: float = Field(10.0, description="Token bucket refill rate per client address for requests without an API key.")
    anonymous_rate_limit_burst: int = Field(1000, description="Burst per client address without a key: 20 back-to-back PlanX checks of about 30 requests each fit.")
    failed_auth_per_s: float = Field(0.1, description="Refill rate of each client address's allowance of failed authentications.")
    failed_auth_burst: int = Field(10, description="Failed authentications a client address may make before its keyed requests get 429.")
    auto_approve_working_days: int = Field(5, ge=0, le=365)

    basemap_archive: Path | None = Field(None, description="A raster tile archive served as the background map: .mbtiles (e.g. from QGIS 'Generate XYZ tiles') or .pmtiles.")
    basemap_url: str | None = Field(None, description="An XYZ tile URL with {z}/{x}/{y} (e.g. Ordnance Survey's Maps API, key included) fetched through redline, so the key never reaches a browser.")
    basemap_attribution: str | None = Field(None, description="The attribution the map shows (required by most providers, e.g. 'Contains OS data © Crown copyright and database rights 2026').")
    basemap_min_zoom: int = Field(0, ge=0, le=22, description="Lowest zoom of basemap_url (an archive says its own).")
    basemap_max_zoom: int = Field(19, ge=0, le=22, description="Highest zoom of basemap_url; the map enlarges those tiles beyond it.")
    basemap_cache_tiles: int = Field(2000, ge=0, description="Tiles of basemap_url kept in memory by each worker.")

    public_url: str | None = Field(None, description="This service's public base URL (https://redline.council.gov.uk): emails link to its applicant page.")
    notifications: dict[str, LocalAuthorityNotifications] = Field(default_factory=dict, description='Per local authority (as given when a boundary is created; "*" for every other one): webhook and GOV.UK Notify settings, as JSON.')
    delivery_poll_s: float = Field(2.0, description="How often each replica looks for notifications due (it also looks at once after each change).")
    delivery_lease_s: float = Field(60.0, description="How long a replica holds a notification it is sending before another may take it over.")
    delivery_backoff_s: float = Field(5.0, description="Wait before the first retry of a failed notification; doubled each time (at most an hour).")
    delivery_max_attempts: int = Field(12, ge=1, description="Attempts before a notification is marked failed (it can be replayed).")


@lru_cache
def get_settings() -> Settings:
    return Settings()


def platform_syncer(settings: Settings, cache, **hooks) -> Syncer:
    """The sync the settings describe: the platform's URLs, timeouts and retries, and the refusal rules.

    The service's background sync and ``redline datasets sync`` both take it from here. ``hooks`` are
    the :class:`~datasets.sync.Syncer`'s ``on_updated`` and ``progress``. The caller closes ``.client``.
    """
    from datasets.pdp import PlatformClient
    from datasets.sync import Syncer

    client = PlatformClient(
        settings.pdp_files_url,
        settings.pdp_api_url,
        connect_timeout=settings.pdp_connect_timeout_s,
        read_timeout=settings.pdp_read_timeout_s,
        retries=settings.pdp_retries,
        download_deadline=settings.pdp_download_deadline_s,
    )
    return Syncer(
        cache,
        client,
        min_fraction=settings.sync_min_fraction,
        count_tolerance=settings.sync_count_tolerance,
        stale_after_hours=settings.stale_after_hours,
        **hooks,
    )
