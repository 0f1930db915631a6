"""No body, upload or parameter can exhaust the service or make it fail: oversized bodies are refused
while they stream, zip bombs before they are unpacked, deep JSON and huge numbers before parsing goes
deep. Over real HTTP against ``redline serve`` in its own process, whose memory is read from /proc.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from api_fixtures import BATH_SITE, assert_problem, free_port

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 2_000_000  # the default REDLINE_MAX_BODY_BYTES
MB = 1 << 20
JSON_ENDPOINTS = ["/v1/check", "/widget/diff", "/widget/overlays", "/widget/coordinates", "/v1/boundaries", "/v1/validate"]
UPLOAD_ENDPOINTS = ["/widget/upload", "/v1/validate", "/v1/boundaries"]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and every process under it (the service's check processes too)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


@pytest.fixture(scope="module")
def server(sample_cache, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("hostile") / "data"
    shutil.copytree(sample_cache.root, data_dir)
    port = free_port()
    log_path = data_dir.parent / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT,
            env=os.environ | {"REDLINE_DATA_DIR": str(data_dir), "REDLINE_LOAD_SAMPLES": "false", "REDLINE_RATE_LIMIT_PER_S": "1000000", "REDLINE_RATE_LIMIT_BURST": "1000000"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        # warm every endpoint once, so what is measured is the hostile input, not first-use imports
        for path in JSON_ENDPOINTS:
            httpx.post(url + path, json={"site": BATH_SITE, "current": BATH_SITE, "proposed": BATH_SITE, "text": "-2.36 51.38", "reference": "warm", "local_authority": "x", **BATH_SITE}, timeout=60)
        upload = {"file": ("site.geojson", json.dumps(BATH_SITE).encode(), "application/geo+json")}
        for path in UPLOAD_ENDPOINTS:
            httpx.post(url + path, files=upload, data={"reference": "warm", "local_authority": "x"}, timeout=60)
        yield process, port, url
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)
    server_log = log_path.read_text()
    assert "Traceback" not in server_log and "Internal error" not in server_log, server_log[-3000:]


MULTIPART = "multipart/form-data; boundary=xyz"
FILE_PART = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="site.geojson"\r\n\r\n'


def raw_post(port: int, path: str, *, total: int, chunked: bool, content_type: str = "application/json", declared: int | None = None) -> tuple[int, dict, bytes, int]:
    """POST ``total`` bytes of a never-ending JSON array (in a file part for multipart), stopping as soon
    as the server answers. Returns the status, headers, body and how many body bytes were sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {declared or total}"
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n".encode())
    piece = b"[-2.3614,51.3812]," * (256 * 1024 // 18)
    first = (FILE_PART if content_type == MULTIPART else b"") + b"[" + piece
    sent, answer = 0, b""
    sock.setblocking(False)
    try:
        while b"\r\n\r\n" not in answer:
            try:
                answer += sock.recv(65536)
                continue
            except BlockingIOError:
                pass
            if sent < total:
                data = first if sent == 0 else piece
                data = data if not chunked else b"%x\r\n%s\r\n" % (len(data), data)
                try:
                    sent += sock.send(data)  # partial sends count too; the framing may break, the server has answered by then
                except BlockingIOError:
                    time.sleep(0.005)
            else:
                time.sleep(0.01)
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        sock.setblocking(True)
        while len(body) < length:
            body += sock.recv(65536)
        return int(lines[0].split()[1]), headers, body[:length], sent
    finally:
        sock.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_every_oversized_body_is_refused_while_it_streams(server, chunked):
    process, port, _ = server
    before = rss_bytes(process.pid)
    for path in JSON_ENDPOINTS:
        status, headers, body, sent = raw_post(port, path, total=300 * MB, chunked=chunked)
        assert status == 413, (path, status, body[:300])
        assert headers["content-type"].startswith("application/problem+json")
        assert str(LIMIT) in json.loads(body)["detail"]
        # refused on the spot: not after taking in the 300 MB (socket buffers hold a few MB)
        assert sent < LIMIT + 40 * MB, (path, sent)
    grown = rss_bytes(process.pid) - before
    assert grown < 100 * MB, f"the server grew by {grown / MB:.0f} MB"


def test_a_body_past_the_limit_with_no_length_is_cut_off_at_the_limit(server):
    _, port, url = server
    status, _, body, sent = raw_post(port, "/widget/diff", total=LIMIT + 600_000, chunked=True)
    assert status == 413 and sent < LIMIT + 40 * MB
    assert httpx.post(url + "/v1/check", json=BATH_SITE).status_code == 200  # and the service carries on


def test_uploads_past_the_limit_are_refused(server):
    process, port, url = server
    before = rss_bytes(process.pid)
    for path in UPLOAD_ENDPOINTS:
        big = b"x" * (LIMIT + 10)
        answer = httpx.post(url + path, files={"file": ("site.geojson", big)}, data={"reference": "r", "local_authority": "x"})
        problem = assert_problem(answer, 413)
        assert str(LIMIT) in problem["detail"]
        for chunked in (False, True):
            status, _, _, sent = raw_post(port, path, total=300 * MB, chunked=chunked, content_type=MULTIPART)
            assert status == 413 and sent < LIMIT + 40 * MB, (path, chunked, status)
    assert rss_bytes(process.pid) - before < 100 * MB


def zip_bomb(unpacked: int = 300 * MB) -> bytes:
    """A zipped shapefile of one polygon ring with ``unpacked`` bytes of points: a few hundred KB packed."""
    points = (unpacked - 100) // 16
    content_length_words = (44 + 4 + 16 * points) // 2
    header = struct.pack(">7i", 9994, 0, 0, 0, 0, 0, 50 + 4 + content_length_words) + struct.pack("<2i4d4d", 1000, 5, 375000, 164900, 375100, 165000, 0, 0, 0, 0)
    record = struct.pack(">2i", 1, content_length_words) + struct.pack("<i4d2i", 5, 375000, 164900, 375100, 165000, 1, points) + struct.pack("<i", 0)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("site.shp", "w", force_zip64=True) as shp:
            shp.write(header + record)
            block = struct.pack("<2d", 375000.0, 164900.0) * 65536
            left = points * 16
            while left > 0:
                shp.write(block[: min(left, len(block))])
                left -= len(block)
        zf.writestr("site.shx", struct.pack(">7i", 9994, 0, 0, 0, 0, 0, 54) + struct.pack("<2i8d", 1000, 5, *[0.0] * 8) + struct.pack(">2i", 50, content_length_words))
        zf.writestr("site.dbf", b"\x03\x7d\x01\x01" + struct.pack("<IHH", 1, 65, 11) + b"\x00" * 20 + b"ID".ljust(11, b"\x00") + b"N" + b"\x00" * 4 + bytes([10, 0]) + b"\x00" * 14 + b"\r" + b" " + b"1".rjust(10) + b"\x1a")
        zf.writestr("site.prj", 'PROJCS["OSGB 1936 / British National Grid",GEOGCS["OSGB 1936",DATUM["OSGB_1936",SPHEROID["Airy 1830",6377563.396,299.3249646]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",49],PARAMETER["central_meridian",-2],PARAMETER["scale_factor",0.9996012717],PARAMETER["false_easting",400000],PARAMETER["false_northing",-100000],UNIT["metre",1]]')
    return out.getvalue()


def test_a_zip_bomb_is_refused_before_it_is_unpacked(server):
    process, _, url = server
    bomb = zip_bomb()
    assert len(bomb) < LIMIT
    before = rss_bytes(process.pid)
    started = time.monotonic()
    for path in UPLOAD_ENDPOINTS:
        answer = httpx.post(url + path, files={"file": ("site.zip", bomb, "application/zip")}, data={"reference": "r", "local_authority": "x"}, timeout=60)
        problem = assert_problem(answer, 413)
        assert "site.zip unpacks to 315 MB" in problem["detail"], problem["detail"]
    assert time.monotonic() - started < 10
    assert rss_bytes(process.pid) - before < 100 * MB


def test_zips_past_the_other_limits_are_refused(server):
    _, _, url = server

    def zipped(entries: dict[str, bytes]) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries.items():
                zf.writestr(name, data)
        return out.getvalue()

    cases = {
        "many files": (zipped({f"f{i}.txt": b"x" for i in range(40)}), 422, "40 files"),
        "escaping name": (zipped({"../../etc/site.shp": b"x", "site.dbf": b"x"}), 422, "outside the archive"),
        "absolute name": (zipped({"/tmp/site.shp": b"x"}), 422, "outside the archive"),
        "past the unpacked size": (zipped({"site.shp": sparse(25_000_000, 0.01)}), 413, "unpacks to 25 MB"),
        "past the ratio": (zipped({"site.shp": bytes(5_000_000), "site.dbf": b"x"}), 413, "times its packed size"),
    }
    for name, (body, status, words) in cases.items():
        answer = httpx.post(url + "/widget/upload", files={"file": ("site.zip", body, "application/zip")})
        problem = assert_problem(answer, status)
        assert words in problem["detail"], (name, problem["detail"])


def sparse(size: int, density: float) -> bytes:
    """Bytes that pack about 1:50: a plausible file, but large."""
    import numpy as np

    return (np.random.default_rng(1).random(size) < density).astype(np.uint8).tobytes()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_feature(depth: int) -> str:
    return '{"type": "Feature", "properties": {}, "geometry": ' * depth + json.dumps(BATH_SITE) + "}" * depth


HUGE = "1" + "0" * 400


HOSTILE_SITES = {
    "Feature nested 1,000 deep": deep_feature(1000),
    "a coordinate of 401 digits": json.dumps(BATH_SITE).replace("-2.3614", "-" + HUGE, 1),
    "an integer of 5,000 digits": json.dumps(BATH_SITE).replace("-2.3614", "1" * 5000, 1),
    "coordinates nested 900 deep": '{"type": "Polygon", "coordinates": ' + nested(900).decode() + "}",
}


def as_body(path: str, site: str) -> bytes:
    """The site as each endpoint takes it: the body itself, or its members."""
    if path in ("/v1/check", "/v1/validate"):
        return site.encode()
    return f'{{"text": "1", "reference": "r", "local_authority": "x", "site": {site}, "current": {site}, "proposed": {site}}}'.encode()


@pytest.mark.parametrize("case", ["JSON nested 100,000 deep", *HOSTILE_SITES])
def test_deep_json_and_huge_numbers_are_4xx_on_every_json_endpoint(server, case):
    _, _, url = server
    for path in JSON_ENDPOINTS:
        body = nested(100_000) if case == "JSON nested 100,000 deep" else as_body(path, HOSTILE_SITES[case])
        answer = httpx.post(url + path, content=body, headers={"content-type": "application/json"}, timeout=60)
        assert 400 <= answer.status_code < 500, (case, path, answer.status_code, answer.text[:300])
        assert answer.headers["content-type"].startswith("application/problem+json"), (case, path)
        assert len(answer.json()["detail"]) > 10
    assert httpx.post(url + "/v1/check", json=BATH_SITE).status_code == 200  # the connection and the service carry on


def test_huge_ids_and_nul_references_are_4xx_or_match_nothing(server):
    _, _, url = server
    # the platform's own endpoints answer its way: 422 with {"detail": [...]} naming the parameter
    for answer in [
        *(httpx.get(url + "/entity.json", params={"entity": n}) for n in ("99999999999999999999", "-1", "9" * 5000)),
        httpx.get(url + "/entity/99999999999999999999.json"),
    ]:
        assert answer.status_code == 422, answer.text[:300]
        assert "entity" in json.dumps(answer.json()["detail"])
    empty = httpx.get(url + "/entity.json", params={"reference": "\x00", "dataset": "conservation-area", "limit": 100})
    assert empty.status_code == 200 and empty.json()["entities"] == []
