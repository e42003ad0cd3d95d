"""Configuration, read once from the environment and validated before anything starts."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one line meant for the operator."""


@dataclass(frozen=True)
class Secret:
    """A credential that never shows up in reprs, logs or tracebacks."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('********')"


@dataclass(frozen=True)
class Config:
    database_url: str | None
    listen_database_url: str | None
    """PGCAST_LISTEN_DATABASE_URL as given: None means DATABASE_URL's database."""
    data_dir: Path
    host: str
    port: int
    public_url: str
    session_key: Secret
    dev_login: bool
    max_message_chars: int
    event_retention: timedelta
    socket_backlog_bytes: int
    batch_window_ms: int
    event_loop: str
    rate_posts_per_minute: int
    rate_sockets_per_user: int
    rate_sockets_per_ip: int
    session_max_age: int
    presence_timeout: float
    presence_grace: float
    workos_api_key: Secret | None
    workos_client_id: str | None
    workos_webhook_secret: Secret | None
    workos_base_url: str | None
    workos_issuer: str | None
    pusher: PusherApp

    @property
    def listen_conninfo(self) -> str | None:
        """Where session-level work goes: LISTEN, the event feed's reader, migrations."""
        return self.listen_database_url or self.database_url

    @property
    def listen_setting(self) -> str:
        """The variable the listen URL came from, for errors."""
        return "PGCAST_LISTEN_DATABASE_URL" if self.listen_database_url else "DATABASE_URL"

    @property
    def pooled_database_url(self) -> bool:
        """A listen URL of its own says DATABASE_URL may be a pooler in transaction mode,
        which cannot keep a prepared statement between transactions."""
        return self.listen_database_url not in (None, self.database_url)

    @property
    def public_origin(self) -> str:
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def workos_enabled(self) -> bool:
        return self.workos_api_key is not None

    @property
    def heartbeat_seconds(self) -> float:
        """How often each process renews its row and sweeps away dead processes (README,
        "Presence across processes", has the arithmetic that keeps the timeout)."""
        return (self.presence_timeout - self.presence_grace) / PRESENCE_TICKS_PER_TIMEOUT

    @property
    def stale_seconds(self) -> float:
        """A process whose heartbeat is older than this is taken for lost."""
        return PRESENCE_STALE_TICKS * self.heartbeat_seconds


# A dead process's members are gone within the timeout when the stale threshold, two
# heartbeats (one to find it dead, one to delete its members after the grace) and the grace fit
# in it: stale + 2 * heartbeat + grace = 5/6 of (timeout - grace) + grace, which leaves a sixth
# of (timeout - grace) for the statements and the delivery of member_removed.
PRESENCE_TICKS_PER_TIMEOUT = 6
PRESENCE_STALE_TICKS = 3
# Shorter heartbeats would cost the database more than a presence list is worth.
MIN_HEARTBEAT_SECONDS = 0.1
MAX_PRESENCE_SECONDS = 3600.0

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(name: str, raw: str) -> timedelta:
    match = _DURATION.match(raw)
    if match is None:
        raise ConfigError(f"{name}={raw!r} is not a duration like 30m, 12h or 7d")
    amount, unit = match.groups()
    duration = timedelta(**{_DURATION_UNITS[unit]: int(amount)})
    if duration <= timedelta(0):
        raise ConfigError(f"{name} must be longer than zero")
    return duration


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range ({low} to {high})")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, *, zero_ok: bool) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        qualifier = "zero or more" if zero_ok else "more than zero"
        raise ConfigError(f"{name}={raw!r} must be {qualifier} seconds")
    if value > MAX_PRESENCE_SECONDS:
        raise ConfigError(f"{name}={raw!r} is more than {MAX_PRESENCE_SECONDS:.0f} seconds")
    return value


def _presence(env: Mapping[str, str]) -> tuple[float, float]:
    timeout = _seconds(env, "PGCAST_PRESENCE_TIMEOUT", 10.0, zero_ok=False)
    grace = _seconds(env, "PGCAST_PRESENCE_GRACE", 3.0, zero_ok=True)
    margin = PRESENCE_TICKS_PER_TIMEOUT * MIN_HEARTBEAT_SECONDS
    if timeout - grace < margin:
        raise ConfigError(
            f"PGCAST_PRESENCE_GRACE={grace:g} must be at least {margin:g} s shorter than "
            f"PGCAST_PRESENCE_TIMEOUT={timeout:g}"
        )
    return timeout, grace


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} must be 1 or 0")


