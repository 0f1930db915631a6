"""What each spawned process runs in the shared-bucket test (``test_rate_limits``).

A module of its own because a spawned process imports the module its target lives in: the test
module would pull the whole service (uvicorn, the app, the index) into each of them, which costs
seconds per process, while this needs only ``api.ratelimit``.
"""

from __future__ import annotations

from api.ratelimit import SharedBuckets


def take_many(path: str, n: int, results) -> None:
    buckets = SharedBuckets(path)
    results.put(sum(buckets.take("key:shared", rate=0.001, burst=50) == 0 for _ in range(n)))
