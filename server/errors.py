"""Typed API errors and the one middleware that turns every error into the JSON error body."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import psycopg
from aiohttp import web
from aiohttp.typedefs import Handler
from psycopg_pool import PoolTimeout

from server.protocol import to_json

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=to_json({"error": {"code": code, "message": message}}),
        content_type="application/json",
        headers=headers,
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "not_signed_in",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error.status, error.code, error.message, error.headers)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        message = error.reason
        if error.status == 413:
            message = "request body is too large"
        headers = {k: v for k, v in error.headers.items() if k.lower() == "allow"}
        return error_response(
            error.status, _HTTP_CODES.get(error.status, "http_error"), message, headers
        )
    except (psycopg.OperationalError, PoolTimeout) as error:
        log.warning("database unavailable in %s %s: %s", request.method, request.path, error)
        return error_response(
            503,
            "database_unavailable",
            "The database is not answering; try again shortly.",
            {"Retry-After": "1"},
        )
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "something went wrong on our side")
