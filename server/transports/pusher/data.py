"""Pusher's `data` is any string; `broadcasts.data` is a JSON object. The JSON text of an
object is stored as that object (equal JSON, not the same bytes); any other string is stored
wrapped as `{"pusher_data": "<the string>"}`, and Pusher clients get it back unwrapped."""

from __future__ import annotations

import json
from typing import Any, Final

PUSHER_DATA: Final = "pusher_data"

# How jsonb (and json.dumps) writes the wrapper: only stored text that starts so is parsed.
_WRAPPER_START: Final = '{"pusher_data": "'


def stored_data(data: str) -> str:
    """The JSON text `broadcasts.data` gets for Pusher's `data` string (module docstring)."""
    try:
        value = json.loads(data, parse_constant=refuse_constant)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict) and not _is_wrapper(value):
        return data
    return json.dumps({PUSHER_DATA: data})


def pusher_data_from_stored(stored: str) -> str:
    """The inverse of stored_data, for a transport that sends Pusher's `data` string: given
    the stored JSON text of `broadcasts.data` (Event.data), the string to send. Only text
    that starts like the wrapper is parsed, so an ordinary event costs a prefix check."""
    if not stored.startswith(_WRAPPER_START):
        return stored
    try:
        value = json.loads(stored)
    except ValueError:
        return stored
    if isinstance(value, dict) and _is_wrapper(value):
        text: str = value[PUSHER_DATA]
        return text
    return stored


def _is_wrapper(value: dict[str, Any]) -> bool:
    return len(value) == 1 and isinstance(value.get(PUSHER_DATA), str)


def refuse_constant(name: str) -> None:
    # NaN and Infinity are Python's extensions, not JSON: PostgreSQL would refuse them.
    raise ValueError(name)
