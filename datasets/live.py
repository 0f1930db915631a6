"""Live fallback: ask the platform's entity search for datasets that are not cached.

Off by default. When on, the check sends the site to ``/entity.json`` with
``geometry_relation=intersects`` for the datasets it has no copy of, reads every page (``links.next``
until there is none: no silent cut at one page), and marks those keys' provenance ``live``. The same
question within ``ttl_seconds`` is answered from memory. A failed call raises :class:`LiveLookupError`
and the check reports those keys ``unknown`` with the reason, never clear.

Interface the check relies on (duck-typed)::

    live.lookup(site_wkt: str, datasets: list[str]) -> dict[str, list[dict]]   # raises LiveLookupError
    live.source -> "live"                                                    # for provenance
    live.api_url -> str                                                      # where answers came from
"""

from __future__ import annotations

import threading

from cachetools import TTLCache

from .pdp import DEFAULT_API_URL, PlatformClient, PlatformError

PAGE_LIMIT = 500  # the platform's maximum page size


class LiveLookupError(RuntimeError):
    """The platform could not answer; the message says why, for the check's ``reason``."""

    def __init__(self, message: str, datasets: list[str]):
        super().__init__(message)
        self.datasets = datasets


class LiveLookup:
    """Platform entity search for a site, cached for a while.

    Parameters
    ----------
    api_url
        The platform's API host (``REDLINE_PDP_API_URL``).
    ttl_seconds, maxsize
        How long, and how many, distinct (site, datasets) answers are kept.
    exclude_fields
        Fields left out of the answer; geometry and point by default, as PlanX asks, because a
        national park's outline is megabytes. Pass ``()`` to have geometries (as WKT) for overlaps.
    connect_timeout, read_timeout, retries
        As :class:`PlatformClient`; keep them short, a person is waiting for the check.
    client
        A ready client instead (tests, a shared connection pool).
    """

    source = "live"

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        *,
        ttl_seconds: float = 300.0,
        maxsize: int = 1024,
        exclude_fields: tuple[str, ...] = ("geometry", "point"),
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        retries: int = 1,
        backoff: float = 0.2,
        client: PlatformClient | None = None,
    ):
        self.client = client or PlatformClient(
            api_url=api_url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries=retries,
            backoff=backoff,
            max_retry_after=2.0,  # an interactive check cannot wait out a long Retry-After
        )
        self.api_url = self.client.api_url
        self.exclude_fields = tuple(exclude_fields)
        self._cache: TTLCache = TTLCache(maxsize=maxsize, ttl=ttl_seconds)
        self._lock = threading.Lock()
        self.calls = 0  # platform queries made (cache misses), for metrics and tests

    def close(self) -> None:
        self.client.close()

    def lookup(self, site_wkt: str, datasets: list[str]) -> dict[str, list[dict]]:
        """Entities of ``datasets`` intersecting the site, keyed by dataset (every asked dataset present).

        Raises
        ------
        LiveLookupError
            When the platform fails (after retries) or answers something incomplete.
        """
        names = sorted(set(datasets))
        if not names:
            return {}
        key = (site_wkt, tuple(names))
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return {name: list(rows) for name, rows in hit.items()}
        params: list[tuple[str, str]] = [
            ("geometry", site_wkt),
            ("geometry_relation", "intersects"),
            ("limit", str(PAGE_LIMIT)),
        ]
        params += [("dataset", name) for name in names]
        if self.exclude_fields:
            params.append(("exclude_field", ",".join(self.exclude_fields)))
        try:
            self.calls += 1
            entities = self.client.search(params)
        except PlatformError as exc:
            raise LiveLookupError(f"live lookup at {self.api_url} failed: {exc}", names) from exc
        answer: dict[str, list[dict]] = {name: [] for name in names}
        for entity in entities:
            answer.setdefault(entity.get("dataset", ""), []).append(entity)
        answer = {name: rows for name, rows in answer.items() if name in answer and name}
        with self._lock:
            self._cache[key] = answer
        return {name: list(rows) for name, rows in answer.items()}

    def search(self, params: list[tuple[str, str]]) -> list[dict]:
        """Every entity the platform's ``/entity.json`` answers ``params`` with, over all its pages.

        For the entity search's datasets that are not cached here: the caller's own query, asked
        of the platform. Identical queries within ``ttl_seconds`` are answered from memory.

        Raises
        ------
        LiveLookupError
            When the platform fails (after retries) or its pages do not add up to its count.
        """
        params = [(k, v) for k, v in params if k not in ("limit", "offset")] + [("limit", str(PAGE_LIMIT))]
        key = ("search", tuple(params))
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return list(hit)
        names = [v for k, v in params if k == "dataset"]
        try:
            self.calls += 1
            entities = self.client.search(params)
        except PlatformError as exc:
            raise LiveLookupError(f"live search at {self.api_url} failed: {exc}", names) from exc
        with self._lock:
            self._cache[key] = entities
        return list(entities)
