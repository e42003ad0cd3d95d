"""`POST /webhooks/workos`: keeps `users` in step with WorkOS. Signature-checked."""

from __future__ import annotations

import logging
import re

from aiohttp import web
from workos import WorkOSError
from workos.common.models import UserDeleted, UserUpdated
from workos.events.models import EventSchema

from server import queries
from server.errors import ApiError
from server.keys import CONFIG, POOL, WORKOS
from server.login import workos_user_params
from server.text import NotJson, NotText, parse_json

log = logging.getLogger(__name__)

SIGNATURE_TOLERANCE_SECONDS = 180
HANDLED_EVENTS = frozenset({"user.updated", "user.deleted"})
# The only shape the SDK's check can accept: `t=<milliseconds>, v1=<hex HMAC-SHA256>`.
# Checked first, because the SDK fails with TypeError on non-ASCII and OverflowError on a
# huge timestamp instead of the ValueError it documents.
_SIGNATURE = re.compile(r"t=\d{1,16}, v1=[0-9a-f]{64}", re.ASCII)


async def workos_webhook(request: web.Request) -> web.Response:
    secret = request.app[CONFIG].workos_webhook_secret
    client = request.app.get(WORKOS)
    if secret is None or client is None:
        raise ApiError(404, "not_found", "WorkOS webhooks are not configured.")
    signature = request.headers.get("WorkOS-Signature")
    body = await request.read()
    if not signature:
        raise ApiError(401, "invalid_signature", "The WorkOS-Signature header is missing.")
    if _SIGNATURE.fullmatch(signature) is None:
        raise ApiError(401, "invalid_signature", "The WorkOS-Signature header is malformed.")
    try:
        client.webhooks.verify_header(
            event_body=body,
            event_signature=signature,
            secret=secret.value,
            tolerance=SIGNATURE_TOLERANCE_SECONDS,
        )
    except ValueError:
        raise ApiError(401, "invalid_signature", "The webhook signature is not valid.") from None
    try:
        document = parse_json(body)
    except NotJson:
        raise ApiError(400, "invalid_event", "The webhook body is not JSON.") from None
    except NotText as error:
        raise ApiError(400, "invalid_event", str(error)) from None
    kind = document.get("event") if isinstance(document, dict) else None
    if not isinstance(kind, str) or not isinstance(document.get("data"), dict):
        raise ApiError(400, "invalid_event", "The webhook body is not a WorkOS event.")
    if kind not in HANDLED_EVENTS:
        log.info("ignoring WorkOS event %s", kind)
        return web.json_response({"received": True})
    try:
        event = EventSchema.from_dict(document)
    except (WorkOSError, ValueError, KeyError, TypeError):
        raise ApiError(400, "invalid_event", f"The {kind} event is malformed.") from None

    # Replays are harmless: updates older than the stored one are skipped, deletes repeat.
    if isinstance(event, UserUpdated):
        async with request.app[POOL].connection() as conn:
            await conn.execute(queries.APPLY_WORKOS_USER_UPDATE, workos_user_params(event.data))
    elif isinstance(event, UserDeleted):
        # Their messages cascade (each broadcast as message-deleted) and their sockets close.
        async with request.app[POOL].connection() as conn:
            await conn.execute(queries.DELETE_WORKOS_USER, {"workos_id": event.data.id})

    return web.json_response({"received": True})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/webhooks/workos", workos_webhook)
