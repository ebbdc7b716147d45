"""The ``/api/v1`` blueprint: CSRF-exempt (token auth, no cookies), JSON errors, rate-limit headers,
a JSON 404 for unknown paths, and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify

from ..extensions import csrf
from . import errors

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)
errors.register(bp)


@bp.after_request
def _rate_headers(response: Response) -> Response:
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


@bp.route("/<path:anything>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unknown(anything: str) -> Response:
    """Unknown API paths answer a JSON 404."""
    return errors.error_response(404, f"No API endpoint /api/v1/{anything} with this method.")


def load_views() -> Blueprint:
    """The blueprint with every resource module's routes attached."""
    from . import views_devices, views_money  # noqa: F401  (routes register on import)

    return bp
