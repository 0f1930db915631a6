"""The notification delivery log: what was sent to whom, each attempt, and replay (scope ``admin``)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from ..delivery import delivery_view, replay
from ..deps import require_scope
from ..errors import Problem
from ..responses import json_response
from .boundaries import build_workflow

router = APIRouter(tags=["notifications"])
STATES = "^(pending|delivered|failed)$"
DELIVERY_ID = Path(..., ge=1, le=2**63 - 1, description="The delivery's number, as listed")


def _store(request: Request):
    return build_workflow(request.app).store


@router.get("/v1/deliveries", summary="Notification deliveries (webhooks and emails), newest first")
async def list_deliveries(
    request: Request,
    state: str | None = Query(None, pattern=STATES, description="pending, delivered or failed"),
    boundary_id: str | None = Query(None, pattern="^[0-9A-Za-z-]{1,64}$"),
    event_id: str | None = Query(None, pattern="^msg_[0-9a-f]{1,60}$", description="A webhook-id"),
    limit: int = Query(100, ge=1, le=1000),
    principal=require_scope("admin"),
):
    store = _store(request)

    def read():
        with store.transaction(write=False) as tx:
            rows = tx.list_deliveries(state=state, boundary_id=boundary_id, event_id=event_id, limit=limit)
        return [delivery_view(r) for r in rows]

    return json_response({"deliveries": await run_in_threadpool(read)})


def _missing(delivery_id: int) -> Problem:
    return Problem(404, "Not found", f"no delivery {delivery_id}; list them with GET /v1/deliveries")


@router.get("/v1/deliveries/{delivery_id}", summary="One delivery with every attempt")
async def get_delivery(request: Request, delivery_id: int = DELIVERY_ID, principal=require_scope("admin")):
    store = _store(request)

    def read():
        with store.transaction(write=False) as tx:
            row = tx.get_delivery(delivery_id)
            return None if row is None else delivery_view(row, tx.list_attempts(delivery_id))

    view = await run_in_threadpool(read)
    if view is None:
        raise _missing(delivery_id)
    return json_response(view)


@router.post(
    "/v1/deliveries/{delivery_id}/replay",
    status_code=202,
    summary="Send a delivery again (same event and webhook-id), e.g. after the receiver was fixed",
)
async def replay_delivery(request: Request, delivery_id: int = DELIVERY_ID, principal=require_scope("admin")):
    store = _store(request)
    try:
        new_id = await run_in_threadpool(replay, store, delivery_id)
    except LookupError:
        raise _missing(delivery_id) from None
    request.app.state.dispatcher.wake()

    def read():
        with store.transaction(write=False) as tx:
            return delivery_view(tx.get_delivery(new_id))

    return json_response(await run_in_threadpool(read), 202, headers={"Location": f"/v1/deliveries/{new_id}"})


def install(app: FastAPI) -> list[type[Exception]]:
    app.include_router(router)
    return []
