"""An HTTP client for the Planning Data Platform (planning.data.gov.uk).

Two hosts, as the platform runs them:

- ``files_url`` (``https://files.planning.data.gov.uk``) publishes each dataset nightly as a whole file at
  ``/dataset/{name}.parquet``, ``.geojson`` and ``.csv`` (the flattened layout: kebab-case columns, WKT);
- ``api_url`` (``https://www.planning.data.gov.uk``) answers ``/entity.json`` (search, paginated with
  ``links.next``), ``/entity/{id}.json`` and ``/dataset/{name}.json`` (metadata).

Every request has connect and read timeouts, and is retried on 429, 5xx and connection errors with
exponential backoff and jitter, waiting at least as long as the server's ``Retry-After`` says. Bulk files
are streamed to disk (never held in memory) with conditional GETs so an unchanged file costs one 304.

Usage::

    with PlatformClient() as client:
        got = client.download("conservation-area", "/tmp", previous=None)
        got.path, got.etag
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin

import httpx

DEFAULT_FILES_URL = "https://files.planning.data.gov.uk"
DEFAULT_API_URL = "https://www.planning.data.gov.uk"
FORMATS = ("parquet", "geojson", "csv")  # preference order: parquet is smallest and typed
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "redline (+https://github.com/redline; planning constraints cache)"


class PlatformError(RuntimeError):
    """The platform could not give what was asked; the message names the URL and what happened."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url, self.status = url, status


class NotFound(PlatformError):
    """404: the dataset, format or entity does not exist on the platform."""


class PlatformUnavailable(PlatformError):
    """Retries exhausted on timeouts, connection errors, 429 or 5xx."""


class Progress(Protocol):
    def update(self, n: int) -> Any: ...
    def close(self) -> Any: ...


ProgressFactory = Callable[[str, int | None], Progress]  # (description, total bytes or None) -> bar


@dataclass(frozen=True)
class Download:
    """A bulk file streamed to ``path`` (a temporary file the caller owns and deletes)."""

    dataset: str
    format: str
    url: str
    path: Path
    etag: str | None
    last_modified: str | None
    bytes: int
    seconds: float
    attempts: int