# The names a browser on this machine may use for it (`localhost` resolves to either address).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """The host as a URL writes it: an IPv6 address goes in brackets."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    return f"[{host}]" if address.version == 6 else host


def _generated_once(path: Path, make: Callable[[], str]) -> str:
    """The text kept in `path`, made by `make` the first time. Written aside, then linked
    into place: a process starting at the same moment sees the whole file or none, never an
    empty one. The link fails if another process won, and then its text is read."""
    try:
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        text = make()
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(text + "\n")
            os.link(draft, path)
        finally:
            draft.unlink(missing_ok=True)
        return text
    except FileExistsError:
        return _generated_once(path, make)
    except OSError as error:
        raise ConfigError(f"cannot keep {path.name} in {path.parent}: {error.strerror}") from None


def _session_key(env: Mapping[str, str], data_dir: Path) -> Secret:
    raw = env.get("PGCAST_SESSION_KEY")
    if raw:
        try:
            Fernet(raw.encode())
        except ValueError:
            raise ConfigError(
                "PGCAST_SESSION_KEY must be a Fernet key (32 bytes, urlsafe base64)"
            ) from None
        return Secret(raw)
    # A key generated once and kept beside the embedded database keeps dev sessions alive
    # across restarts without anyone having to invent a secret.
    key_file = data_dir / "session.key"
    key = _generated_once(key_file, lambda: Fernet.generate_key().decode())
    try:
        Fernet(key.encode())
    except ValueError:
        raise ConfigError(f"{key_file} does not hold a valid Fernet key") from None
    return Secret(key)


@dataclass(frozen=True)
class PusherApp:
    """The credentials Pusher clients and server SDKs use. The key is public (it is in every
    client's configuration); the secret signs channel authorizations and API requests."""

    app_id: str
    key: str
    secret: Secret
    open_public_channels: bool
    """`PGCAST_PUSHER_PUBLIC_CHANNELS=open`: anyone with the key may join public channels."""


_PUSHER_APP_ID = re.compile(r"^[0-9]{1,20}$")
_PUSHER_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


def _pusher_app(env: Mapping[str, str], data_dir: Path) -> PusherApp:
    app_id = env.get("PGCAST_PUSHER_APP_ID") or None
    key = env.get("PGCAST_PUSHER_KEY") or None
    secret = env.get("PGCAST_PUSHER_SECRET") or None
    if app_id is None or key is None or secret is None:
        # Generated once beside the embedded database, like the session key: whichever of
        # the three is unset comes from there.
        path = data_dir / "pusher.json"
        text = _generated_once(
            path,
            lambda: json.dumps(
                {
                    "app_id": str(secrets.randbelow(10**9 - 10**6) + 10**6),
                    "key": secrets.token_hex(10),
                    "secret": secrets.token_hex(20),
                }
            ),
        )
        try:
            stored = json.loads(text)
            app_id = app_id or str(stored["app_id"])
            key = key or str(stored["key"])
            secret = secret or str(stored["secret"])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{path} does not hold Pusher credentials; delete it to generate new ones"
            ) from None
    if _PUSHER_APP_ID.match(app_id) is None:
        raise ConfigError("PGCAST_PUSHER_APP_ID must be digits only")
    if _PUSHER_TOKEN.match(key) is None:
        raise ConfigError("PGCAST_PUSHER_KEY must be 8 to 128 of A-Z a-z 0-9 _ -")
    if _PUSHER_TOKEN.match(secret) is None:
        raise ConfigError("PGCAST_PUSHER_SECRET must be 8 to 128 of A-Z a-z 0-9 _ -")
    public = (env.get("PGCAST_PUSHER_PUBLIC_CHANNELS") or "signed-in").lower()
    if public not in ("signed-in", "open"):
        raise ConfigError("PGCAST_PUSHER_PUBLIC_CHANNELS must be signed-in or open")
    return PusherApp(app_id, key, Secret(secret), open_public_channels=public == "open")


EVENT_LOOPS = ("uvloop", "asyncio")


def event_loop(env: Mapping[str, str]) -> str:
    """PGCAST_EVENT_LOOP: the event loop `pgcast serve` runs on."""
    loop = (env.get("PGCAST_EVENT_LOOP") or EVENT_LOOPS[0]).lower()
    if loop not in EVENT_LOOPS:
        raise ConfigError("PGCAST_EVENT_LOOP must be uvloop or asyncio")
    return loop


