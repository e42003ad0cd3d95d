"""pgcast's own protocol: `GET /ws`."""
