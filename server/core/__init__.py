"""The protocol-free core: events, cursors, channels and the hub. It imports no aiohttp, no
psycopg and no transport (tests/test_layers.py fails the build if it does)."""
