"""The ``/api/v1`` blueprint: CSRF-exempt (token auth, no cookies), JSON errors, rate-limit headers,
a JSON 404 for unknown paths, and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ..extensions import csrf
from . import errors

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)
errors.register(bp)


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods() -> list[str]:
    """Methods the requested path really supports (the catch-all below does not count)."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = []
    for method in METHODS:
        try:
            endpoint, _ = adapter.match(path_info=request.path, method=method)
        except HTTPException:
            continue
        if endpoint != "api.unknown":
            allowed.append(method)
    if "GET" in allowed:
        allowed.append("HEAD")
    return [*allowed, "OPTIONS"] if allowed else []


@bp.after_request
def _rate_headers(response: Response) -> Response:
    if request.method == "OPTIONS" and "Allow" in response.headers:
        response.headers["Allow"] = ", ".join(_allowed_methods())
    rate = g.get("api_rate")
    if rate is not None:
        response.headers["X-RateLimit-Limit"], response.headers["X-RateLimit-Remaining"] = str(rate[0]), str(rate[1])
        response.headers["X-RateLimit-Reset"] = str(rate[2])
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 document of this API (public, no token needed)."""
    from .openapi import document

    return jsonify(document())


@bp.route("/<path:anything>", methods=list(METHODS))
def unknown(anything: str) -> Response:
    """Unknown API paths answer a JSON 404; known paths with another method a JSON 405."""
    allowed = _allowed_methods()
    if allowed:
        return errors.error_response(405, f"{request.method} is not allowed here; use {', '.join(allowed)}.",
                                     headers={"Allow": ", ".join(allowed)})
    return errors.error_response(404, f"No API endpoint /api/v1/{anything} with this method.")
