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
    stuck = state.check_thread.busy_for
    if stuck > state.settings.check_deadline_s:  # a thread cannot be killed: send checks elsewhere until it is free
        reason = f"the check thread has been on one check for {stuck:.0f} s, past the {state.settings.check_deadline_s:g} s deadline; checks wait behind it"
        return problem_response(503, "Not ready", reason, headers={"Retry-After": "5"}, reasons=[reason])
    snap = index.snapshot
    # "process" tells a caller (a load balancer's log, the benchmark) which worker answered
    answer = {"status": "ready", "datasets": len(snap.layers), "features": snap.features, "data_version": snap.data_version, "built_at": snap.built_at, "process": os.getpid()}
    runner = state.check_process
    if runner is not None:  # the processes answering checks, once forked (by the first check)
        answer["check_processes"] = runner.pids
        # killed for overrunning the deadline, or died: each was replaced at once
        answer["check_processes_replaced"] = runner.restarts
        answer["last_check_process_failure"] = runner.last_failure
    return JSONResponse(answer)
