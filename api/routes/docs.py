"""The API documentation page, served with the service's own copy of Swagger UI so that it works offline.

FastAPI's default ``/docs`` loads Swagger UI from a CDN, which is a blank page on a council network without
internet access. The pinned files live beside the widget's map libraries (``api/static/vendor``, checked
against ``SHA256SUMS``) and are served from the same mount.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

SWAGGER_UI = "/widget/vendor/swagger-ui-dist-5.32.0"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title}: API documentation",
        swagger_js_url=f"{root}{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url=f"{root}{SWAGGER_UI}/favicon-32x32.png",
        # Swagger UI asks an online validator about the spec unless told not to.
        swagger_ui_parameters={"validatorUrl": None},
    )


def install(app: FastAPI) -> list[type[Exception]]:
    app.include_router(router)
    return []
