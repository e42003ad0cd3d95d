"""The Pusher Channels protocol: `GET /app/{key}`, `/broadcasting/auth`, and the HTTP API."""
