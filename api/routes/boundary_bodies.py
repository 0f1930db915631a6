"""The boundary API's request bodies, each declared once: the routes parse with these models and the
OpenAPI request bodies are generated from them (:func:`request_body`).

A field that fails answers 422 problem+json with a pointer to it (:func:`parse`). Free text is stored as
sent, trimmed: no NUL characters (PostgreSQL text cannot hold them), at most 10,000 characters.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from boundary.workflow import OVERRIDE_ACTIONS

from ..errors import Problem

MAX_TEXT = 10_000
M = TypeVar("M", bound=BaseModel)
# One @, something either side, a dot in the domain: enough to catch a name typed in the wrong field;
# GOV.UK Notify validates the address itself.
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")

SITE_EXAMPLE = {
    "type": "Polygon",
    "coordinates": [
        [[-2.3614, 51.3812], [-2.3606, 51.3812], [-2.3606, 51.3817], [-2.3614, 51.3817], [-2.3614, 51.3812]]
    ],
}


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must be text without NUL characters")
    return value


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _email(value: str | None) -> str | None:
    if value is not None and not EMAIL.match(value):
        raise ValueError(f"{value[:100]!r} is not an email address")
    return value


def _entity(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be an entity number or string")
    return _no_nul(value) if isinstance(value, str) else value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT), AfterValidator(_no_nul)]
OptionalText = Annotated[Text | None, BeforeValidator(_blank_is_none)]
Site = Annotated[dict[str, Any], Field(description="GeoJSON Feature or geometry (EPSG:4326 lon/lat)", examples=[SITE_EXAMPLE])]
Version = Annotated[StrictInt, Field(ge=1, le=2_147_483_647)]
Entity = Annotated[int | str, PlainValidator(_entity, json_schema_input_type=int | str)]


class Body(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)


class BoundaryFields(Body):
    reference: Text = Field(description="Application reference (PlanX session id, BOPS number...)", examples=["PLX-1234"])
    local_authority: Text = Field(description="The council the application is made to", examples=["Bath and North East Somerset"])
    applicant_email: Annotated[OptionalText, AfterValidator(_email)] = Field(
        None, description="Where change requests are emailed (GOV.UK Notify), when the council has it set up"
    )


class CreateBoundary(BoundaryFields):
    """A new boundary (version 1) drawn as GeoJSON."""

    site: Site

    model_config = ConfigDict(json_schema_extra={"examples": [{"reference": "PLX-1234", "local_authority": "Bath and North East Somerset", "site": SITE_EXAMPLE}]})


class UploadBoundary(BoundaryFields):
    """A new boundary (version 1) from a file: the form's text fields beside it."""

    file: bytes = Field(description="GeoJSON, KML, GeoPackage or zipped Shapefile")


class ProposeChange(Body):
    """An officer's amended boundary, sent to the applicant for approval."""

    site: Site
    reason: Text = Field(description="Why the boundary should change, shown to the applicant")
    base_version: Version | None = Field(
        None, description="The version the proposal amends; refused (409) if the boundary has moved on since"
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"site": SITE_EXAMPLE, "reason": "The red line must follow the garden wall", "base_version": 1}]})


class RejectChange(Body):
    """The applicant's refusal of a change request."""

    reason: Text = Field(description="Why the applicant refuses the amended boundary")

    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "That strip is my neighbour's garden"}]})


class CancelChange(Body):
    """The officer's withdrawal of an open change request; the body may be left out."""

    reason: OptionalText = Field(None, description="Why the request is withdrawn, for the record")

    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "Agreed with the agent by phone"}]})


class AddOverride(Body):
    """An officer's judgement on one constraint key, kept apart from the machine answer."""

    key: Text = Field(description="The constraint key, as in the check's answer (e.g. tpo, articleFour)")
    action: Literal[OVERRIDE_ACTIONS] = Field(description="confirmed, added (by hand) or dismissed")
    entity: Entity | None = Field(None, description="The entity confirmed, added or dismissed: its number or reference")
    text: OptionalText = Field(None, description="What was added, in words, when there is no entity")
    reason: OptionalText = Field(None, description="Why; required to dismiss")
    version: Version | None = Field(None, description="The version judged; the current one when left out")

    model_config = ConfigDict(json_schema_extra={"examples": [{"key": "tpo", "action": "added", "text": "TPO 12/1998 on the oak by the gate"}]})


class ValidateSite(Body):
    """A site to validate, wrapped; a bare GeoJSON Feature or geometry is accepted too."""

    site: Site

    model_config = ConfigDict(json_schema_extra={"examples": [{"site": SITE_EXAMPLE}]})


class UploadSite(Body):
    """A boundary file to validate."""

    file: bytes = Field(description="GeoJSON, KML, GeoPackage or zipped Shapefile")


def parse(model: type[M], data: dict) -> M:
    """``data`` (a JSON object or form fields) as ``model``, or a 422 problem pointing at each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = [_problem_item(e) for e in err.errors(include_url=False)]
    detail = "; ".join(f"'{e['pointer'][1:]}' {e['detail']}" for e in errors[:5])
    raise Problem(422, "The request is not valid", detail, type="/problems/invalid-request", errors=errors)


def _problem_item(error: dict) -> dict:
    loc = [str(p) for p in error["loc"] if isinstance(p, int) or not p.startswith(("function-", "int", "str", "constrained"))]
    kind = error["type"]
    if kind in ("missing", "string_too_short"):
        detail = "is required"
    elif kind == "string_type":
        detail = "must be a string"
    elif kind == "string_too_long":
        detail = f"must be text of at most {MAX_TEXT:,} characters"
    elif kind == "int_type":
        detail = "must be an integer"
    elif kind == "dict_type":
        detail = "must be a JSON object (a GeoJSON Feature or geometry)"
    elif kind == "value_error":
        detail = str(error["ctx"]["error"])
    else:
        detail = error["msg"][0].lower() + error["msg"][1:]
    return {"pointer": "/" + "/".join(loc), "in": "body", "detail": detail}


def site_to_validate(data: dict) -> dict:
    """The site of a ``/v1/validate`` body: the object itself when it is GeoJSON (has ``type``), else its ``site``."""
    return data if "type" in data else parse(ValidateSite, data).site


def request_body(json_model: type[BaseModel], *, form: type[BaseModel] | None = None, bare_site: bool = False, required: bool = True) -> dict:
    """An OpenAPI requestBody generated from the models (definitions inlined: one body, one schema)."""
    content = {"application/json": {"schema": inline_schema(json_model)}}
    if bare_site:
        content["application/json"]["schema"] = {"anyOf": [content["application/json"]["schema"], TypeAdapter(Site).json_schema()]}
    if form is not None:
        content["multipart/form-data"] = {"schema": inline_schema(form)}
    return {"required": required, "content": content}


def inline_schema(model: type[BaseModel]) -> dict:
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                return resolve(defs[ref.rsplit("/", 1)[1]])
            # an optional field's "default": null is what leaving it out means; the served OpenAPI drops it
            return {k: resolve(v) for k, v in node.items() if not (k == "default" and v is None)}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)
