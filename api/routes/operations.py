"""``GET /metrics`` in the Prometheus text format, and the middleware that measures every request.

Measured: requests by route template, method and status; request latency histograms per route;
check latency (``/v1/check`` and ``/gis/{team}``); the index (features, build time) and, per dataset,
features, age and staleness. The middleware also stamps ``X-Redline-Data-Version`` on every answer
that does not carry it yet (health checks, errors), so a caller always knows which data it saw.

Why not ``prometheus_client``: a dozen series fit in a small lock-guarded registry, and the text
format is simple; with several uvicorn workers each process counts its own requests (scrape each
worker, or run one worker per container as usual).
"""

from __future__ import annotations

import bisect
import threading
import time
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from datasets.sync import is_stale

router = APIRouter(tags=["operations"])

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CHECK_ROUTES = {"/v1/check", "/gis/{team}"}
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


class Metrics:
    """Counters and histograms of this process, keyed by label tuples."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], Histogram] = {}
        self.checks = Histogram()
        self.entity_search_datasets: dict[tuple[str, str], int] = {}
        self.started = time.time()

    def count_entity_search_datasets(self, names: list[str], answered: str) -> None:
        """Datasets an entity search named that are not loaded here, by how they were answered."""
        with self.lock:
            for name in names:
                key = (name, answered)
                self.entity_search_datasets[key] = self.entity_search_datasets.get(key, 0) + 1

    def record(self, route: str, method: str, status: int, seconds: float, checked: bool) -> None:
        with self.lock:
            key = (route, method, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            hist = self.latency.get((route, method))
            if hist is None:
                hist = self.latency[(route, method)] = Histogram()
            hist.observe(seconds)
            if checked and status < 400:
                self.checks.observe(seconds)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels) -> str:
    return "{" + ",".join(f'{k}="{_label(str(v))}"' for k, v in labels.items()) + "}" if labels else ""


def _histogram(lines: list[str], name: str, hist: Histogram, **labels) -> None:
    cumulative = 0
    for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
        cumulative += count
        le = "+Inf" if bound == float("inf") else repr(bound)
        lines.append(f"{name}_bucket{_labels(**labels, le=le)} {cumulative}")
    lines.append(f"{name}_sum{_labels(**labels)} {hist.total:.6f}")
    lines.append(f"{name}_count{_labels(**labels)} {hist.n}")


def _age_seconds(stamp: str | None, now: float) -> float | None:
    if not stamp:
        return None
    try:
        return max(
            0.0, now - datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).timestamp()
        )
    except ValueError:
        return None


def render(app) -> str:
    """Every metric of this process in the Prometheus text exposition format."""
    metrics: Metrics = app.state.metrics
    lines: list[str] = []
    with metrics.lock:
        lines += [
            "# HELP redline_http_requests_total HTTP requests by route template, method and status.",
            "# TYPE redline_http_requests_total counter",
        ]
        for (route, method, status), n in sorted(metrics.requests.items()):
            lines.append(
                f"redline_http_requests_total{_labels(route=route, method=method, status=status)} {n}"
            )
        lines += [
            "# HELP redline_http_request_duration_seconds Time to answer a request, by route template.",
            "# TYPE redline_http_request_duration_seconds histogram",
        ]
        for (route, method), hist in sorted(metrics.latency.items()):
            _histogram(lines, "redline_http_request_duration_seconds", hist, route=route, method=method)
        lines += [
            "# HELP redline_check_duration_seconds Time to answer a constraints check (/v1/check, /gis), parsing to serialised answer.",
            "# TYPE redline_check_duration_seconds histogram",
        ]
        _histogram(lines, "redline_check_duration_seconds", metrics.checks)
        lines += [
            "# HELP redline_entity_search_unloaded_datasets_total Datasets named in an entity search that are not loaded here, by how they were answered (live: from the platform; not-loaded, live-failed: with no entities).",
            "# TYPE redline_entity_search_unloaded_datasets_total counter",
        ]
        for (name, answered), n in sorted(metrics.entity_search_datasets.items()):
            lines.append(f"redline_entity_search_unloaded_datasets_total{_labels(dataset=name, answered=answered)} {n}")
    now = time.time()
    lines += [
        "# HELP redline_process_start_time_seconds Start time of this process (Unix time).",
        "# TYPE redline_process_start_time_seconds gauge",
        f"redline_process_start_time_seconds {metrics.started:.3f}",
    ]
    index = app.state.index
    snap = index.snapshot if index is not None else None
    lines += [
        "# HELP redline_index_ready 1 when the constraint index is loaded and answering.",
        "# TYPE redline_index_ready gauge",
        f"redline_index_ready {1 if snap is not None else 0}",
    ]
    if snap is not None:
        lines += [
            "# HELP redline_index_features Entities held by the index.",
            "# TYPE redline_index_features gauge",
            f"redline_index_features {snap.features}",
            "# HELP redline_index_build_seconds Time the current index took to build.",
            "# TYPE redline_index_build_seconds gauge",
            f"redline_index_build_seconds {snap.build_seconds:.3f}",
            "# HELP redline_index_info The data version of the current index.",
            "# TYPE redline_index_info gauge",
            f"redline_index_info{_labels(data_version=snap.data_version)} 1",
        ]
        features, ages, stale = [], [], []
        for name, layer in sorted(snap.layers.items()):
            features.append(f"redline_dataset_features{_labels(dataset=name)} {len(layer)}")
            age = _age_seconds(layer.entry.get("loaded_at"), now)
            if age is not None:
                ages.append(f"redline_dataset_age_seconds{_labels(dataset=name)} {age:.0f}")
            flag = is_stale(layer.entry, stale_after_hours=app.state.settings.stale_after_hours)
            stale.append(f"redline_dataset_stale{_labels(dataset=name)} {int(flag)}")
        lines += [
            "# HELP redline_dataset_features Entities of each cached dataset.",
            "# TYPE redline_dataset_features gauge",
            *features,
        ]
        lines += [
            "# HELP redline_dataset_age_seconds Seconds since each dataset was loaded into the cache.",
            "# TYPE redline_dataset_age_seconds gauge",
            *ages,
        ]
        lines += [
            "# HELP redline_dataset_stale 1 when a platform dataset was not confirmed current for stale_after_hours (datasets.sync.is_stale).",
            "# TYPE redline_dataset_stale gauge",
            *stale,
        ]
    return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware on the hot path): times requests, labels them by
    route template (never the raw path, which would make a series per entity id), and adds the
    data-version header where a router did not."""

    def __init__(self, app, state_app=None) -> None:
        self.app = app
        self.state_app = state_app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status_holder = [500]
        owner = self.state_app

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-redline-data-version" for k, _ in headers):
                    index = owner.state.index
                    headers.append(
                        (
                            b"x-redline-data-version",
                            (index.data_version if index is not None else "none").encode(),
                        )
                    )
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # FastAPI's router sets the route; for a plain ASGI endpoint the endpoint names its own path
            route = scope.get("route") or scope.get("endpoint")
            template = getattr(route, "path", None) or "unmatched"
            state = scope.get("state") or {}
            checked = bool(state.get("checked")) if isinstance(state, dict) else False
            owner.state.metrics.record(
                template,
                scope.get("method", ""),
                status_holder[0],
                time.perf_counter() - started,
                checked or template in CHECK_ROUTES,
            )


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format 0.0.4"}},
)
def metrics(request: Request) -> Response:
    return Response(render(request.app), media_type=PROMETHEUS)


def install(app) -> list[type[Exception]]:
    app.state.metrics = Metrics()
    app.include_router(router)
    app.add_middleware(MetricsMiddleware, state_app=app)
    return []
