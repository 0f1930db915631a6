"""A local stand-in for the Planning Data Platform, served over real HTTP on 127.0.0.1.

It serves what ``files.planning.data.gov.uk`` and ``www.planning.data.gov.uk`` serve, shaped like them:

- ``/dataset/{name}.parquet|.geojson|.csv``: bulk files with ``ETag`` and ``Last-Modified``, answering
  ``If-None-Match`` / ``If-Modified-Since`` with 304, and 404 for formats a dataset is not published in;
- ``/entity.json``: the entity search (``dataset``, ``geometry`` WKT, ``geometry_relation`` defaulting to
  ``within``, ``entity``, ``limit`` default 10 max 500, ``offset``, ``field``, ``exclude_field``), answering
  ``{"entities", "links", "count"}`` with absolute ``first/prev/next/last`` links and empty strings for nulls;
- ``/entity/{id}.json`` and ``/dataset/{name}.json`` (``/dataset.json`` lists them).

Faults are injected per path with :meth:`FakePlatform.fault`; every request is logged in
:attr:`FakePlatform.requests` so tests can see exactly what the client did.

Run it by hand with ``python -m tests.fake_platform [PORT]`` to point ``redline datasets sync`` at it.
"""

from __future__ import annotations

import csv
import email.utils
import hashlib
import io
import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pyarrow.parquet as pq
import pytest
import shapely

__all__ = ["platform"]  # the fixture a test module star-imports; the rest is imported by name

DATA = Path(__file__).resolve().parent / "data" / "pdp"
FORMATS = ("parquet", "geojson", "csv")
RELATIONS = {
    "within": shapely.within,
    "intersects": shapely.intersects,
    "contains": shapely.contains,
    "covers": shapely.covers,
    "coveredby": shapely.covered_by,
    "overlaps": shapely.overlaps,
    "touches": shapely.touches,
    "crosses": shapely.crosses,
    "equals": shapely.equals,
    "disjoint": shapely.disjoint,
}


@dataclass
class Published:
    body: bytes
    etag: str
    last_modified: float


@dataclass
class Fault:
    """One injected misbehaviour: ``kind`` is ``status`` (with ``status`` and optional ``retry_after``),
    ``reset`` (send headers and half the body, then a TCP RST), ``truncate`` (a complete response whose
    body is the first half of the file), ``cut`` (a complete response holding the first ``fraction``
    of the file's rows, cut at a row boundary, as a proxy or a half-built file gives), ``empty`` (200
    with no body), ``hang`` (say nothing for ``seconds``) or ``drip`` (the headers, then one byte of
    the body every ``seconds``, for as long as the client waits)."""

    kind: str
    times: int | None = 1  # None: every time
    status: int = 500
    retry_after: str | None = None
    seconds: float = 5.0
    fraction: float = 0.5


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int | None = None
    sent_bytes: int = 0
    at: float = field(default_factory=time.monotonic)


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def _rows_from_file(path: Path) -> list[dict]:
    """Entity rows (platform field names, strings, geometry as WKT) from one bulk file."""
    if path.suffix == ".parquet":
        return [{k: ("" if v is None else v) for k, v in r.items()} for r in pq.read_table(path).to_pylist()]
    if path.suffix == ".csv":
        csv.field_size_limit(1 << 30)
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    rows = []
    for feat in json.loads(path.read_text())["features"]:
        row = dict(feat["properties"])
        row["geometry"] = shapely.geometry.shape(feat["geometry"]).wkt if feat["geometry"] else ""
        rows.append(row)
    return rows


@pytest.fixture
def platform():
    """A fake platform for one test (a test module imports this fixture by name)."""
    with FakePlatform() as fake:
        yield fake


