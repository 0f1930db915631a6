"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..errors import problem_response

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="The constraint index is loaded and answering", responses={503: {"description": "Still loading, or failed to load"}})
def readyz(request: Request):
    state = request.app.state
    index = state.index
    if index is None or index.snapshot is None:
        reasons = [state.load_error] if state.load_error else ["the constraint index is still loading"]
        return problem_response(503, "Not ready", "; ".join(reasons), headers={"Retry-After": "5"}, reasons=reasons)
    snap = index.snapshot
    # "process" tells a caller (a load balancer's log, the benchmark) which worker answered
    answer = {"status": "ready", "datasets": len(snap.layers), "features": snap.features, "data_version": snap.data_version, "built_at": snap.built_at, "process": os.getpid()}
    runner = state.check_process
    if runner is not None:  # the processes answering checks, once forked (by the first check)
        answer["check_processes"] = runner.pids
    return JSONResponse(answer)
