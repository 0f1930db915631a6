"""The FastAPI application: wiring only. Routers are in ``api/routes``; the work is in the core packages."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from constraints.index import ConstraintIndex
from datasets.cache import LayerCache
from datasets.catalogue import load_catalogue
from datasets.live import LiveLookup
from datasets.samples import load_samples
from datasets.sync import BackgroundSync

from . import __version__, errors
from .bodies import BodyLimit
from .check_process import CheckProcessRunner, fork_available
from .check_thread import CheckThread
from .keys import KeyStore
from .ratelimit import SharedBuckets
from .routes import check, health
from .settings import Settings, get_settings, platform_syncer

log = logging.getLogger("redline.api")
STATIC = Path(__file__).parent / "static"


def _load_index(app: FastAPI) -> None:
    """Build the index off the event loop so /healthz answers while layers load."""
    state = app.state
    try:
        cache = state.cache
        if state.settings.load_samples and not cache.datasets():
            loaded = load_samples(cache)
            log.info("loaded %d bundled sample layers into the empty cache %s", len(loaded), cache.root)
        state.index = ConstraintIndex.from_cache(
            cache,
            state.catalogue,
            live=state.live,
            stale_after_hours=state.settings.stale_after_hours,
            limits=check.site_limits(state.settings),
        )
    except Exception as err:  # reported by /readyz; the process stays up to say so
        log.exception("the constraint index failed to load")
        state.load_error = f"the constraint index failed to load: {err}"


async def _watch_cache(app: FastAPI) -> None:
    """Pick up a cache written by another process (a sync job, another replica) without a restart."""
    while True:
        await asyncio.sleep(app.state.settings.reload_poll_s)
        index = app.state.index
        if index is not None:
            try:
                await asyncio.to_thread(index.reload_if_changed)
            except RuntimeError as err:
                if "shutdown" in str(err):  # the loop's executor is closing: the service is stopping
                    return
                log.exception("reloading the index failed; still serving the previous data")
            except Exception:
                log.exception("reloading the index failed; still serving the previous data")


def _start_background_sync(app: FastAPI):
    """The service's own sync scheduler (off by default: most deployments run one scheduled job)."""
    settings = app.state.settings
    if not settings.sync_interval_s:
        return None

    def reload(_names):
        if app.state.index is not None:
            app.state.index.reload()

    syncer = platform_syncer(settings, app.state.cache, on_updated=reload)
    return BackgroundSync(syncer, app.state.catalogue.platform_datasets(), settings.sync_interval_s).start()


class RedlineAPI(FastAPI):
    """FastAPI with one shortcut: ``POST /v1/check``, the hot path, goes straight to its endpoint.

    It still passes through the app's own middleware (metrics, CORS) and exception handlers, but not
    FastAPI's outer layers (telemetry, body limit, server-error, exit-stack middleware) or the router's
    walk over every route, which together cost about a fifth of a check. Every other request, and a
    check with another method, takes the normal way.
    """

    fast_paths: dict[tuple[str, str], object]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # each fast path's middleware stack, by endpoint: built on first use, once every middleware is added
        self._fast_stacks: dict[int, object] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            endpoint = self.fast_paths.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self
                scope["endpoint"] = endpoint
                return await self._fast_stack(endpoint)(scope, receive, send)
        return await super().__call__(scope, receive, send)

    def _fast_stack(self, endpoint):
        stack = self._fast_stacks.get(id(endpoint))
        if stack is None:
            stack = errors.answering_errors(self, endpoint)
            for cls, args, kwargs in reversed(self.user_middleware):
                stack = cls(stack, *args, **kwargs)
            self._fast_stacks[id(endpoint)] = stack
        return stack


def create_app(settings: Settings | None = None, *, load_in_background: bool = True) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(target=_load_index, args=(app,), daemon=True)
        loader.start()
        if not load_in_background:
            await asyncio.to_thread(loader.join)
        watcher = asyncio.create_task(_watch_cache(app))
        background_sync = _start_background_sync(app)
        for start in app.state.on_startup:
            await start(app)
        try:
            yield
        finally:
            watcher.cancel()
            if background_sync is not None:
                await asyncio.to_thread(background_sync.stop)
            if app.state.live is not None:
                app.state.live.close()
            for stop in app.state.on_shutdown:
                await stop(app)
            await asyncio.to_thread(app.state.check_thread.stop)
            for process in app.state.check_process.close() if app.state.check_process is not None else ():
                # reaped here, so no check process outlives its worker: one that is stuck is killed
                if not await asyncio.to_thread(process.exited.wait, settings.check_deadline_s + 1):
                    process.kill("the service is stopping")
                    await asyncio.to_thread(process.exited.wait, 5)

    app = RedlineAPI(
        title="redline",
        version=__version__,
        description="Planning constraints checks and red-line boundaries for English local planning authorities. "
        "Every error is application/problem+json (RFC 9457).",
        lifespan=lifespan,
        docs_url=None,  # api/routes/docs.py serves it with the vendored Swagger UI, so it works offline
        redoc_url=None,
    )
    state = app.state
    state.settings = settings
    state.cache = LayerCache(settings.data_dir)
    state.catalogue = load_catalogue(settings.local_catalogue, settings.article4_dir)
    state.keys = KeyStore(settings.data_dir, required=settings.require_keys)
    state.rate_limits = SharedBuckets(Path(settings.data_dir) / "ratelimit.bin")
    state.index = None
    state.load_error = None
    state.live = LiveLookup(settings.pdp_api_url, ttl_seconds=settings.live_cache_ttl_s) if settings.live_fallback else None
    state.check_thread = CheckThread(deadline_s=settings.check_deadline_s)
    # the live fallback's HTTP client must not be shared with a forked child: those checks stay on the thread
    use_process = settings.check_process and fork_available() and state.live is None
    state.check_process = CheckProcessRunner(lambda snapshot: functools.partial(check.answer_check, state.index, state.catalogue, check.site_limits(settings), snapshot=snapshot), size=settings.check_processes, deadline_s=settings.check_deadline_s) if use_process else None
    state.on_startup = []
    state.on_shutdown = []

    domain_errors: list[type[Exception]] = []
    app.include_router(health.router)
    check_endpoint = check.CheckEndpoint()
    app.router.add_route("/v1/check", check_endpoint, methods=["POST"], include_in_schema=False)
    app.fast_paths = {("POST", "/v1/check"): check_endpoint}
    fastapi_openapi = app.openapi
    app.openapi = lambda: errors.declare_problems(check.document(fastapi_openapi()))
    for extend in _extensions():
        domain_errors.extend(extend(app) or ())
    errors.install(app, tuple(domain_errors))
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)  # inside CORS, so a 413 carries its headers
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"])
    return app


def _extensions():
    """Optional parts of the service, each a function that adds its routers to the app."""
    found = []
    for module_name in ("api.routes.platform", "api.routes.boundaries", "api.routes.deliveries", "api.routes.basemap", "api.routes.operations", "api.routes.widget", "api.routes.docs"):
        try:
            module = __import__(module_name, fromlist=["install"])
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        found.append(module.install)
    return found