@dataclass(frozen=True)
class NotModified:
    """304: the copy described by ``previous`` is still the platform's current file."""

    dataset: str
    format: str
    url: str
    etag: str | None
    last_modified: str | None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def entity_count(metadata: dict) -> int | None:
    """``entity-count`` from ``/dataset/{name}.json``: an integer, or ``{"dataset", "count"}``."""
    raw = metadata.get("entity-count")
    if isinstance(raw, dict):
        raw = raw.get("count")
    try:
        return int(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        return None


METADATA_FIELDS = (
    "dataset",
    "name",
    "plural",
    "typology",
    "collection",
    "licence",
    "attribution",
    "attribution-text",
    "licence-text",
    "entry-date",
    "phase",
)


def normalise_metadata(raw: dict) -> dict:
    """The parts of a dataset's metadata worth keeping in the manifest, ``entity-count`` as an integer."""
    out = {k: raw[k] for k in METADATA_FIELDS if raw.get(k) not in (None, "")}
    out["entity-count"] = entity_count(raw)
    return out


class PlatformClient:
    """The platform over httpx, with timeouts and retries.

    Parameters
    ----------
    files_url, api_url
        Base URLs of the bulk file host and the API host (a fake platform in tests).
    connect_timeout, read_timeout
        Seconds to open a connection, and to wait for the next bytes of an answer.
    retries
        Extra attempts after the first on 429, 5xx, timeouts and connection errors.
    backoff, max_backoff
        The n-th retry waits between half and all of ``min(max_backoff, backoff * 2**n)`` seconds
        (jitter spreads a fleet of replicas that failed together), or ``Retry-After`` if longer.
    max_retry_after
        A ``Retry-After`` longer than this is not waited for: the request fails at once, saying so.
    formats
        Bulk formats in order of preference; the next is tried when one is missing (404).
    download_deadline
        Seconds one bulk file may take from first request to last byte, retries included: the read
        timeout alone never ends a download from a server that sends a byte now and then. None: none.
    """

    def __init__(
        self,
        files_url: str = DEFAULT_FILES_URL,
        api_url: str = DEFAULT_API_URL,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 300.0,
        formats: tuple[str, ...] = FORMATS,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
        download_deadline: float | None = None,
    ):
        self.download_deadline = download_deadline
        self.files_url = files_url.rstrip("/")
        self.api_url = api_url.rstrip("/")
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.max_retry_after = max_retry_after
        unknown = set(formats) - set(FORMATS)
        if unknown or not formats:
            raise ValueError(f"formats must be some of {FORMATS}, got {formats}")
        self.formats = tuple(formats)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._http = httpx.Client(
            timeout=self.timeout,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            follow_redirects=True,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- retries ---------------------------------------------------------------------------------
    def _delay(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self.max_backoff, self.backoff * (2**attempt))
        jittered = cap / 2 + self._rng.uniform(0, cap / 2)
        return max(jittered, retry_after or 0.0)

    def _give_up(self, url: str, attempts: int, why: str) -> PlatformUnavailable:
        return PlatformUnavailable(f"{url}: {why} (gave up after {attempts} attempts)", url=url)

    def _wait_before_retry(self, url: str, attempt: int, response: httpx.Response | None, why: str) -> None:
        """Sleep before the next attempt, or raise when there is none or Retry-After is too long."""
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        if retry_after is not None and retry_after > self.max_retry_after:
            raise PlatformUnavailable(
                f"{url}: {why}; the platform asks to retry after {retry_after:.0f} s, "
                f"longer than the {self.max_retry_after:.0f} s redline waits",
                url=url,
                status=response.status_code if response is not None else None,
            )
        if attempt >= self.retries:
            exc = self._give_up(url, attempt + 1, why)
            exc.status = response.status_code if response is not None else None
            raise exc
        self._sleep(self._delay(attempt, retry_after))

    def get_json(self, url: str, params: Any = None) -> Any:
        """GET a JSON document with retries; 404 raises :class:`NotFound`."""
        for attempt in range(self.retries + 1):
            try:
                response = self._http.get(url, params=params)
            except httpx.TransportError as exc:
                self._wait_before_retry(url, attempt, None, _describe(exc, self.timeout))
                continue
            if response.status_code in RETRY_STATUSES:
                self._wait_before_retry(url, attempt, response, f"HTTP {response.status_code}")
                continue
            if response.status_code == 404:
                raise NotFound(f"{response.url}: not found (404)", url=str(response.url), status=404)
            if response.status_code >= 400:
                raise PlatformError(
                    f"{response.url}: HTTP {response.status_code}: {response.text[:300]}",
                    url=str(response.url),
                    status=response.status_code,
                )
            try:
                return response.json()
            except ValueError:
                raise PlatformError(
                    f"{response.url}: the answer is not JSON", url=str(response.url)
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- API host --------------------------------------------------------------------------------
    def dataset_metadata(self, name: str) -> dict:
        """``/dataset/{name}.json``, normalised (see :func:`normalise_metadata`)."""
        return normalise_metadata(self.get_json(f"{self.api_url}/dataset/{name}.json"))

    def entity(self, entity: int | str) -> dict:
        """``/entity/{id}.json``: one entity with its fields and WKT geometry."""
        return self.get_json(f"{self.api_url}/entity/{entity}.json")

    def search_pages(
        self, params: list[tuple[str, str]] | dict, *, max_pages: int = 10_000
    ) -> Iterator[dict]:
        """``/entity.json`` page by page, following ``links.next`` until there is none."""
        url: str | None = f"{self.api_url}/entity.json"
        seen: set[str] = set()
        query = params
        for _ in range(max_pages):
            if url is None:
                return
            page = self.get_json(url, params=query)
            if not isinstance(page, dict) or "entities" not in page:
                raise PlatformError(f"{url}: not an entity search answer (no 'entities')", url=url)
            yield page
            nxt = (page.get("links") or {}).get("next")
            if not nxt:
                return
            # links.next is absolute on the platform; a relative one is resolved against the API host.
            url, query = urljoin(self.api_url + "/", nxt), None
            if url in seen:
                raise PlatformError(f"{url}: pagination loops back to a page already read", url=url)
            seen.add(url)
        raise PlatformError(f"/entity.json: more than {max_pages} pages; narrow the query")

    def search(self, params: list[tuple[str, str]] | dict, *, max_pages: int = 10_000) -> list[dict]:
        """Every entity an ``/entity.json`` query matches, over all pages; checks the count adds up."""
        entities: list[dict] = []
        count: int | None = None
        for page in self.search_pages(params, max_pages=max_pages):
            entities.extend(page["entities"])
            if page.get("count") is not None:
                count = int(page["count"])
        if count is not None and len(entities) < count:
            raise PlatformError(
                f"/entity.json said {count} entities match but its pages held {len(entities)}; "
                "the answer is incomplete",
            )
        return entities

    # -- files host ------------------------------------------------------------------------------
    def bulk_url(self, name: str, fmt: str) -> str:
        return f"{self.files_url}/dataset/{name}.{fmt}"

    def download(
        self,
        name: str,
        dest_dir: Path | str,
        *,
        previous: dict | None = None,
        progress: ProgressFactory | None = None,
    ) -> Download | NotModified:
        """Fetch a dataset's bulk file into ``dest_dir``, in the first format the platform has.

        ``previous`` (``{"url", "etag", "last_modified"}``) describes the copy already held: when its URL
        is the one asked for, the request is conditional and an unchanged file answers :class:`NotModified`.

        Raises
        ------
        NotFound
            When no format is published.
        PlatformUnavailable
            When retries are exhausted (timeouts, resets, 429, 5xx).
        PlatformError
            Any other HTTP error.
        """
        missing = []
        for fmt in self.formats:
            url = self.bulk_url(name, fmt)
            headers = {}
            if previous and previous.get("url") == url:
                if previous.get("etag"):
                    headers["If-None-Match"] = previous["etag"]
                if previous.get("last_modified"):
                    headers["If-Modified-Since"] = previous["last_modified"]
            try:
                return self._stream(name, fmt, url, Path(dest_dir), headers, progress)
            except NotFound:
                missing.append(fmt)
        raise NotFound(
            f"{name} is not published at {self.files_url}/dataset/ as {' or '.join(missing)}; "
            "is the dataset name right?",
            url=self.bulk_url(name, self.formats[0]),
            status=404,
        )

    def _stream(
        self,
        name: str,
        fmt: str,
        url: str,
        dest_dir: Path,
        headers: dict[str, str],
        progress: ProgressFactory | None,
    ) -> Download | NotModified:
        dest_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        deadline = started + self.download_deadline if self.download_deadline is not None else None

        def check_deadline(written: int) -> None:
            if deadline is not None and time.perf_counter() > deadline:
                raise PlatformUnavailable(
                    f"{url}: the download did not finish within {self.download_deadline:g} s "
                    f"({written} bytes arrived in the last attempt); the server is stalled or too slow",
                    url=url,
                )

        for attempt in range(self.retries + 1):
            check_deadline(0)
            fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}.", suffix=f".{fmt}.part")
            bar = None
            try:
                with os.fdopen(fd, "wb") as out, self._http.stream("GET", url, headers=headers) as response:
                    status = response.status_code
                    if status == 304:
                        return NotModified(
                            name,
                            fmt,
                            url,
                            response.headers.get("ETag") or headers.get("If-None-Match"),
                            response.headers.get("Last-Modified") or headers.get("If-Modified-Since"),
                        )
                    if status == 404:
                        raise NotFound(f"{url}: not found (404)", url=url, status=404)
                    if status in RETRY_STATUSES:
                        response.close()
                        self._wait_before_retry(url, attempt, response, f"HTTP {status}")
                        continue
                    if status != 200:
                        raise PlatformError(f"{url}: HTTP {status}", url=url, status=status)
                    total = response.headers.get("Content-Length")
                    total_n = int(total) if total and total.isdigit() else None
                    bar = progress(f"{name}.{fmt}", total_n) if progress else None
                    # Stored as served, unless the server compressed it in transit anyway.
                    encoded = response.headers.get("Content-Encoding", "identity") != "identity"
                    # Each read as it arrives (not gathered into fixed-size pieces), so the deadline is
                    # checked even while a server trickles bytes in.
                    chunks = response.iter_bytes() if encoded else response.iter_raw()
                    written = 0
                    for chunk in chunks:
                        out.write(chunk)
                        written += len(chunk)
                        check_deadline(written)
                        if bar is not None:
                            bar.update(len(chunk))
                    if (
                        total_n is not None and not encoded and written != total_n
                    ):  # h11 catches this too; be explicit
                        raise httpx.RemoteProtocolError(f"body ended after {written} of {total_n} bytes")
                    out.flush()
                    os.fsync(out.fileno())
                final = Path(tmp)
                tmp = None  # handed to the caller
                return Download(
                    name,
                    fmt,
                    url,
                    final,
                    response.headers.get("ETag"),
                    response.headers.get("Last-Modified"),
                    written,
                    time.perf_counter() - started,
                    attempt + 1,
                )
            except httpx.TransportError as exc:
                why = _describe(exc, self.timeout)
                _unlink(tmp)
                tmp = None
                self._wait_before_retry(url, attempt, None, why)
            finally:
                if bar is not None:
                    bar.close()
                _unlink(tmp)
        raise AssertionError("unreachable")  # pragma: no cover


def _unlink(path: str | None) -> None:
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _describe(exc: httpx.TransportError, timeout: httpx.Timeout) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {timeout.connect} s"
    if isinstance(exc, httpx.ReadTimeout):
        return f"no data for {timeout.read} s (read timeout)"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({exc})"
    return f"{type(exc).__name__}: {exc or 'connection failed'}"


def http_date(ts: datetime | float) -> str:
    """An HTTP date (for If-Modified-Since) from a datetime or a POSIX time."""
    if isinstance(ts, datetime):
        ts = ts.timestamp()
    return email.utils.formatdate(ts, usegmt=True)
