"""Red-line boundaries over HTTP: create, read, versions, re-check, change requests, overrides, audit, ODP.

Thin: each route reads the request, calls :class:`boundary.workflow.Boundaries`, and shapes the answer.
Errors are the domain's own (:mod:`boundary.errors`), which carry their HTTP status; ``install``
registers them with the app's problem+json handler.

Who may do what:

- ``boundary:write`` (the submission service) creates boundaries and reads them;
- ``officer`` proposes and cancels change requests, adds overrides, re-checks, reads everything;
- the applicant acts on one change request with its token (``Authorization: Bearer TOKEN``):
  ``GET``, ``/approve``, ``/reject``. A token opens its own request and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from boundary.errors import BoundaryError, Forbidden, InvalidBoundary, Unauthorized
from boundary.geometry import parse_upload, validate_boundary
from boundary.odp import effective_answer, export_version
from boundary.store import Store
from boundary.workflow import Boundaries, WorkflowSettings
from constraints.formats import Format, render

from ..bodies import JSONRoute, read_body, read_json_object
from ..dataset_metadata import describer
from ..delivery import Dispatcher
from ..delivery import router as notification_router
from ..deps import (
    APPLICANT_TOKEN,
    admit,
    bearer_token,
    guard_failures,
    record_failure,
    require_scope,
    throttle,
)
from ..errors import Problem
from ..keys import Principal
from ..responses import json_response
from .boundary_bodies import (
    MAX_TEXT,
    AddOverride,
    BoundaryFields,
    CancelChange,
    CreateBoundary,
    ProposeChange,
    RejectChange,
    UploadBoundary,
    UploadSite,
    ValidateSite,
    parse,
    request_body,
    site_to_validate,
)
from .check import boundary_limits

router = APIRouter(tags=["boundaries"], route_class=JSONRoute)
log = logging.getLogger("redline.boundaries")

READ_SCOPES = ("boundary:write", "officer")
_build_lock = threading.Lock()
VERSION_NUMBER = Path(..., ge=1, le=2_147_483_647, description="Version number, from 1")
AUTO_APPROVAL_SWEEP_S = 60.0

# --- wiring ----------------------------------------------------------------------------------------------
def workflow(request: Request) -> Boundaries:
    return build_workflow(request.app)


def build_workflow(app: FastAPI) -> Boundaries:
    """The app's workflow, built on first use from the settings (store URL, auto-approval days)."""
    wf = getattr(app.state, "boundaries", None)
    if wf is not None:
        return wf
    with _build_lock:
        wf = getattr(app.state, "boundaries", None)
        if wf is not None:
            return wf
        settings = app.state.settings
        store = Store(settings.database_url, data_dir=settings.data_dir)
        limits = boundary_limits(settings)
        wf_settings = WorkflowSettings(
            auto_approve_working_days=settings.auto_approve_working_days or None, limits=limits
        )

        def check(geometry):
            # Looked up per call: a data sync swaps the index, and the next check must see the new one.
            index = app.state.index
            if index is None or index.snapshot is None:
                raise Problem(
                    503,
                    "Not ready",
                    "the constraint layers are still loading; try again in a few seconds",
                    headers={"Retry-After": "5"},
                )
            return index.check(geometry)

        dispatcher = app.state.dispatcher = Dispatcher(store, settings)
        wf = app.state.boundaries = Boundaries(
            store, check, wf_settings, router=notification_router(settings), on_events=dispatcher.wake
        )
        dispatcher.start()
        return wf


def _actor(principal) -> str:
    return principal.name


async def _applicant(request: Request, wf: Boundaries, request_id: str, *, count_failure: bool = True) -> str:
    """Admit the holder of this request's token; raise 401 without a token, 403 with a wrong one.

    A wrong token counts as a failed authentication, as a wrong API key does (see ``api.deps``).
    """
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("send the token from the change request link as 'Authorization: Bearer TOKEN'")
    guard_failures(request)
    throttle(request)
    try:
        await run_in_threadpool(wf.authorize_applicant, request_id, token)
    except (Forbidden, Unauthorized):
        if count_failure:
            record_failure(request)
        raise
    return "applicant"


async def _applicant_or_officer(request: Request, wf: Boundaries, request_id: str) -> str:
    token = bearer_token(request)
    if token is not None:
        try:
            return await _applicant(request, wf, request_id, count_failure=False)
        except Forbidden:
            pass  # not this request's token: perhaps an officer's API key, which admit() checks
    return _actor(admit(request, "officer"))


