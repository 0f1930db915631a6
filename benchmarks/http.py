"""HTTP throughput of ``POST /v1/check``: ``redline serve`` on loopback driven by wrk (or an async httpx client).

    python -m benchmarks.http --scale S --seconds T --concurrency C [--workers N] [--check-processes P]

``--scale 0`` serves the bundled samples with sites on their real features; ``--scale S > 0`` fills a
cache with ``benchmarks.synth`` layers at that scale (cached under ``.redline-bench/``) and uses its
realistic query sites. The server is ``redline serve --workers N --check-processes P`` (uvicorn workers
on their own ``SO_REUSEPORT`` sockets, each answering checks from P forked check processes), measured
once every worker answers ``/readyz``; the load generator (wrk when installed, else a bounded async
httpx client) keeps exactly C requests in flight, first for the warm-up (reported apart, under
``warmup``), then for T seconds. Afterwards the same sites go through the in-process check, so the
HTTP cost can be told apart from the check's own. Prints ONE JSON line: ``{"rps", "p50_ms", "p99_ms",
"errors", "workers", "concurrency", "in_process_p50_us", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import shapely

from benchmarks.common import emit, log, percentile


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_sites(cache, n: int, seed: int) -> list:
    """Realistic sites over the samples: small polygons on listed buildings, outlines and area edges."""
    rng = np.random.default_rng(seed)
    anchors = []
    for name, share in (
        ("listed-building", 0.4),
        ("listed-building-outline", 0.2),
        ("conservation-area", 0.2),
        ("scheduled-monument", 0.2),
    ):
        frame = cache.read(name)
        geoms = frame.geometry.to_numpy()
        picks = geoms[rng.integers(0, len(geoms), max(1, int(n * share)))]
        anchors += list(shapely.get_coordinates(shapely.point_on_surface(picks)))
    sites = []
    for lon, lat in anchors[:n]:
        half = rng.uniform(0.0001, 0.0008)  # ~15 to 110 m across
        sites.append(shapely.box(lon - half, lat - half * 0.62, lon + half, lat + half * 0.62))
    return sites


def prepare(scale: float, n: int, seed: int) -> tuple[Path, list]:
    from datasets.cache import LayerCache

    if scale == 0:
        from datasets.samples import load_samples

        root = Path(tempfile.mkdtemp(prefix="redline-bench-http-"))
        cache = LayerCache(root)
        load_samples(cache)
        return root, sample_sites(cache, n, seed)
    from benchmarks.check import ensure_sites, read_sites
    from benchmarks.synth import cached_layers

    root = cached_layers(scale, seed)
    return root, read_sites(ensure_sites(root, n, seed))


def in_process_times_us(root: Path, bodies: list[bytes], warmup_s: float = 10.0) -> np.ndarray:
    """The same sites through ``ConstraintIndex.check`` in this process, in µs: three passes after
    ``warmup_s`` of checks, since a freshly built index runs slower for its first seconds here (as
    the server's does, which is why its warm-up is measured apart)."""
    from constraints.index import ConstraintIndex
    from datasets.cache import LayerCache
    from datasets.catalogue import load_catalogue

    index = ConstraintIndex.from_cache(LayerCache(root), load_catalogue())
    deadline = time.monotonic() + warmup_s
    while time.monotonic() < deadline:
        for body in bodies[:50]:
            index.check(body)
    times = []
    for _ in range(3):
        for body in bodies:
            started = time.perf_counter_ns()
            index.check(body)
            times.append(time.perf_counter_ns() - started)
    return np.asarray(times) / 1e3


class StallWatch:
    """How late a thread that sleeps 10 ms at a time wakes up while the load runs, and the CPU time
    the host took from this virtual machine (``steal`` in /proc/stat).

    The server saturates both cores, but a thread that has been sleeping is scheduled ahead of busy
    ones, so it wakes within a few ms. Far later means the whole machine stalled (a virtual machine's
    CPUs taken by its host, say), and a p99 from that run says more about the machine than the code.
    It sleeps 10 ms, not 1: waking a thousand times a second cost the server about 5 % of its rate.
    """

    def __init__(self) -> None:
        import threading

        self.late_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._steal = [None, None]

    def _watch(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            time.sleep(0.01)
            self.late_ms.append((time.perf_counter() - started - 0.01) * 1e3)

    @staticmethod
    def _steal_ticks() -> int | None:
        try:
            with open("/proc/stat") as stat:
                fields = stat.readline().split()
            return int(fields[8])
        except (OSError, IndexError, ValueError):
            return None

    def __enter__(self) -> StallWatch:
        self._steal[0] = self._steal_ticks()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._steal[1] = self._steal_ticks()

    def summary(self) -> dict:
        late = np.asarray(self.late_ms or [0.0])
        before, after = self._steal
        steal = None if before is None or after is None else round((after - before) * 1000 / os.sysconf("SC_CLK_TCK"))
        return {"stall_p99_ms": round(percentile(late, 99), 2), "stall_max_ms": round(float(late.max()), 1), "steal_ms": steal}


def start_server(root: Path, port: int, workers: int, check_processes: int = 1) -> subprocess.Popen:
    env = os.environ | {
        "REDLINE_DATA_DIR": str(root),
        "REDLINE_LOAD_SAMPLES": "false",
        # the benchmark is one caller at full speed, keyed or not: rate limits (per key and, with no keys, per
        # address, shared by the workers) are out of its way, as a deployment sets them for a trusted client
        "REDLINE_RATE_LIMIT_PER_S": "1000000",
        "REDLINE_RATE_LIMIT_BURST": "1000000",
        "REDLINE_ANONYMOUS_RATE_LIMIT_PER_S": "1000000",
        "REDLINE_ANONYMOUS_RATE_LIMIT_BURST": "1000000",
    }
    command = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--check-processes", str(check_processes), "--log-level", "warning"]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


async def wait_ready(url: str, timeout: float, workers: int) -> None:
    """Until every worker answers ``/readyz`` (each names its process): one still loading would share the CPU."""
    deadline = time.monotonic() + timeout
    ready: set[int] = set()
    while time.monotonic() < deadline:
        async def probe() -> int | None:
            try:  # a new connection each time, so the kernel spreads the probes over the workers
                async with httpx.AsyncClient() as client:
                    response = await client.get(url + "/readyz", timeout=2)
                return response.json().get("process") if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                return None

        ready |= {pid for pid in await asyncio.gather(*(probe() for _ in range(4 * workers))) if pid}
        if len(ready) >= workers:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"{len(ready)} of {workers} workers at {url} were ready within {timeout:.0f} s")


async def drive(url: str, bodies: list[bytes], seconds: float, concurrency: int) -> dict:
    """Keep ``concurrency`` requests in flight for ``seconds``; record every latency."""
    latencies: list[float] = []
    errors = 0
    counter = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=30, headers={"content-type": "application/json"}
    ) as client:
        start = time.perf_counter()
        stop = start + seconds

        async def worker(k: int) -> None:
            nonlocal errors, counter
            i = k
            while True:
                now = time.perf_counter()
                if now >= stop:
                    return
                body = bodies[i % len(bodies)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    response = await client.post("/v1/check", content=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                t1 = time.perf_counter()
                if t1 <= stop:  # one still in flight at the end is not counted
                    counter += 1
                    latencies.append(t1 - t0)
                    if not ok:
                        errors += 1

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    lat_ms = np.asarray(latencies) * 1e3
    return {
        "requests": counter,
        "rps": round(counter / seconds, 1),
        "p50_ms": round(percentile(lat_ms, 50), 2),
        "p99_ms": round(percentile(lat_ms, 99), 2),
        "errors": errors,
    }


WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("REDLINE_WRK_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/v1/check", {["Content-Type"] = "application/json"}, bodies[(i % #bodies) + 1])
end
"""


def _wrk_ms(text: str) -> float:
    value = float(text.rstrip("smu"))
    return value * (1000 if text.endswith("s") and not text.endswith(("ms", "us")) else 1) / (1000 if text.endswith("us") else 1)


def drive_wrk(url: str, bodies: list[bytes], seconds: float, concurrency: int) -> dict:
    """Drive the server with wrk (C, one thread): it costs the shared CPU far less than a Python client."""
    import re

    folder = Path(tempfile.mkdtemp(prefix="redline-wrk-"))
    try:
        (folder / "bodies.txt").write_bytes(b"\n".join(bodies) + b"\n")
        (folder / "post.lua").write_text(WRK_SCRIPT)
        env = os.environ | {"REDLINE_WRK_BODIES": str(folder / "bodies.txt")}
        common = ["wrk", "-t1", f"-c{concurrency}", "--latency", "-s", str(folder / "post.lua"), url]
        out = subprocess.run(common[:3] + [f"-d{max(1, round(seconds))}s"] + common[3:], env=env, capture_output=True, text=True, check=True).stdout
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(int(g) for g in socket_errors.groups()) if socket_errors else 0)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": round(_wrk_ms(latency["50"]), 2),
        "p99_ms": round(_wrk_ms(latency["99"]), 2),
        "errors": errors,
    }


def _scale(text: str) -> float:
    """0 for the bundled samples, else a synthetic scale as the other benchmarks take it."""
    from benchmarks.synth import scale_argument

    return 0.0 if text.strip() in ("0", "0.0") else scale_argument(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scale", type=_scale, default=0.0, help="0 = the bundled samples; 1 = national counts (synthetic)"
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--check-processes", type=int, default=1, help="check processes per worker (redline serve --check-processes)")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds of load before measuring, reported apart (first touches of a national index, the host backing new memory)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--driver",
        choices=["auto", "wrk", "httpx"],
        default="auto",
        help="the load generator: wrk when installed (apt-get install wrk), else the async httpx client",
    )
    args = parser.parse_args(argv)
    driver = args.driver if args.driver != "auto" else ("wrk" if shutil.which("wrk") else "httpx")

    root, sites = prepare(args.scale, args.sites, args.seed)
    bodies = [orjson.dumps(shapely.geometry.mapping(s)) for s in sites]
    log(f"{len(bodies)} sites over {root}; starting the server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(root, port, args.workers, args.check_processes)
    try:
        asyncio.run(wait_ready(url, 900, args.workers))
        log(
            f"server ready with {args.workers} worker(s); driving {args.concurrency} concurrent requests for {args.seconds:g} s"
        )

        def load(seconds: float) -> dict:
            if driver == "wrk":
                return drive_wrk(url, bodies, seconds, args.concurrency)
            return asyncio.run(drive(url, bodies, seconds, args.concurrency))

        # The warm-up is measured and reported too: on these virtual machines the host takes CPU time
        # (steal) for about the first 25 s of load after the index is built, as it backs the guest's
        # new memory, and a service that has run for a minute no longer pays that.
        with StallWatch() as warm_stalls:
            warm = load(args.warmup) if args.warmup > 0 else None
        with StallWatch() as stalls:
            result = load(args.seconds)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    # after the server has gone, so its memory and CPU are not shared with a third copy of the index
    log("measuring the same sites through the in-process check")
    in_process = in_process_times_us(root, bodies, warmup_s=min(10.0, args.warmup))
    # what 2 cores could do with no HTTP at all, from this very run: a ratio that the machine's noise
    # (seen here: the same code's in-process p50 from 650 to 1,330 µs) affects on both sides alike;
    # at the median, because one stall of the machine would move a mean of 500 checks a long way
    ideal_rps = 2 * 1e6 / np.median(in_process)
    if args.scale == 0:
        shutil.rmtree(root, ignore_errors=True)
    emit(
        {
            "rps": result["rps"],
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "errors": result["errors"],
            "workers": args.workers,
            "check_processes": args.check_processes,
            "concurrency": args.concurrency,
            "in_process_p50_us": round(percentile(in_process, 50), 1),
            "share_of_in_process_2_core_rate": round(result["rps"] / ideal_rps, 3),
            **stalls.summary(),
            "driver": driver,
            "requests": result["requests"],
            "seconds": args.seconds,
            "scale": args.scale,
            "sites": len(bodies),
            "warmup": None if warm is None else {"seconds": args.warmup, **{k: warm[k] for k in ("rps", "p50_ms", "p99_ms", "errors")}, **warm_stalls.summary()},
        }
    )
    return 0 if result["errors"] == 0 and (warm is None or warm["errors"] == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
