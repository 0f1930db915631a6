"""The one way routes answer with JSON: orjson (numpy values included), a status and a media type.

``X-Redline-Data-Version`` is not set here: the metrics middleware (``api/routes/operations.py``) stamps
it on every answer, and the check's fast path sets the exact version it answered from.
"""

from __future__ import annotations

import orjson
from fastapi.responses import Response


def json_response(body, status: int = 200, *, media_type: str = "application/json", headers: dict | None = None) -> Response:
    """``body`` as a JSON answer (``media_type="application/geo+json"`` for GeoJSON)."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=media_type, headers=headers)
