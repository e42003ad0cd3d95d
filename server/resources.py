"""Where the SQL and the built UI live.

In a checkout (and an editable install) they sit beside the package: db/ and ui/dist/. A
regular install puts the package in site-packages and leaves them out, so there they are
looked for under <prefix>/share/pgcast/, where the Docker image copies them.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _root() -> Path:
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "db" / "triggers.sql").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "pgcast"


ROOT = _root()
DB_DIR = ROOT / "db"
UI_DIST = ROOT / "ui" / "dist"
