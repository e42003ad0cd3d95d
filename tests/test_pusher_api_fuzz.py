"""Hostile input on the Pusher HTTP API, fuzzed: whatever arrives (unsigned or signed, any
query string, any body), the answer is a clear error or a success, never a server error."""

from __future__ import annotations

import hashlib
import json
import time
from urllib.parse import quote

import aiohttp
import pusher.http
import pusher.signature
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.conftest import RunningServer

ROUTES = [
    ("POST", "/apps/{app_id}/events"),
    ("POST", "/apps/{app_id}/batch_events"),
    ("GET", "/apps/{app_id}/channels"),
    ("GET", "/apps/{app_id}/channels/news"),
    ("GET", "/apps/{app_id}/channels/presence-room/users"),
    ("POST", "/apps/{app_id}/users/1/terminate_connections"),
    ("POST", "/users/1/terminate_connections"),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

event_fields = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=30), json_values),
        "channel": st.one_of(
            st.sampled_from(["news", "presence-room", "#server-to-user-1"]), json_values
        ),
        "channels": st.one_of(
            st.lists(
                st.one_of(st.sampled_from(["news", "a;b", "private-x"]), st.text(max_size=10)),
                max_size=5,
            ),
            json_values,
        ),
        "data": st.one_of(st.text(max_size=60), json_values.map(json.dumps), json_values),
        "socket_id": st.one_of(
            st.text(max_size=20), st.sampled_from(["1.2", "abc_-."]), json_values
        ),
        "info": st.one_of(
            st.sampled_from(["user_count", "subscription_count,user_count", ",,", "cache"]),
            st.text(max_size=20),
            json_values,
        ),
    },
)

channel_names = st.sampled_from(["news", "a;b", "presence-room", "private-x", "#server-to-user-7"])
# Events that are mostly right, so the fuzz also reaches the database with odd names and data.
plausible_events = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=20),
        "data": st.one_of(st.text(max_size=60), json_values.map(json.dumps)),
    },
    optional={
        "socket_id": st.sampled_from(["1.2", "abc_-.", "", "a b"]),
        "info": st.sampled_from(["user_count", "subscription_count", "user_count,cache"]),
    },
)

bodies = st.one_of(
    st.tuples(plausible_events, st.lists(channel_names, min_size=1, max_size=3)).map(
        lambda pair: json.dumps({**pair[0], "channels": pair[1]}).encode()
    ),
    st.lists(st.tuples(plausible_events, channel_names), min_size=1, max_size=3).map(
        lambda batch: json.dumps({"batch": [{**e, "channel": c} for e, c in batch]}).encode()
    ),
    event_fields.map(lambda fields: json.dumps(fields).encode()),
    st.lists(event_fields, max_size=12).map(lambda batch: json.dumps({"batch": batch}).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
)

query_text = st.text(
    alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyz_=&%+,.-;0123456789ABCDEF")),
    max_size=120,
)


def assert_clear_answer(status: int, text: str) -> None:
    event(f"status {status}")  # --hypothesis-show-statistics shows what the fuzz reached
    assert status < 500, (status, text)
    if status >= 400:
        error = json.loads(text)["error"]
        assert error["code"]
        assert error["message"]


def signed_url(
    server: RunningServer, method: str, path: str, params: list[tuple[str, str]], body: bytes
) -> str:
    """A request signed with the SDK's own signing functions (not pgcast's)."""
    app = server.config.pusher
    query = {name: value for name, value in params}
    query.update(
        {
            "auth_key": app.key,
            "auth_timestamp": str(int(time.time())),
            "auth_version": "1.0",
            "body_md5": hashlib.md5(body, usedforsecurity=False).hexdigest(),
        }
    )
    text = "\n".join([method, path, pusher.http.make_query_string(query)])
    query["auth_signature"] = pusher.signature.sign(app.secret.value, text)
    return (
        server.url
        + path
        + "?"
        + "&".join(
            f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in query.items()
        )
    )


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=st.sampled_from(ROUTES), query=query_text, body=bodies)
async def test_fuzzed_unsigned_requests_get_a_clear_error(
    server: RunningServer, route: tuple[str, str], query: str, body: bytes
) -> None:
    method, path = route
    url = URL(
        server.url + path.format(app_id=server.config.pusher.app_id) + "?" + query, encoded=True
    )
    async with aiohttp.ClientSession() as http, http.request(method, url, data=body) as response:
        assert_clear_answer(response.status, await response.text())
        assert response.status in (400, 401, 404, 413)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.booleans(), body=bodies)
async def test_fuzzed_signed_bodies_publish_or_get_a_clear_error(
    server: RunningServer, batch: bool, body: bytes
) -> None:
    path = f"/apps/{server.config.pusher.app_id}/{'batch_events' if batch else 'events'}"
    url = URL(signed_url(server, "POST", path, [], body), encoded=True)
    async with aiohttp.ClientSession() as http, http.post(url, data=body) as response:
        text = await response.text()
    assert_clear_answer(response.status, text)
    assert response.status in (200, 400, 413), text


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(
        ["/channels", "/channels/news", "/channels/presence-room", "/channels/presence-room/users"]
    ),
    params=st.lists(
        st.tuples(
            st.sampled_from(["info", "filter_by_prefix", "other"]),
            st.text(max_size=30).filter(lambda text: "\x00" not in text),
        ),
        max_size=4,
        unique_by=lambda pair: pair[0].lower(),
    ),
)
async def test_fuzzed_signed_queries_answer_or_get_a_clear_error(
    server: RunningServer, path: str, params: list[tuple[str, str]]
) -> None:
    full_path = f"/apps/{server.config.pusher.app_id}{path}"
    url = URL(signed_url(server, "GET", full_path, params, b""), encoded=True)
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    assert_clear_answer(response.status, text)
    assert response.status in (200, 400), text
