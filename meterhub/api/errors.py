"""Consistent JSON errors for the API: ``{"error": {"code", "message", "fields"}}`` with the HTTP status."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

from ..errors import MeterhubError, NotFound, PermissionDenied, RateLimited, ValidationError
from ..ledger.errors import IdempotencyConflict, LedgerError

log = logging.getLogger(__name__)
CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid", 429: "rate_limited",
         500: "internal_error"}


class ApiError(Exception):
    """An error answered as JSON with ``status``."""

    def __init__(self, status: int, message: str, fields: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.fields = status, message, fields or {}
        self.headers, self.code = headers or {}, code or CODES.get(status, "error")


def error_response(status: int, message: str, fields: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None, code: str | None = None) -> Response:
    """The JSON body every API error uses."""
    response = jsonify({"error": {"code": code or CODES.get(status, "error"), "message": message,
                                  "fields": fields or {}}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def from_exception(err: Exception) -> ApiError:
    """Map a platform error to its API status."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, NotFound):
        return ApiError(404, "Not found.")
    if isinstance(err, IdempotencyConflict):
        return ApiError(409, str(err), err.errors, code="idempotency_conflict")
    if isinstance(err, ValidationError):
        return ApiError(422, str(err), err.errors)
    if isinstance(err, RateLimited):
        return ApiError(429, str(err), headers={"Retry-After": str(err.retry_after)})
    if isinstance(err, PermissionDenied):
        return ApiError(404, "Not found.")
    if isinstance(err, LedgerError):
        return ApiError(409, str(err), code="refused")
    return ApiError(400, str(err))


def register(bp: Blueprint) -> None:
    """Answer every error raised under ``bp`` as JSON."""

    @bp.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
        return error_response(err.status, err.message, err.fields, err.headers, err.code)

    @bp.errorhandler(MeterhubError)
    def _platform_error(err: MeterhubError) -> Response:
        mapped = from_exception(err)
        return error_response(mapped.status, mapped.message, mapped.fields, mapped.headers, mapped.code)

    @bp.errorhandler(DataError)
    def _data_error(err: DataError) -> Response:
        from ..extensions import db
        from ..request_input import data_error_message

        db.session.rollback()
        return error_response(400, data_error_message(err))

    @bp.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        return error_response(status, err.description if status != 404 else "Not found.")

    @bp.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        from ..extensions import db

        db.session.rollback()
        log.exception("API request failed")
        return error_response(500, "Internal error; the request was not applied. Try again later.")


def json_body() -> dict[str, Any]:
    """The request's JSON object or a 400/415 error."""
    from flask import request

    if not request.is_json:
        raise ApiError(415, "Send a JSON body with Content-Type: application/json.")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "The body must be a JSON object.")
    return data