def _clean(value: str | None, name: str) -> str | None:
    """Free text from a query parameter, held to the bodies' rule (see ``boundary_bodies.Text``)."""
    if value is None:
        return None
    if "\x00" in value or len(value) > MAX_TEXT:
        raise Problem(
            422,
            "The request is not valid",
            f"'{name}' must be text of at most {MAX_TEXT:,} characters without NUL characters",
            errors=[{"pointer": f"/{name}", "in": "query", "detail": "invalid text"}],
        )
    return value.strip()


def _uploaded_file(form) -> UploadFile:
    """The boundary file of a multipart form: its field 'file', which must hold a file."""
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise Problem(
            422,
            "The request is not valid",
            "upload the boundary file in the form field 'file'",
            errors=[{"pointer": "/file", "in": "body", "detail": "is required"}],
        )
    return upload


async def _new_boundary(request: Request, wf: Boundaries) -> tuple:
    """The site and fields of a new boundary: GeoJSON in a JSON body, or a file in a multipart form."""
    upload_warnings: list[str] = []
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = _uploaded_file(form)
        fields = parse(BoundaryFields, {k: v for k, v in form.items() if isinstance(v, str)})
        content = await upload.read(wf.settings.limits.max_upload_bytes + 1)
        site, upload_warnings = await run_in_threadpool(
            parse_upload, upload.filename or "", content, wf.settings.limits
        )
    else:
        fields = parse(CreateBoundary, await read_json_object(request))
        site = fields.site
    valid = await run_in_threadpool(validate_boundary, site, wf.settings.limits)
    valid.warnings = upload_warnings + valid.warnings
    return valid, fields


# --- boundaries ----------------------------------------------------------------------------------------
@router.post(
    "/v1/boundaries",
    status_code=201,
    summary="Create a red-line boundary (version 1) from GeoJSON or an uploaded file",
    openapi_extra={"requestBody": request_body(CreateBoundary, form=UploadBoundary)},
    responses={
        201: {"description": "The boundary, its area and its constraints answer"},
        413: {"description": "Too large"},
        422: {"description": "Invalid boundary"},
    },
)
async def create_boundary(request: Request, principal: Principal = require_scope("boundary:write")):
    wf = workflow(request)
    valid, fields = await _new_boundary(request, wf)
    view = await run_in_threadpool(
        lambda: wf.create(
            fields.reference,
            fields.local_authority,
            None,
            _actor(principal),
            valid=valid,
            applicant_email=fields.applicant_email,
        )
    )
    return json_response(view, 201, headers={"Location": f"/v1/boundaries/{view['id']}"})


@router.get(
    "/v1/boundaries/{boundary_id}",
    summary="The current version with its constraints answer and the overrides",
)
async def get_boundary(request: Request, boundary_id: str, principal: Principal = require_scope(*READ_SCOPES)):
    wf = workflow(request)
    return json_response(await run_in_threadpool(wf.get, boundary_id))


@router.get("/v1/boundaries/{boundary_id}/versions", summary="Every version, oldest first")
async def list_versions(request: Request, boundary_id: str, principal: Principal = require_scope(*READ_SCOPES)):
    wf = workflow(request)
    return json_response({"versions": await run_in_threadpool(wf.versions, boundary_id)})


@router.get(
    "/v1/boundaries/{boundary_id}/versions/{n}",
    summary="One version with its geometry and constraints answer",
)
async def get_version(request: Request, boundary_id: str, n: int = VERSION_NUMBER, principal: Principal = require_scope(*READ_SCOPES)):
    wf = workflow(request)
    return json_response(await run_in_threadpool(wf.version, boundary_id, n))


@router.get(
    "/v1/boundaries/{boundary_id}/versions/{n}/odp",
    summary="A version as an ODP proposal.boundary (GeoBoundary) and its designations, overrides applied",
)
async def get_version_odp(request: Request, boundary_id: str, n: int = VERSION_NUMBER, principal: Principal = require_scope(*READ_SCOPES)):
    wf = workflow(request)
    version = await run_in_threadpool(wf.version, boundary_id, n)
    return json_response(export_version(version, request.app.state.catalogue))


