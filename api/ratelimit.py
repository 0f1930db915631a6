"""Token buckets shared by every worker process of a service: rate limits that do not multiply with workers.

``redline serve --workers N`` runs N processes; buckets kept in each process's memory would let a
caller through N times as often. The buckets live instead in a small memory-mapped file in the data
folder (``ratelimit.bin``, 256 KB), guarded by ``flock``, so every process on the machine reads and
writes the same ones. A bucket is a slot of an open-addressing table keyed by a 64-bit hash of its
name (``key:ID``, ``addr:ADDRESS``, ``fail:ADDRESS``); a slot whose bucket has refilled completely
holds nothing worth keeping and is reused, so the table never needs clearing.

Replicas on different machines each limit on their own: put a shared limit in the load balancer.

Examples
--------
>>> import tempfile
>>> buckets = SharedBuckets(Path(tempfile.mkdtemp()) / "ratelimit.bin")
>>> buckets.take("addr:192.0.2.1", rate=1, burst=1)
0.0
>>> buckets.take("addr:192.0.2.1", rate=1, burst=1) > 0  # the second must wait for the refill
True
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from pathlib import Path

log = logging.getLogger("redline.api")

_MAGIC = b"RLBUCKT1"
_SLOT = struct.Struct("<Qddff")  # name hash, tokens, stamp (epoch seconds), rate, burst
_SLOTS = 8192
_PROBES = 16  # slots looked at for one name before the stalest is taken over
_SIZE = len(_MAGIC) + _SLOT.size * _SLOTS


@functools.lru_cache(maxsize=65536)  # the same few keys and addresses, request after request
def _hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") or 1


class SharedBuckets:
    """Token buckets in a memory-mapped file: ``rate`` tokens a second, at most ``burst``, one per request.

    Parameters
    ----------
    path
        The file, created (0600) when missing. Where it cannot be created or mapped (a read-only
        folder), the buckets are kept in this process only, and the log says so.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()  # flock does not exclude threads sharing one descriptor
        self._fd: int | None = None
        self._map: mmap.mmap | bytearray
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size != _SIZE or os.pread(fd, len(_MAGIC), 0) != _MAGIC:
                    os.ftruncate(fd, 0)
                    os.ftruncate(fd, _SIZE)
                    os.pwrite(fd, _MAGIC, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, _SIZE)
            self._fd = fd
        except OSError as err:
            log.warning("rate limits are per process: %s cannot be used (%s)", self.path, err)
            self._map = bytearray(_SIZE)

    def close(self) -> None:
        if self._fd is not None:
            self._map.close()
            os.close(self._fd)
            self._fd = None

    def take(self, name: str, rate: float, burst: float) -> float:
        """Take one token from ``name``'s bucket: 0 when there was one, else the seconds until there is."""
        return self._update(name, rate, burst, cost=1.0)

    def peek(self, name: str, rate: float, burst: float) -> float:
        """0 when ``name``'s bucket holds a token, else the seconds until it does; takes nothing."""
        return self._update(name, rate, burst, cost=0.0)

    def _update(self, name: str, rate: float, burst: float, cost: float) -> float:
        key = _hash(name)
        now = time.time()
        with self._lock:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                offset, tokens = self._find(key, now)
                if tokens is None:
                    tokens = float(burst)
                tokens = max(0.0, tokens)
                if tokens >= 1.0:
                    tokens -= cost
                    wait = 0.0
                else:
                    wait = (1.0 - tokens) / rate if rate > 0 else 3600.0
                if cost:
                    _SLOT.pack_into(self._map, offset, key, tokens, now, rate, burst)
                return wait
            finally:
                if self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _find(self, key: int, now: float) -> tuple[int, float | None]:
        """The slot for ``key`` and its bucket's tokens now (None: a new bucket, full)."""
        start = key % _SLOTS
        free, stalest, stalest_stamp = None, None, float("inf")
        for probe in range(_PROBES):
            offset = len(_MAGIC) + ((start + probe) % _SLOTS) * _SLOT.size
            held, tokens, stamp, rate, burst = _SLOT.unpack_from(self._map, offset)
            elapsed = max(0.0, now - stamp)  # a clock stepped back refills nothing
            if held == key:
                return offset, min(burst, tokens + elapsed * rate)
            if free is None and (held == 0 or tokens + elapsed * rate >= burst):
                free = offset  # empty, or a bucket that has refilled: as good as new
            elif stamp < stalest_stamp:
                stalest, stalest_stamp = offset, stamp
        return (free if free is not None else stalest), None