class FakePlatform:
    """The fake platform; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, data_dir: Path = DATA, host: str = "127.0.0.1", port: int = 0):
        self.host, self._port = host, port
        self.files: dict[str, Published] = {}
        self.metadata: dict[str, dict] = {}
        self.faults: dict[str, deque[Fault]] = {}
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._clock = 1_700_000_000.0  # fixed, so Last-Modified is deterministic; bumped on each publish
        for path in sorted((data_dir / "metadata").glob("*.json")):
            self.metadata[path.stem] = json.loads(path.read_text())
        for path in sorted((data_dir / "files").iterdir()):
            self.publish_file(path.name, path.read_bytes())
        self._entities: list[dict] | None = None
        self.server: ThreadingHTTPServer | None = None

    # -- content ---------------------------------------------------------------------------------
    def publish_file(self, filename: str, body: bytes) -> Published:
        """Publish (or replace) ``/dataset/{filename}`` as the platform's nightly rebuild would."""
        with self._lock:
            self._clock += 3600
            pub = Published(body, _etag(body), self._clock)
            self.files[filename] = pub
            self._entities = None
            self._count_entities(filename, body)
            return pub

    def _count_entities(self, filename: str, body: bytes) -> None:
        """The rebuild updates the dataset's published ``entity-count`` too, as the platform's does."""
        name = filename.rsplit(".", 1)[0]
        meta = self.metadata.get(name)
        if meta is None:
            return
        try:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / filename
                path.write_bytes(body)
                count = len(_rows_from_file(path))
        except Exception:  # a deliberately broken file: the count stays what it was
            return
        current = meta.get("entity-count")
        meta["entity-count"] = {**current, "count": count} if isinstance(current, dict) else count

    def unpublish(self, filename: str) -> None:
        with self._lock:
            self.files.pop(filename, None)
            self._entities = None

    def entities(self) -> list[dict]:
        """Every entity in the published files (the first published format of each dataset)."""
        with self._lock:
            if self._entities is None:
                import tempfile

                seen: set[str] = set()
                rows: list[dict] = []
                for filename in sorted(self.files, key=lambda f: FORMATS.index(f.rsplit(".", 1)[1])):
                    name, fmt = filename.rsplit(".", 1)
                    if name in seen or not self.files[filename].body:
                        continue
                    seen.add(name)
                    with tempfile.TemporaryDirectory() as tmp:
                        p = Path(tmp) / filename
                        p.write_bytes(self.files[filename].body)
                        try:
                            rows += _rows_from_file(p)
                        except Exception:  # a deliberately broken file has no entities to search
                            continue
                for r in rows:
                    r["entity"] = int(r["entity"])
                    wkt = r.get("geometry") or r.get("point") or ""
                    r["_geom"] = shapely.from_wkt(wkt) if wkt else None
                self._entities = sorted(rows, key=lambda r: r["entity"])
            return self._entities

    # -- faults ----------------------------------------------------------------------------------
    def fault(self, path: str, kind: str, *, times: int | None = 1, **kwargs) -> None:
        """Queue a fault for requests to ``path`` (e.g. ``/dataset/tree.parquet``)."""
        with self._lock:
            self.faults.setdefault(path, deque()).append(Fault(kind, times=times, **kwargs))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self.faults.get(path)
            if not queue:
                return None
            f = queue[0]
            if f.times is not None:
                f.times -= 1
                if f.times <= 0:
                    queue.popleft()
            return f

    # -- server ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self.server is not None, "start() the platform first"
        return f"http://{self.host}:{self.server.server_address[1]}"

    def start(self) -> FakePlatform:
        handler = type("Handler", (_Handler,), {"platform": self})
        self.server = _Server((self.host, self._port), handler)
        threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="fake-platform", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self) -> FakePlatform:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def bulk_requests(self, dataset: str | None = None) -> list[LoggedRequest]:
        return [
            r
            for r in self.requests
            if r.path.startswith("/dataset/")
            and r.path.rsplit(".", 1)[-1] in FORMATS
            and (dataset is None or r.path.rsplit("/", 1)[1].rsplit(".", 1)[0] == dataset)
        ]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Resets and hangs are deliberate here; only unexpected errors are worth a traceback.
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    platform: FakePlatform
    protocol_version = "HTTP/1.1"
    server_version = "fake-planning-data/1.0"

    def log_message(self, format, *args):  # the request log is kept in platform.requests instead
        pass

    def finish(self):
        try:
            super().finish()
        except OSError:  # the socket was reset on purpose
            pass

    # -- plumbing --------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        # Logged before a byte is sent: the client may read the answer and the test look at the log
        # before this thread runs another line.
        self._log.status, self._log.sent_bytes = status, (0 if self.command == "HEAD" else len(body))
        self.send_response(status)
        headers = {"Content-Length": str(len(body))} | (headers or {})
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        parts = urlsplit(self.path)
        self._log = LoggedRequest(
            self.command, parts.path, parse_qs(parts.query, keep_blank_values=True), dict(self.headers)
        )
        self.platform.requests.append(self._log)
        fault = self.platform._take_fault(parts.path)
        if fault is not None and self._apply_fault(fault, parts.path):
            return
        path = parts.path
        try:
            if path.startswith("/dataset/") and path.rsplit(".", 1)[-1] in FORMATS:
                return self._bulk(path.removeprefix("/dataset/"))
            if path == "/entity.json":
                return self._search(self._log.query)
            if path.startswith("/entity/") and path.endswith(".json"):
                return self._entity(path.removeprefix("/entity/").removesuffix(".json"))
            if path == "/dataset.json":
                return self._json({"datasets": list(self.platform.metadata.values())})
            if path.startswith("/dataset/") and path.endswith(".json"):
                name = path.removeprefix("/dataset/").removesuffix(".json")
                if name in self.platform.metadata:
                    return self._json(self.platform.metadata[name])
            self._json({"detail": "Not Found"}, 404)
        except ValueError as exc:
            self._json({"detail": [{"msg": str(exc)}]}, 422)

    def _apply_fault(self, fault: Fault, path: str) -> bool:
        """Misbehave; True when the request is done with."""
        if fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._send(fault.status, b"fault injected", headers | {"Content-Type": "text/plain"})
            return True
        if fault.kind == "hang":
            self.platform._stopping.wait(fault.seconds)
            self.close_connection = True
            return True
        pub = self.platform.files.get(path.removeprefix("/dataset/"))
        body = pub.body if pub else b""
        half = body[: len(body) // 2]
        if fault.kind == "empty":
            self._send(200, b"", {"ETag": _etag(b"")})
            return True
        if fault.kind == "truncate":
            self._send(200, half, {"ETag": _etag(half), "Content-Type": "application/octet-stream"})
            return True
        if fault.kind == "cut":
            cut = make_fraction(body, path.rsplit(".", 1)[1], fault.fraction)
            self._send(200, cut, {"ETag": _etag(cut), "Content-Type": "application/octet-stream"})
            return True
        if fault.kind == "drip":
            self._log.status = 200
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.close_connection = True
            try:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    self._log.sent_bytes += 1
                    if self.platform._stopping.wait(fault.seconds):
                        break
            except OSError:  # the client gave up
                pass
            return True
        if fault.kind == "reset":
            self._log.status, self._log.sent_bytes = 200, len(half)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(half)
            self.wfile.flush()
            # SO_LINGER 0 turns close() into a TCP RST: the client sees "connection reset by peer".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return True
        raise ValueError(f"unknown fault {fault.kind!r}")

    # -- endpoints -------------------------------------------------------------------------------
    def _bulk(self, filename: str) -> None:
        pub = self.platform.files.get(filename)
        if pub is None:
            return self._send(
                404, b"<Error><Code>NoSuchKey</Code></Error>", {"Content-Type": "application/xml"}
            )
        last_modified = email.utils.formatdate(pub.last_modified, usegmt=True)
        validators = {"ETag": pub.etag, "Last-Modified": last_modified}
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        # RFC 9110 13.2.2: If-None-Match wins; If-Modified-Since only counts without it.
        if inm is not None:
            if pub.etag in [t.strip() for t in inm.split(",")] or inm.strip() == "*":
                return self._send(304, b"", validators | {"Content-Length": "0"})
        elif ims is not None:
            since = email.utils.parsedate_to_datetime(ims).timestamp()
            if pub.last_modified <= since:
                return self._send(304, b"", validators | {"Content-Length": "0"})
        ctype = {
            "parquet": "application/vnd.apache.parquet",
            "csv": "text/csv",
            "geojson": "application/geo+json",
        }
        self._send(200, pub.body, validators | {"Content-Type": ctype[filename.rsplit(".", 1)[1]]})

    @staticmethod
    def _public(row: dict, exclude: set[str], only: set[str]) -> dict:
        out = {k: ("" if v is None else v) for k, v in row.items() if not k.startswith("_")}
        if only:
            out = {k: v for k, v in out.items() if k in only}
        return {k: v for k, v in out.items() if k not in exclude}

    def _entity(self, ident: str) -> None:
        for row in self.platform.entities():
            if str(row["entity"]) == ident:
                return self._json(self._public(row, set(), set()))
        self._json({"detail": "Not Found"}, 404)

    def _search(self, q: dict[str, list[str]]) -> None:
        def many(name: str) -> list[str]:
            return [v for raw in q.get(name, []) for v in raw.split(",") if v]

        limit = int(q.get("limit", ["10"])[0])
        offset = int(q.get("offset", ["0"])[0])
        if not 1 <= limit <= 500:
            raise ValueError("limit must be between 1 and 500")
        rows = self.platform.entities()
        if datasets := many("dataset"):
            rows = [r for r in rows if r["dataset"] in datasets]
        if entities := many("entity"):
            rows = [r for r in rows if str(r["entity"]) in entities]
        if geometries := q.get("geometry"):
            relation = q.get("geometry_relation", ["within"])[0]
            pred = RELATIONS[relation]
            try:
                sites = [shapely.from_wkt(g) for g in geometries]
            except shapely.errors.GEOSException as exc:
                raise ValueError(f"Invalid WKT: {exc}") from None
            rows = [r for r in rows if r["_geom"] is not None and any(pred(r["_geom"], s) for s in sites)]
        count = len(rows)
        page = rows[offset : offset + limit]
        exclude, only = set(many("exclude_field")), set(many("field"))
        links: dict[str, str] = {}
        if count > limit:  # the platform answers {} when everything fits on one page

            def link(off: int) -> str:
                params = [(k, v) for k, vs in q.items() if k != "offset" for v in vs] + [("offset", str(off))]
                return f"{self.platform.url}/entity.json?{urlencode(params)}"

            last = ((count - 1) // limit) * limit
            links = {"first": link(0), "last": link(last)}
            if offset > 0:
                links["prev"] = link(max(0, offset - limit))
            if offset + limit < count:
                links["next"] = link(offset + limit)
        self._json(
            {"entities": [self._public(r, exclude, only) for r in page], "links": links, "count": count}
        )


def make_fraction(body: bytes, fmt: str, fraction: float) -> bytes:
    """The same bulk file keeping only the first ``fraction`` of its rows (a partial nightly build)."""
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(body))
        out = io.BytesIO()
        pq.write_table(table.slice(0, int(table.num_rows * fraction)), out)
        return out.getvalue()
    if fmt == "geojson":
        obj = json.loads(body)
        obj["features"] = obj["features"][: int(len(obj["features"]) * fraction)]
        return json.dumps(obj).encode()
    lines = body.decode().splitlines(keepends=True)
    return "".join(lines[: 1 + int((len(lines) - 1) * fraction)]).encode()


if __name__ == "__main__":
    import sys

    with FakePlatform(port=int(sys.argv[1]) if len(sys.argv) > 1 else 8765) as fp:
        print(f"fake Planning Data Platform on {fp.url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
