"""Pusher's request signing, checked against the examples Pusher publishes: the HTTP API's
worked authentication example and the channel authorization examples. No I/O."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from server.transports.pusher.signature import (
    MAX_CLOCK_SKEW_SECONDS,
    SignatureError,
    body_md5,
    sign,
    string_to_sign,
    verify_request,
)

# Pusher's published credentials for its examples (HTTP API reference, auth signatures).
KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"

# "Worked authentication example" of the HTTP API reference.
EXAMPLE_BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
EXAMPLE_TIMESTAMP = 1353088179
EXAMPLE_MD5 = "ec365a775a4cd0599faeb73354201b6f"
EXAMPLE_SIGNATURE = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
EXAMPLE_QUERY = (
    f"auth_key={KEY}&auth_timestamp={EXAMPLE_TIMESTAMP}&auth_version=1.0"
    f"&body_md5={EXAMPLE_MD5}&auth_signature={EXAMPLE_SIGNATURE}"
)


def test_the_worked_example_body_hashes_and_signs_as_documented() -> None:
    assert body_md5(EXAMPLE_BODY) == EXAMPLE_MD5
    params = [
        ("auth_key", KEY),
        ("auth_timestamp", str(EXAMPLE_TIMESTAMP)),
        ("auth_version", "1.0"),
        ("body_md5", EXAMPLE_MD5),
    ]
    text = string_to_sign("POST", "/apps/3/events", params)
    assert text == (
        "POST\n/apps/3/events\n"
        f"auth_key={KEY}&auth_timestamp=1353088179&auth_version=1.0&body_md5={EXAMPLE_MD5}"
    )
    assert sign(SECRET, text) == EXAMPLE_SIGNATURE


def test_channel_authorization_examples_sign_as_documented() -> None:
    # Pusher's auth signature reference: socket 1234.1234, private-foobar and presence-foobar.
    assert (
        sign(SECRET, "1234.1234:private-foobar")
        == "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    )
    channel_data = '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}'
    assert (
        sign(SECRET, f"1234.1234:presence-foobar:{channel_data}")
        == "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"
    )


def test_the_worked_example_request_verifies() -> None:
    params = verify_request(
        "POST",
        ["/apps/3/events"],
        EXAMPLE_QUERY,
        EXAMPLE_BODY,
        key=KEY,
        secret=SECRET,
        now=EXAMPLE_TIMESTAMP + 5,
    )
    assert dict(params)["auth_key"] == KEY


def test_parameters_are_sorted_by_lowercased_key_and_signed_unescaped() -> None:
    params = [("Name", "Something else"), ("auth_key", "foo"), ("info", "user_count,x")]
    assert string_to_sign("GET", "/p", params) == (
        "GET\n/p\nauth_key=foo&info=user_count,x&name=Something else"
    )


def _signed_query(path: str, query: list[tuple[str, str]], body: bytes, timestamp: int) -> str:
    params = [
        *query,
        ("auth_key", KEY),
        ("auth_timestamp", str(timestamp)),
        ("auth_version", "1.0"),
    ]
    if body:
        params.append(("body_md5", body_md5(body)))
    signature = sign(SECRET, string_to_sign("GET", path, params))
    return "&".join(f"{k}={v}" for k, v in [*params, ("auth_signature", signature)])


def test_percent_escapes_and_plus_signs_decode_before_the_check() -> None:
    # Signed as "info=user_count,subscription_count&filter_by_prefix=presence-"; a client
    # library may send the comma escaped.
    query = _signed_query(
        "/apps/3/channels",
        [("filter_by_prefix", "presence-"), ("info", "user_count,subscription_count")],
        b"",
        EXAMPLE_TIMESTAMP,
    ).replace(",", "%2C")
    params = verify_request(
        "GET", ["/apps/3/channels"], query, b"", key=KEY, secret=SECRET, now=EXAMPLE_TIMESTAMP
    )
    assert dict(params)["info"] == "user_count,subscription_count"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda q: q.replace(f"auth_key={KEY}", "auth_key=someone-else"), "unknown_auth_key"),
        (lambda q: q.replace("auth_version=1.0", "auth_version=2.0"), "unsupported_auth_version"),
        (lambda q: q.replace(EXAMPLE_SIGNATURE, "0" * 64), "invalid_signature"),
        (lambda q: q.replace(f"&body_md5={EXAMPLE_MD5}", ""), "missing_body_md5"),
        (lambda q: q.replace("auth_signature", "auth_sig"), "missing_auth_signature"),
        (lambda q: q + "&auth_key=" + KEY, "duplicate_auth_key"),
        (lambda q: q + "&extra=unsigned", "invalid_signature"),
        (lambda q: q.replace("=1353088179", "=soon"), "invalid_signature"),
        (lambda q: q + "&x=%ff", "invalid_query_string"),
    ],
)
def test_a_request_altered_in_any_way_is_refused(change: Callable[[str], str], code: str) -> None:
    with pytest.raises(SignatureError) as refused:
        verify_request(
            "POST",
            ["/apps/3/events"],
            change(EXAMPLE_QUERY),
            EXAMPLE_BODY,
            key=KEY,
            secret=SECRET,
            now=EXAMPLE_TIMESTAMP,
        )
    assert refused.value.code == code
    assert refused.value.message


def test_another_body_under_the_same_signature_is_refused() -> None:
    with pytest.raises(SignatureError) as refused:
        verify_request(
            "POST",
            ["/apps/3/events"],
            EXAMPLE_QUERY,
            EXAMPLE_BODY.replace(b"foo", b"bar"),
            key=KEY,
            secret=SECRET,
            now=EXAMPLE_TIMESTAMP,
        )
    assert refused.value.code == "body_md5_mismatch"


def test_another_path_or_method_under_the_same_signature_is_refused() -> None:
    for method, path in [("POST", "/apps/4/events"), ("GET", "/apps/3/events")]:
        with pytest.raises(SignatureError) as refused:
            verify_request(
                method,
                [path],
                EXAMPLE_QUERY,
                EXAMPLE_BODY,
                key=KEY,
                secret=SECRET,
                now=EXAMPLE_TIMESTAMP,
            )
        assert refused.value.code == "invalid_signature"


@pytest.mark.parametrize("skew", [MAX_CLOCK_SKEW_SECONDS + 1, -MAX_CLOCK_SKEW_SECONDS - 1])
def test_a_timestamp_more_than_600_seconds_away_is_refused(skew: int) -> None:
    with pytest.raises(SignatureError) as refused:
        verify_request(
            "POST",
            ["/apps/3/events"],
            EXAMPLE_QUERY,
            EXAMPLE_BODY,
            key=KEY,
            secret=SECRET,
            now=EXAMPLE_TIMESTAMP + skew,
        )
    assert refused.value.code == "auth_timestamp_expired"
    assert "600" in refused.value.message


@pytest.mark.parametrize("skew", [MAX_CLOCK_SKEW_SECONDS, -MAX_CLOCK_SKEW_SECONDS])
def test_a_timestamp_600_seconds_away_is_accepted(skew: int) -> None:
    verify_request(
        "POST",
        ["/apps/3/events"],
        EXAMPLE_QUERY,
        EXAMPLE_BODY,
        key=KEY,
        secret=SECRET,
        now=EXAMPLE_TIMESTAMP + skew,
    )