@router.get(
    "/v1/boundaries/{boundary_id}/constraints",
    summary="The current version's constraints with the officers' overrides applied, in any output format",
    description="``format``: native (default), planx, odp or geojson. Keys derived from an overridden key follow "
    "it (a dismissed conservation area clears ``designated`` when nothing else designates the site).",
)
async def get_constraints(request: Request, boundary_id: str, format: Format = Format.native, principal: Principal = require_scope(*READ_SCOPES)):
    wf = workflow(request)
    view = await run_in_threadpool(wf.get, boundary_id)
    catalogue = request.app.state.catalogue
    snapshot = request.app.state.index.snapshot if request.app.state.index is not None else None
    describe = describer(snapshot) if snapshot is not None else None
    return json_response(render(effective_answer(view, catalogue), format, catalogue, snapshot, describe=describe))


@router.post(
    "/v1/boundaries/{boundary_id}/recheck", summary="Re-run the constraints check on the current version"
)
async def recheck(request: Request, boundary_id: str, principal: Principal = require_scope(*READ_SCOPES)):
    wf = workflow(request)
    return json_response(await run_in_threadpool(wf.recheck, boundary_id, _actor(principal)))


@router.get(
    "/v1/boundaries/{boundary_id}/audit",
    summary="The audit trail, oldest first (JSON, or a plain-text log with ?format=text)",
    responses={200: {"content": {"application/json": {}, "text/plain": {}}}},
)
async def audit(request: Request, boundary_id: str, format: str = "json", principal: Principal = require_scope(*READ_SCOPES)):
    wf = workflow(request)
    if format == "text":
        return PlainTextResponse(await run_in_threadpool(wf.audit_text, boundary_id))
    if format != "json":
        raise Problem(422, "The request is not valid", f"format must be 'json' or 'text', not {format!r}")
    return json_response({"events": await run_in_threadpool(wf.audit, boundary_id)})


# --- change requests -----------------------------------------------------------------------------------
@router.post(
    "/v1/boundaries/{boundary_id}/change-requests",
    status_code=201,
    summary="An officer proposes an amended boundary; the answer carries the applicant's token, once",
    openapi_extra={"requestBody": request_body(ProposeChange)},
)
async def propose(request: Request, boundary_id: str, principal: Principal = require_scope("officer")):
    wf = workflow(request)
    body = parse(ProposeChange, await read_json_object(request))
    valid = await run_in_threadpool(validate_boundary, body.site, wf.settings.limits)
    view = await run_in_threadpool(
        lambda: wf.propose(
            boundary_id, None, body.reason, _actor(principal), base_version=body.base_version, valid=valid
        )
    )
    return json_response(view, 201, headers={"Location": f"/v1/change-requests/{view['id']}"})


@router.get(
    "/v1/change-requests/{request_id}", summary="A change request (officer API key or the applicant's token)",
    dependencies=[APPLICANT_TOKEN],
)
async def get_change_request(request: Request, request_id: str):
    wf = workflow(request)
    await _applicant_or_officer(request, wf, request_id)
    return json_response(await run_in_threadpool(wf.get_change_request, request_id))


@router.post(
    "/v1/change-requests/{request_id}/approve",
    summary="The applicant approves: the proposal becomes the next version",
    dependencies=[APPLICANT_TOKEN],
)
async def approve(request: Request, request_id: str):
    wf = workflow(request)
    actor = await _applicant(request, wf, request_id)
    return json_response(await run_in_threadpool(wf.approve, request_id, actor))


@router.post(
    "/v1/change-requests/{request_id}/reject",
    summary="The applicant rejects, with a reason",
    openapi_extra={"requestBody": request_body(RejectChange)},
    dependencies=[APPLICANT_TOKEN],
)
async def reject(request: Request, request_id: str):
    wf = workflow(request)
    actor = await _applicant(request, wf, request_id)
    body = parse(RejectChange, await read_json_object(request))
    return json_response(await run_in_threadpool(wf.reject, request_id, body.reason, actor))


@router.post(
    "/v1/change-requests/{request_id}/cancel",
    summary="The officer withdraws an open change request",
    openapi_extra={"requestBody": request_body(CancelChange, required=False)},
)
async def cancel(request: Request, request_id: str, principal: Principal = require_scope("officer")):
    wf = workflow(request)
    body = CancelChange()
    if await read_body(request):
        body = parse(CancelChange, await read_json_object(request))
    return json_response(await run_in_threadpool(wf.cancel, request_id, _actor(principal), body.reason))


