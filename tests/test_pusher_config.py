"""Pusher credentials: given in the environment, or generated once into the data dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.config import ConfigError, load_config


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PGCAST_DATA_DIR": str(tmp_path), **extra}


def test_credentials_are_generated_once_and_kept(tmp_path: Path) -> None:
    first = load_config(env(tmp_path)).pusher
    again = load_config(env(tmp_path)).pusher
    assert (first.app_id, first.key, first.secret.value) == (
        again.app_id,
        again.key,
        again.secret.value,
    )
    assert first.app_id.isdigit()
    assert first.secret.value not in repr(first)
    assert not first.open_public_channels
    stored = json.loads((tmp_path / "pusher.json").read_text())
    assert stored["key"] == first.key
    assert (tmp_path / "pusher.json").stat().st_mode & 0o077 == 0


def test_the_environment_wins_over_the_generated_file(tmp_path: Path) -> None:
    load_config(env(tmp_path))
    given = load_config(
        env(
            tmp_path,
            PGCAST_PUSHER_APP_ID="12345",
            PGCAST_PUSHER_KEY="app-key-1",
            PGCAST_PUSHER_SECRET="app-secret-1",
            PGCAST_PUSHER_PUBLIC_CHANNELS="open",
        )
    ).pusher
    assert (given.app_id, given.key, given.secret.value) == ("12345", "app-key-1", "app-secret-1")
    assert given.open_public_channels


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PGCAST_PUSHER_APP_ID", "app-1", "digits only"),
        ("PGCAST_PUSHER_KEY", "short", "PGCAST_PUSHER_KEY must be"),
        ("PGCAST_PUSHER_SECRET", "has spaces in it", "PGCAST_PUSHER_SECRET must be"),
        ("PGCAST_PUSHER_PUBLIC_CHANNELS", "everyone", "signed-in or open"),
    ],
)
def test_a_bad_setting_is_one_clear_line(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(env(tmp_path, **{name: value}))
    assert "\n" not in str(refused.value)


def test_a_damaged_credentials_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "pusher.json").write_text("{not json")
    with pytest.raises(ConfigError, match="delete it"):
        load_config(env(tmp_path))
