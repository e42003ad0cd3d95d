"""Private chat and notifications: rows that reach exactly their people, live and on resume,
whoever writes them; and the REST API that writes and reads them."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.conftest import Client, Socket, count_rows

CREATED = "Illuminate\\Notifications\\Events\\BroadcastNotificationCreated"


class Person:
    def __init__(self, client: Client, user_id: int) -> None:
        self.client = client
        self.id = user_id

    @property
    def channel(self) -> str:
        return f"private-user.{self.id}"

    async def connect(self, after: str | None = None) -> Socket:
        return await self.client.connect(after=after, channels=[self.channel, "messages"])

    async def call(
        self, method: str, path: str, body: object = None, **headers: str
    ) -> tuple[int, Any]:
        async with self.client.http.request(
            method,
            self.client.server.url + path,
            json=body,
            headers={"Origin": self.client.server.origin, **headers},
        ) as response:
            return response.status, await response.json()


async def person(client_factory: Any, name: str) -> Person:
    client: Client = client_factory()
    me = await client.sign_in(f"{name.lower()}@example.com", name)
    return Person(client, int(me["user"]["id"]))


async def events(socket: Socket, count: int) -> list[tuple[str, str, Any]]:
    return [(f["channel"], f["event"], f["data"]) for f in await socket.frames(count)]


async def test_psql_direct_messages_reach_both_people_and_never_a_third(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, bob, carol = [await person(client_factory, n) for n in ("Alice", "Bob", "Carol")]
    sockets = {p.id: await p.connect() for p in (alice, bob, carol)}

    cursor = await db.execute(
        "INSERT INTO direct_messages (sender_id, recipient_id, content) "
        "VALUES (%s, %s, 'psst') RETURNING id",
        [alice.id, bob.id],
    )
    row = await cursor.fetchone()
    assert row is not None
    dm_id = row[0]
    await db.execute("UPDATE direct_messages SET content = 'psst!' WHERE id = %s", [dm_id])
    await db.execute("DELETE FROM direct_messages WHERE id = %s", [dm_id])
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'public')", [carol.id])

    for who in (alice, bob):
        got = await events(sockets[who.id], 4)
        assert [(c, e) for c, e, _ in got] == [
            (who.channel, "new-direct-message"),
            (who.channel, "direct-message-updated"),
            (who.channel, "direct-message-deleted"),
            ("messages", "new-message"),
        ]
        created = got[0][2]["direct_message"]
        assert created["content"] == "psst"
        assert (created["sender_id"], created["recipient_id"]) == (alice.id, bob.id)
        assert created["sender"] == {"id": alice.id, "name": "Alice", "avatar_url": None}
        assert created["recipient"]["name"] == "Bob"
        assert "email" not in json.dumps(created)
        assert got[1][2]["direct_message"]["content"] == "psst!"
        assert got[2][2] == {"id": dm_id}
    # Carol's next frame is the public message: nothing of theirs came before it.
    assert [(c, e) for c, e, _ in await events(sockets[carol.id], 1)] == [
        ("messages", "new-message")
    ]


async def test_direct_messages_and_notifications_resume_for_their_people_only(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, bob, carol = [await person(client_factory, n) for n in ("Alice", "Bob", "Carol")]
    bob_socket = await bob.connect()
    carol_socket = await carol.connect()
    await bob_socket.close()
    await carol_socket.close()

    await db.execute(
        "INSERT INTO direct_messages (sender_id, recipient_id, content) VALUES (%s, %s, 'one')",
        [alice.id, bob.id],
    )
    await db.execute(
        "INSERT INTO notifications (user_id, type, data) VALUES (%s, 'invoice-paid', %s)",
        [bob.id, json.dumps({"amount": 12, "id": "ignored"})],
    )
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'end')", [alice.id])

    resumed = await bob.connect(after=bob_socket.cursor)
    got = await events(resumed, 3)
    assert [e for _, e, _ in got] == ["new-direct-message", CREATED, "new-message"]
    notification = got[1][2]
    # Laravel's shape: the data, with the row's own id and type over anything in it.
    assert notification["amount"] == 12
    assert notification["type"] == "invoice-paid"
    assert notification["id"] != "ignored"
    # Carol resumes from before all of it and gets only the public message.
    carol_again = await carol.connect(after=carol_socket.cursor)
    assert [e for _, e, _ in await events(carol_again, 1)] == ["new-message"]


async def test_one_insert_notifies_each_user_on_their_own_channel(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    names = ("Ann", "Ben", "Cid")
    people = [await person(client_factory, n) for n in names]
    sockets = [await p.connect() for p in people]
    await db.execute(
        "INSERT INTO notifications (user_id, type, data) "
        "SELECT id, 'welcome', jsonb_build_object('for', name) FROM users "
        "WHERE id = ANY(%s)",
        [[p.id for p in people[:2]]],
    )
    await db.execute("INSERT INTO messages (user_id, content) VALUES (%s, 'end')", [people[0].id])
    for name, p, socket in zip(names[:2], people[:2], sockets[:2], strict=True):
        got = await events(socket, 2)
        assert (got[0][0], got[0][1], got[0][2]["for"]) == (p.channel, CREATED, name)
        assert got[1][1] == "new-message"
    assert [e for _, e, _ in await events(sockets[2], 1)] == ["new-message"]


async def test_deleting_a_user_cascades_and_broadcasts_the_deletions(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, bob = [await person(client_factory, n) for n in ("Alice", "Bob")]
    status, body = await alice.call(
        "POST", "/api/direct-messages", {"recipient_id": bob.id, "content": "hello"}
    )
    assert status == 201
    dm_id = body["direct_message"]["id"]
    socket = await alice.connect()
    await db.execute("DELETE FROM users WHERE id = %s", [bob.id])
    assert await events(socket, 1) == [(alice.channel, "direct-message-deleted", {"id": dm_id})]
    assert await count_rows(db, "direct_messages") == 0


async def test_the_api_writes_a_direct_message_that_skips_the_posters_own_socket(
    client_factory: Any,
) -> None:
    alice, bob = [await person(client_factory, n) for n in ("Alice", "Bob")]
    mine = await alice.connect()
    other_tab = await alice.connect()
    bobs = await bob.connect()
    status, body = await alice.call(
        "POST",
        "/api/direct-messages",
        {"recipient_id": bob.id, "content": "hi"},
        **{"X-Socket-ID": mine.socket_id},
    )
    assert status == 201
    sent = body["direct_message"]
    assert (sent["sender"]["name"], sent["recipient"]["name"], sent["read_at"]) == (
        "Alice",
        "Bob",
        None,
    )
    assert await events(bobs, 1) == [(bob.channel, "new-direct-message", {"direct_message": sent})]
    assert await events(other_tab, 1) == [
        (alice.channel, "new-direct-message", {"direct_message": sent})
    ]
    # The posting tab got nothing: its next frame is the next write.
    status, _ = await bob.call("POST", "/api/direct-messages/read", {"with": alice.id})
    assert status == 200
    (_, event, data) = (await events(mine, 1))[0]
    assert event == "direct-message-updated"
    assert data["direct_message"]["read_at"] is not None


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"recipient_id": "me", "content": "x"}, 400, "invalid_shape"),
        ({"recipient_id": True, "content": "x"}, 400, "invalid_shape"),
        ({"recipient_id": 0, "content": "x"}, 400, "invalid_shape"),
        ({"content": "x"}, 400, "invalid_shape"),
        ({"recipient_id": "BOB", "content": 5}, 400, "invalid_shape"),
        ({"recipient_id": "BOB", "content": "   "}, 422, "content_empty"),
        ({"recipient_id": "BOB", "content": "x" * 10_001}, 422, "content_too_long"),
        ({"recipient_id": "BOB", "content": "bell \x07"}, 422, "content_invalid"),
        ({"recipient_id": "ME", "content": "to myself"}, 422, "invalid_recipient"),
        ({"recipient_id": 999_999, "content": "to nobody"}, 422, "invalid_recipient"),
        ({"recipient_id": "GONE", "content": "to the departed"}, 422, "invalid_recipient"),
    ],
)
async def test_bad_direct_messages_are_refused_and_nothing_is_written(
    client_factory: Any,
    db: psycopg.AsyncConnection[Any],
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    alice, bob, gone = [await person(client_factory, n) for n in ("Alice", "Bob", "Gone")]
    await db.execute("DELETE FROM users WHERE id = %s", [gone.id])
    ids = {"BOB": bob.id, "ME": alice.id, "GONE": gone.id}
    if body.get("recipient_id") in ids:
        body = {**body, "recipient_id": ids[body["recipient_id"]]}
    got_status, got = await alice.call("POST", "/api/direct-messages", body)
    assert (got_status, got["error"]["code"]) == (status, code)
    assert got["error"]["message"]
    assert await count_rows(db, "direct_messages") == 0


async def test_direct_messages_need_sign_in_and_our_own_site(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, bob = [await person(client_factory, n) for n in ("Alice", "Bob")]
    anonymous = client_factory()
    for method, path, body in [
        ("POST", "/api/direct-messages", {"recipient_id": bob.id, "content": "x"}),
        ("GET", f"/api/direct-messages?with={bob.id}", None),
        ("GET", "/api/conversations", None),
        ("POST", "/api/direct-messages/read", {"with": bob.id}),
        ("GET", "/api/notifications", None),
        ("POST", "/api/notifications/read-all", None),
        ("GET", "/api/users?query=b", None),
    ]:
        async with anonymous.http.request(
            method,
            anonymous.server.url + path,
            json=body,
            headers={"Origin": anonymous.server.origin},
        ) as response:
            assert response.status == 401, path
            assert (await response.json())["error"]["code"] == "not_signed_in"
    for path, body in [
        ("/api/direct-messages", {"recipient_id": bob.id, "content": "x"}),
        ("/api/direct-messages/read", {"with": bob.id}),
        ("/api/notifications/read-all", None),
    ]:
        status, got = await alice.call("POST", path, body, Origin="https://evil.example")
        assert (status, got["error"]["code"]) == (403, "cross_site_request"), path
    assert await count_rows(db, "direct_messages") == 0


async def test_a_conversation_pages_oldest_first_and_conversations_count_unread(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, bob, carol = [await person(client_factory, n) for n in ("Alice", "Bob", "Carol")]
    for n in range(5):
        sender, recipient = (alice, bob) if n % 2 == 0 else (bob, alice)
        await db.execute(
            "INSERT INTO direct_messages (sender_id, recipient_id, content) VALUES (%s, %s, %s)",
            [sender.id, recipient.id, f"ab{n}"],
        )
    await db.execute(
        "INSERT INTO direct_messages (sender_id, recipient_id, content) VALUES (%s, %s, 'ca')",
        [carol.id, alice.id],
    )

    status, page = await alice.call("GET", f"/api/direct-messages?with={bob.id}&limit=3")
    assert status == 200
    assert [m["content"] for m in page["direct_messages"]] == ["ab2", "ab3", "ab4"]
    status, older = await alice.call(
        "GET", f"/api/direct-messages?with={bob.id}&limit=3&before={page['next_before']}"
    )
    assert [m["content"] for m in older["direct_messages"]] == ["ab0", "ab1"]
    assert older["next_before"] is None
    # Carol sees none of it.
    _, theirs = await carol.call("GET", f"/api/direct-messages?with={bob.id}")
    assert theirs["direct_messages"] == []

    _, listed = await alice.call("GET", "/api/conversations")
    assert [
        (c["user"]["name"], c["last_message"]["content"], c["unread_count"])
        for c in listed["conversations"]
    ] == [("Carol", "ca", 1), ("Bob", "ab4", 2)]
    status, marked = await alice.call("POST", "/api/direct-messages/read", {"with": bob.id})
    assert (status, marked) == (200, {"marked_read": 2})
    _, listed = await alice.call("GET", "/api/conversations")
    assert [c["unread_count"] for c in listed["conversations"]] == [1, 0]

    for query in ("with=x", "with=0", "", f"with={bob.id}&limit=0", f"with={bob.id}&before=-1"):
        status, error = await alice.call("GET", f"/api/direct-messages?{query}")
        assert status == 400, query
        assert error["error"]["code"].startswith("invalid_")


async def test_notifications_page_newest_first_and_marking_read_reaches_every_tab(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, bob = [await person(client_factory, n) for n in ("Alice", "Bob")]
    for n in range(3):
        await db.execute(
            "INSERT INTO notifications (user_id, type, data, created_at) "
            "VALUES (%s, 'ping', %s, now() + %s * interval '1 second')",
            [alice.id, json.dumps({"n": n}), n],
        )
    bobs_cursor = await db.execute(
        "INSERT INTO notifications (user_id, type) VALUES (%s, 'ping') RETURNING id", [bob.id]
    )
    bobs_row = await bobs_cursor.fetchone()
    assert bobs_row is not None

    status, page = await alice.call("GET", "/api/notifications?limit=2")
    assert status == 200
    assert [n["data"]["n"] for n in page["notifications"]] == [2, 1]
    assert page["unread_count"] == 3
    _, rest = await alice.call("GET", f"/api/notifications?limit=2&before={page['next_before']}")
    assert [n["data"]["n"] for n in rest["notifications"]] == [0]
    assert rest["next_before"] is None

    other_tab = await alice.connect()
    newest = page["notifications"][0]
    status, marked = await alice.call("POST", f"/api/notifications/{newest['id']}/read")
    assert status == 200
    assert marked["notification"]["read_at"] is not None
    (_, event, data) = (await events(other_tab, 1))[0]
    assert (event, data) == ("notification-updated", marked)
    # Marking it again changes nothing and broadcasts nothing.
    status, again = await alice.call("POST", f"/api/notifications/{newest['id']}/read")
    assert (status, again) == (200, marked)

    status, error = await alice.call("POST", f"/api/notifications/{bobs_row[0]}/read")
    assert (status, error["error"]["code"]) == (404, "not_found")
    status, error = await alice.call("POST", "/api/notifications/not-a-uuid/read")
    assert (status, error["error"]["code"]) == (400, "invalid_id")
    status, error = await alice.call("GET", "/api/notifications?before=nope")
    assert (status, error["error"]["code"]) == (400, "invalid_before")

    status, all_read = await alice.call("POST", "/api/notifications/read-all")
    assert (status, all_read) == (200, {"marked_read": 2})
    updates = await events(other_tab, 2)
    assert {e for _, e, _ in updates} == {"notification-updated"}
    _, after = await alice.call("GET", "/api/notifications")
    assert after["unread_count"] == 0
    cursor = await db.execute(
        "SELECT read_at IS NULL FROM notifications WHERE id = %s", [bobs_row[0]]
    )
    assert await cursor.fetchone() == (True,)


async def test_people_search_gives_names_never_emails(client_factory: Any) -> None:
    alice = await person(client_factory, "Alice")
    await person(client_factory, "Bob")
    await person(client_factory, "Bobby")
    status, found = await alice.call("GET", "/api/users?query=bob")
    assert status == 200
    assert [u["name"] for u in found["users"]] == ["Bob", "Bobby"]
    assert all(set(u) == {"id", "name", "avatar_url"} for u in found["users"])
    _, wildcard = await alice.call("GET", "/api/users?query=%25")
    assert wildcard["users"] == []
    _, everyone = await alice.call("GET", "/api/users")
    assert "Alice" not in [u["name"] for u in everyone["users"]]
    status, error = await alice.call("GET", "/api/users?query=" + "x" * 101)
    assert (status, error["error"]["code"]) == (400, "invalid_query")


async def test_the_session_route_says_signed_out_without_an_error(client_factory: Any) -> None:
    anonymous = client_factory()
    async with anonymous.http.get(anonymous.server.url + "/api/session") as response:
        assert response.status == 200
        assert await response.json() == {"user": None}
    alice = await person(client_factory, "Alice")
    status, me = await alice.call("GET", "/api/session")
    assert (status, me["user"]["name"]) == (200, "Alice")


async def test_a_socket_on_someone_elses_private_channel_is_closed_4403(
    client_factory: Any,
) -> None:
    alice, bob = [await person(client_factory, n) for n in ("Alice", "Bob")]
    ws = await bob.client.http.ws_connect(
        bob.client.socket_url(channels=[alice.channel]),
        headers={"Origin": bob.client.server.origin},
    )
    message = await ws.receive(timeout=10)
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 4403


async def test_the_private_audit_shows_who_wrote_to_whom_when_and_from_where(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, bob = [await person(client_factory, n) for n in ("Alice", "Bob")]
    status, sent = await alice.call(
        "POST", "/api/direct-messages", {"recipient_id": bob.id, "content": "audited"}
    )
    assert status == 201
    await db.execute(
        "INSERT INTO notifications (user_id, type) VALUES (%s, 'invoice-paid')", [alice.id]
    )
    await db.execute("DELETE FROM direct_messages")
    cursor = await db.execute(
        "SELECT kind, event, item_id, sender_id, sender_name, recipient_id, content_or_type, "
        "application_name, via_api, recorded_at IS NOT NULL FROM private_audit ORDER BY event_id"
    )
    dm_id = str(sent["direct_message"]["id"])
    assert await cursor.fetchall() == [
        (
            "direct message",
            "new-direct-message",
            dm_id,
            alice.id,
            "Alice",
            bob.id,
            "audited",
            "pgcast",
            True,
            True,
        ),
        (
            "notification",
            CREATED,
            ANY_ID,
            None,
            None,
            alice.id,
            "invoice-paid",
            "psql",
            False,
            True,
        ),
        (
            "direct message",
            "direct-message-deleted",
            dm_id,
            None,
            None,
            None,
            None,
            "psql",
            False,
            True,
        ),
    ]


class _AnyId:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and len(other) == 36

    def __hash__(self) -> int:
        return 0


ANY_ID = _AnyId()
