"""What counts as text: one rule for request bodies, messages and names, for the API and
`pgcast send` alike."""

from __future__ import annotations

import json
import re
from typing import Any

# Messages may be multi-line; every other control character (BEL, ESC, DEL, the C1 range...)
# only shows up as a box, or worse, drives the terminal of whoever reads it with psql.
MESSAGE_CONTROLS_ALLOWED = frozenset("\n\r\t")
# Unicode's control characters (category Cc) and the surrogate code points (Cs).
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class NotJson(ValueError):
    """The body is not UTF-8 JSON that Python can parse."""


class NotText(ValueError):
    """A string holds something that is not text; the message says what, for the user."""


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, whose every string (keys too) is encodable text.

    `json.loads` accepts a lone surrogate escape such as `"\\ud800"`, which no encoder
    (PostgreSQL's, aiohttp's) can write, so such a body is refused here, not deep inside
    a query."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise NotJson("The body is not valid UTF-8.") from None
    except (RecursionError, ValueError):
        raise NotJson("The body is not valid JSON.") from None
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise NotText(
            "The body contains a lone surrogate (an unpaired \\ud800-\\udfff escape), "
            "which is not text."
        ) from None
    except RecursionError:
        raise NotJson("The body is nested too deeply.") from None
    return document


def text_problem(value: str, *, allowed_controls: frozenset[str] = frozenset()) -> str | None:
    """Why `value` is not acceptable text (a sentence for the user), or None if it is."""
    for match in _CONTROL_OR_SURROGATE.finditer(value):
        char = match.group()
        if "\ud800" <= char <= "\udfff":
            return "contains a lone surrogate (U+D800 to U+DFFF) or bytes that are not UTF-8"
        if char not in allowed_controls:
            if char == "\x00":
                return "contains a NUL character"
            return f"contains the control character U+{ord(char):04X}, which cannot be shown"
    return None
