"""Decoding limits checked before work, and error messages that never echo a client's payload."""

from __future__ import annotations

import json

import pytest

from realtime.protocol.codec import MAX_NESTING_DEPTH, decode_client_event, encode_server_event, peek_event_id
from realtime.protocol.errors import MAX_QUOTED_CHARS, ProtocolError, quote
from realtime.session.session import Session
from realtime.session.settings import SessionSettings
from tests.conftest import strict_server_event


def error_for(raw: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as raised:
        decode_client_event(raw)
    return raised.value


@pytest.mark.parametrize("depth", [MAX_NESTING_DEPTH + 1, 1_000, 100_000])
def test_deep_nesting_is_a_client_error_with_the_event_id(depth):
    raw = '{"type":"session.update","event_id":"evt_1","session":' + "[" * depth + "]" * depth + "}"
    error = error_for(raw)
    assert error.code == "invalid_event" and error.error_type == "invalid_request_error"
    assert error.event_id == "evt_1"
    assert error_for(raw.encode()).event_id == "evt_1"
    assert error_for("[" * depth).event_id is None


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = "[{" * 5_000 + '\\"]' * 10
    raw = json.dumps({"type": "conversation.item.delete", "item_id": text, "event_id": "e"})
    decoded = decode_client_event(raw)
    assert decoded.item_id == text.replace('\\"', '"') or decoded.item_id == json.loads(raw)["item_id"]


def test_nesting_up_to_the_limit_is_decoded():
    nested = "[" * (MAX_NESTING_DEPTH - 3) + "]" * (MAX_NESTING_DEPTH - 3)
    raw = '{"type":"session.update","session":{"tools":[' + nested + "]}}"
    assert decode_client_event(raw).session.tools is not None


def test_peek_event_id_only_reads_the_top_level_member():
    assert peek_event_id('{"a":{"event_id":"inner"},"event_id":"outer"}') is None  # first member is nested
    assert peek_event_id('{"event_id":"e\\u00e9\\"x","a":1}') == 'eé"x'
    assert peek_event_id('{"text":"\\"event_id\\":\\"fake\\""}') is None


def test_quote_escapes_and_cuts():
    assert quote("bogus") == "'bogus'"
    assert quote("a\nb\x00") == "'a\\nb\\x00'"
    long = quote("x" * 1_000_000)
    assert len(long) < MAX_QUOTED_CHARS + 40 and "1000000 characters" in long
    assert quote(10**5000) == "<a number too long to show>"


@pytest.mark.parametrize(
    "event",
    [
        {"type": "x" * 1_000_000},
        {"type": "response.create", "response": {"max_output_tokens": "y" * 1_000_000}},
    ],
)
def test_decoder_errors_quote_only_a_prefix(event):
    error = error_for(json.dumps(event))
    assert len(error.message) < 300 and "characters)" in error.message


BIG = "z" * 1_000_000


@pytest.mark.parametrize(
    "event",
    [
        {"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": BIG}}}}},
        {"type": "session.update", "session": {"type": BIG}},
        {
            "type": "session.update",
            "session": {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": BIG}}}},
        },
        {"type": "conversation.item.delete", "item_id": BIG},
        {"type": "conversation.item.retrieve", "item_id": BIG},
        {"type": "conversation.item.create", "item": {"type": BIG}},
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": BIG}]},
        },
        '{"type":"response.create","response":{"max_output_tokens":1' + "0" * 5000 + "}}",
    ],
)
def test_session_errors_quote_only_a_prefix(event):
    session = Session("sess_1", SessionSettings())
    session.receive_message(event if isinstance(event, str) else json.dumps({**event, "event_id": "evt_9"}))
    (error,) = [
        w for w in map(strict_server_event, map(encode_server_event, session.drain()[0])) if w.type == "error"
    ]
    assert error.error.event_id == (None if isinstance(event, str) else "evt_9")
    assert error.error.code != "internal_error" and len(error.error.message) < 300


def test_image_errors_quote_only_a_prefix_of_the_media_type():
    session = Session("sess_1", SessionSettings())
    for image in (
        "data:text/" + "p" * 100_000 + ";base64,AAAA",
        "data:image/" + "g" * 100_000 + ";base64,AAAA",
    ):
        session.receive_message(
            json.dumps({"type": "input_image_buffer.append", "image": image, "event_id": "e"})
        )
    errors = [
        w for w in map(strict_server_event, map(encode_server_event, session.drain()[0])) if w.type == "error"
    ]
    assert [e.error.code for e in errors] == ["invalid_image_url", "unsupported_image_format"]
    assert all(len(e.error.message) < 300 for e in errors)
