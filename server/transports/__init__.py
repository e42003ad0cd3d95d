"""One folder per protocol, beside the aiohttp socket writers they share (websocket.py)."""
