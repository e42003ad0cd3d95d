"""WebSocket frames as bytes on the wire, encoded once per event and shared by every socket.

aiohttp encodes each `send_str` anew for every socket and writes each frame with its own
system call. A broadcast goes to every socket unchanged, so pgcast encodes it once here and
writes whatever frames a socket has queued with one `transport.write`.
"""

from __future__ import annotations

FIN_TEXT = 0x81
SHORT_LENGTH_LIMIT = 126
MEDIUM_LENGTH_LIMIT = 1 << 16
MEDIUM_LENGTH_MARKER = 126
LONG_LENGTH_MARKER = 127


def text_frame(text: str) -> bytes:
    """An unmasked, unfragmented, uncompressed text frame (RFC 6455 section 5.2), as a
    server sends it."""
    payload = text.encode()
    length = len(payload)
    if length < SHORT_LENGTH_LIMIT:
        header = bytes((FIN_TEXT, length))
    elif length < MEDIUM_LENGTH_LIMIT:
        header = bytes((FIN_TEXT, MEDIUM_LENGTH_MARKER)) + length.to_bytes(2, "big")
    else:
        header = bytes((FIN_TEXT, LONG_LENGTH_MARKER)) + length.to_bytes(8, "big")
    return header + payload


def text_of(frame: bytes) -> str:
    """The text of a frame `text_frame` made (`pgcast tail` prints what sockets receive)."""
    marker = frame[1]
    if marker == LONG_LENGTH_MARKER:
        return frame[10:].decode()
    if marker == MEDIUM_LENGTH_MARKER:
        return frame[4:].decode()
    return frame[2:].decode()