def load_config(env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    data_dir = Path(env.get("PGCAST_DATA_DIR") or ".pgcast").expanduser().absolute()
    host = env.get("PGCAST_HOST") or "127.0.0.1"
    port = _int(env, "PGCAST_PORT", 8080, low=0, high=65535)

    public_url = (env.get("PGCAST_PUBLIC_URL") or f"http://{url_host(host)}:{port}").rstrip("/")
    try:
        parts = urlsplit(public_url)
        public_host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise ConfigError(f"PGCAST_PUBLIC_URL={public_url!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not public_host:
        raise ConfigError(f"PGCAST_PUBLIC_URL={public_url!r} must be an http(s) URL")

    api_key = env.get("WORKOS_API_KEY") or None
    client_id = env.get("WORKOS_CLIENT_ID") or None
    if (api_key is None) != (client_id is None):
        raise ConfigError("set both WORKOS_API_KEY and WORKOS_CLIENT_ID, or neither")

    # Dev login signs anyone in as anyone: only the people at this machine may reach it.
    # The listen address alone does not say so: a reverse proxy on this machine can publish
    # a loopback listener to the world, and then the public origin is not loopback.
    dev_login = _flag(env, "PGCAST_DEV_LOGIN")
    if dev_login is None:
        dev_login = api_key is None and is_loopback(host) and is_loopback(public_host)
    if dev_login and not is_loopback(host):
        raise ConfigError(
            f"dev login is on but PGCAST_HOST={host} is not a loopback address; "
            "unset PGCAST_DEV_LOGIN or listen on 127.0.0.1"
        )
    if dev_login and not is_loopback(public_host):
        raise ConfigError(
            f"dev login is on but PGCAST_PUBLIC_URL={public_url} is not a loopback address; "
            "unset PGCAST_DEV_LOGIN or configure WorkOS"
        )

    database_url = env.get("DATABASE_URL") or None
    listen_database_url = env.get("PGCAST_LISTEN_DATABASE_URL") or None
    if listen_database_url is not None and database_url is None:
        # The embedded database has no pooler in front of it to go around.
        raise ConfigError(
            "PGCAST_LISTEN_DATABASE_URL needs DATABASE_URL: set both, or neither for the "
            "embedded database"
        )

    webhook_secret = env.get("WORKOS_WEBHOOK_SECRET") or None
    presence_timeout, presence_grace = _presence(env)
    return Config(
        database_url=database_url,
        listen_database_url=listen_database_url,
        data_dir=data_dir,
        host=host,
        port=port,
        public_url=public_url,
        session_key=_session_key(env, data_dir),
        dev_login=dev_login,
        max_message_chars=_int(env, "PGCAST_MAX_MESSAGE_CHARS", 10_000, low=1, high=1_000_000),
        event_retention=parse_duration(
            "PGCAST_EVENT_RETENTION", env.get("PGCAST_EVENT_RETENTION") or "7d"
        ),
        socket_backlog_bytes=_int(
            env, "PGCAST_SOCKET_BACKLOG_BYTES", 8 * 1024 * 1024, low=64 * 1024, high=1 << 31
        ),
        batch_window_ms=_int(env, "PGCAST_BATCH_WINDOW_MS", 5, low=0, high=1000),
        event_loop=event_loop(env),
        rate_posts_per_minute=_int(env, "PGCAST_RATE_POSTS_PER_MINUTE", 60, low=0, high=1_000_000),
        rate_sockets_per_user=_int(env, "PGCAST_RATE_SOCKETS_PER_USER", 20, low=0, high=1_000_000),
        rate_sockets_per_ip=_int(env, "PGCAST_RATE_SOCKETS_PER_IP", 500, low=0, high=1_000_000),
        session_max_age=_int(
            env, "PGCAST_SESSION_MAX_AGE", 14 * 24 * 3600, low=60, high=365 * 24 * 3600
        ),
        presence_timeout=presence_timeout,
        presence_grace=presence_grace,
        workos_api_key=Secret(api_key) if api_key else None,
        workos_client_id=client_id,
        workos_webhook_secret=Secret(webhook_secret) if webhook_secret else None,
        workos_base_url=env.get("WORKOS_BASE_URL") or None,
        workos_issuer=env.get("WORKOS_ISSUER") or None,
        pusher=_pusher_app(env, data_dir),
    )
