"""Typed API errors and the one middleware that turns every error into the JSON error body."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any

import psycopg
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.log import server_logger
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
    414: "uri_too_long",
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


# aiohttp's own defaults: whatever was accepted before still is.
MAX_HEADER_BYTES = 8190
MAX_TARGET_BYTES = 8190
# The parser's bound is set above ours, so that up to it pgcast, not the parser, refuses an
# oversized head, with the JSON error. Past it the parser answers in plain text (aiohttp has
# no hook for that answer); its log line is still redacted (ParserErrorLog). The parser keeps
# at most 128 fields of this size per request.
PARSER_LIMIT_BYTES = 16 * 1024


@web.middleware
def request_limits_middleware(
    request: web.Request, handler: Handler
) -> Awaitable[web.StreamResponse]:
    # A plain function that hands on the handler's awaitable: aiohttp awaits whatever a
    # middleware returns, and an open WebSocket then keeps no suspended frame of this one.
    if len(request.raw_path) > MAX_TARGET_BYTES:
        raise ApiError(414, "uri_too_long", f"The URL is longer than {MAX_TARGET_BYTES} bytes.")
    for name, value in request.raw_headers:
        if len(value) > MAX_HEADER_BYTES or len(name) > MAX_HEADER_BYTES:
            # The name only: the value is often a token or a cookie.
            shown = name.decode("latin-1") if len(name) <= 64 else "a"
            raise ApiError(
                431,
                "header_too_large",
                f"The {shown} header is longer than {MAX_HEADER_BYTES} bytes.",
            )
    return handler(request)


class ParserErrorLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log, with each request its parser refused as one line.

    aiohttp logs those with a traceback whose message quotes the offending bytes: part of a
    header, often a token or cookie. This names the kind of error and nothing it read."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if not isinstance(error, HttpProcessingError):
            super().log(level, msg, *args, **kwargs)
            return
        if isinstance(error, LineTooLong):
            reason = "a request line or header is too long"
        else:
            reason = type(error).__name__
        remote = args[0] if args else None
        self.logger.log(
            logging.DEBUG if level <= logging.DEBUG else logging.INFO,
            "refused a malformed request from %s: %s (HTTP %s)",
            remote,
            reason,
            error.code,
        )


def server_handler_args() -> dict[str, Any]:
    """aiohttp's per-connection settings (Application's handler_args)."""
    return {
        "max_line_size": PARSER_LIMIT_BYTES,
        "max_field_size": PARSER_LIMIT_BYTES,
        "logger": ParserErrorLog(server_logger),
    }