# --- overrides -----------------------------------------------------------------------------------------
@router.post(
    "/v1/boundaries/{boundary_id}/overrides",
    status_code=201,
    summary="An officer confirms, adds by hand or dismisses a constraint (kept apart from the machine answer)",
    openapi_extra={"requestBody": request_body(AddOverride)},
)
async def add_override(request: Request, boundary_id: str, principal: Principal = require_scope("officer")):
    wf = workflow(request)
    body = parse(AddOverride, await read_json_object(request))
    out = await run_in_threadpool(
        lambda: wf.add_override(boundary_id, actor=_actor(principal), **body.model_dump())
    )
    return json_response(out, 201)


async def _override_action(request: Request, action, boundary_id: str, override_id: str, principal: Principal, text: str | None, text_name: str):
    """Withdraw or review an override: ``action`` is the workflow's method, ``text`` the officer's query parameter."""
    wf = workflow(request)
    return json_response(await run_in_threadpool(action, wf, boundary_id, override_id, _actor(principal), _clean(text, text_name)))


@router.delete(
    "/v1/boundaries/{boundary_id}/overrides/{override_id}",
    summary="Withdraw an override (kept in the record)",
)
async def remove_override(request: Request, boundary_id: str, override_id: str, reason: str | None = None, principal: Principal = require_scope("officer")):
    return await _override_action(request, Boundaries.remove_override, boundary_id, override_id, principal, reason, "reason")


@router.post(
    "/v1/boundaries/{boundary_id}/overrides/{override_id}/review",
    summary="Clear an override's review flag after checking it",
)
async def review_override(request: Request, boundary_id: str, override_id: str, note: str | None = None, principal: Principal = require_scope("officer")):
    return await _override_action(request, Boundaries.review_override, boundary_id, override_id, principal, note, "note")


# --- validation only -----------------------------------------------------------------------------------
@router.post(
    "/v1/validate",
    summary="Validate a boundary and measure it; stores nothing (the widget's live feedback)",
    openapi_extra={
        "requestBody": request_body(ValidateSite, form=UploadSite, bare_site=True)
    },
)
async def validate(request: Request, principal: Principal = require_scope("check", "boundary:write", "officer")):
    wf = workflow(request)
    content_type = request.headers.get("content-type", "")
    warnings: list[str] = []
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = _uploaded_file(form)
        site, warnings = await run_in_threadpool(
            parse_upload, upload.filename or "", await upload.read(), wf.settings.limits
        )
    else:
        site = site_to_validate(await read_json_object(request))
    valid = await run_in_threadpool(validate_boundary, site, wf.settings.limits)
    summary = valid.summary()
    summary["warnings"] = warnings + summary["warnings"]
    return json_response(summary)


# --- installation --------------------------------------------------------------------------------------
def install(app: FastAPI) -> list[type[Exception]]:
    """Add the boundary routes to the app; returns the domain errors for the problem+json handler."""
    app.include_router(router)

    async def sweep(app: FastAPI) -> None:
        # Requests are also auto-approved when read; this catches the ones nobody reads.
        while True:
            await asyncio.sleep(AUTO_APPROVAL_SWEEP_S)
            try:
                await run_in_threadpool(build_workflow(app).run_auto_approvals)
            except Exception:  # a store outage must not end the loop; it is logged and retried
                log.exception("the auto-approval sweep failed; retrying in %s s", AUTO_APPROVAL_SWEEP_S)

    async def start_sweep(app: FastAPI) -> None:
        # Runs whether or not auto-approval is on: it also closes requests whose link expired.
        app.state.boundary_sweep = asyncio.create_task(sweep(app))
        app.state.boundary_start = asyncio.create_task(start_dispatcher(app))

    async def start_dispatcher(app: FastAPI) -> None:
        # Built at start, not at the first request: notifications that an earlier run (or another
        # replica) left undelivered are sent even if nobody calls this replica.
        while True:
            try:
                await run_in_threadpool(build_workflow, app)
                return
            except Exception:
                log.exception("the boundary store is not reachable yet; retrying in 5 s")
                await asyncio.sleep(5)

    async def stop(app: FastAPI) -> None:
        for name in ("boundary_sweep", "boundary_start"):
            task = getattr(app.state, name, None)
            if task is not None:
                task.cancel()
        dispatcher = getattr(app.state, "dispatcher", None)
        if dispatcher is not None:
            await run_in_threadpool(dispatcher.stop)
        wf = getattr(app.state, "boundaries", None)
        if wf is not None:
            wf.store.close()

    app.state.on_startup.append(start_sweep)
    app.state.on_shutdown.append(stop)
    return [BoundaryError, InvalidBoundary]
