"""Who may open a session: Bearer-only API keys and the Origin allow-list, as rules and over a real socket."""

from __future__ import annotations

import json

import pytest
import websockets
from multidict import CIMultiDict, CIMultiDictProxy

from realtime.access import AccessPolicy, allowed_origin_set, normalize_origin
from tests.test_server import running_server


def headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in values.items()}))


@pytest.mark.parametrize(
    ("authorization", "ok"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("s3cret", False),
        ("Bearer wrong", False),
        ("Basic s3cret", False),
        ("Bearer", False),
        ("", False),
    ],
)
def test_only_a_bearer_header_authenticates(authorization, ok):
    assert AccessPolicy(api_key="s3cret").authorized(headers(Authorization=authorization)) is ok


def test_the_subprotocol_key_authenticates():
    offered = headers(Sec_WebSocket_Protocol="realtime, openai-insecure-api-key.s3cret")
    assert AccessPolicy(api_key="s3cret").authorized(offered)
    assert not AccessPolicy(api_key="other").authorized(offered)


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        ("http://localhost:3000", "127.0.0.1:8000", True),
        ("http://127.0.0.1:5173", "127.0.0.1:8000", True),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://192.168.1.5:8000", "192.168.1.5:8000", True),  # a page this server served on the LAN
        ("http://192.168.1.5:9000", "192.168.1.5:8000", False),
        ("https://evil.example", "127.0.0.1:8000", False),
        # DNS rebinding: a foreign name pointed at this server is not its own origin.
        ("http://evil.example:8000", "evil.example:8000", False),
        ("null", "127.0.0.1:8000", False),
        ("file://", "127.0.0.1:8000", False),
    ],
)
def test_origin_rules(origin, host, ok):
    assert AccessPolicy().origin_allowed(headers(Origin=origin, Host=host)) is ok


def test_no_origin_is_an_sdk_and_allowed_origins_extend_the_list():
    assert AccessPolicy().origin_allowed(headers(Host="127.0.0.1:8000"))
    policy = AccessPolicy(allowed_origins=allowed_origin_set(["https://App.Example.com:443/"]))
    assert policy.origin_allowed(headers(Origin="https://app.example.com", Host="127.0.0.1:8000"))
    assert not policy.origin_allowed(headers(Origin="https://other.example.com", Host="127.0.0.1:8000"))
    assert AccessPolicy(allowed_origins=frozenset({"*"})).origin_allowed(headers(Origin="https://x.example"))


def test_origin_list_entries_are_checked():
    assert normalize_origin("HTTP://Example.com:80") == "http://example.com"
    with pytest.raises(ValueError, match="not an origin"):
        allowed_origin_set(["example.com"])


async def test_foreign_origin_gets_403_at_the_handshake_with_or_without_a_key():
    for config in ({}, {"api_key": "s3cret"}):
        async with running_server(allowed_origins=("https://app.example.com",), **config) as (host, _):
            url = f"ws://{host}/v1/realtime"
            auth = {"Authorization": "Bearer s3cret"}
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(url, origin="https://evil.example", additional_headers=auth)
            assert refused.value.response.status_code == 403
            assert b"evil.example" in refused.value.response.body
            for allowed in ("https://app.example.com", f"http://{host}", "http://localhost:1234"):
                async with websockets.connect(url, origin=allowed, additional_headers=auth) as ws:
                    assert json.loads(await ws.recv())["type"] == "session.created"


async def test_a_bare_key_without_bearer_is_refused():
    async with running_server(api_key="s3cret") as (host, _):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(
                f"ws://{host}/v1/realtime", additional_headers={"Authorization": "s3cret"}
            )
        assert refused.value.response.status_code == 401
