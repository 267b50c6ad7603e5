"""An explicit null in any optional client field means "not given", generated from the event structs."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator

import msgspec
import pytest
from msgspec import NODEFAULT

from realtime.protocol import client_events as ce
from realtime.protocol.codec import decode_client_event
from tests.session.test_session import drive, make_session

USER_ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
ASSISTANT_ITEM = {
    "id": "item_b",
    "type": "message",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "hello"}],
}

# The smallest valid instance of each client event; every event type must have one.
MINIMAL_EVENTS = {
    "session.update": {"session": {}},
    "input_audio_buffer.append": {"audio": "AAAA"},
    "input_audio_buffer.commit": {},
    "input_audio_buffer.clear": {},
    "input_image_buffer.append": {"image": "not-an-image"},
    "conversation.item.create": {"item": USER_ITEM},
    "conversation.item.retrieve": {"item_id": "item_b"},
    "conversation.item.truncate": {"item_id": "item_b", "content_index": 0, "audio_end_ms": 0},
    "conversation.item.delete": {"item_id": "item_b"},
    "response.create": {},
    "response.cancel": {},
    "output_audio_buffer.clear": {},
}

# Nested structures an optional field is filled with before one of their own fields is nulled.
MINIMAL_STRUCTS: dict[type, dict] = {
    ce.TurnDetectionSpec: {"type": "server_vad"},
    ce.Item: USER_ITEM,
    ce.ContentPart: {"type": "input_text", "text": "hi"},
}


def _nested_struct(annotation: typing.Any) -> tuple[type | None, bool]:
    """The struct type a field holds (directly or as list elements), and whether it is a list."""
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, msgspec.Struct):
            return arg, False
        if typing.get_origin(arg) is list:
            (element,) = typing.get_args(arg)
            if isinstance(element, type) and issubclass(element, msgspec.Struct):
                return element, True
    return None, False


def null_variants(cls: type, obj: dict, path: str = "") -> Iterator[tuple[str, dict, dict]]:
    """(path, obj with that optional field null, obj without it), recursively through nested structs."""
    hints = typing.get_type_hints(cls)
    for field in msgspec.structs.fields(cls):
        name, optional = field.name, field.default is not NODEFAULT
        if optional and name not in cls.null_is_a_value:
            rest = {k: v for k, v in obj.items() if k != name}
            yield path + name, {**obj, name: None}, rest
        nested, is_list = _nested_struct(hints[name])
        if nested is None:
            continue
        inner = obj.get(name)
        inner = (inner[0] if is_list else inner) if inner else MINIMAL_STRUCTS.get(nested, {})
        for sub_path, with_null, without in null_variants(nested, inner, f"{path}{name}."):
            yield (
                sub_path,
                {**obj, name: [with_null] if is_list else with_null},
                {
                    **obj,
                    name: [without] if is_list else without,
                },
            )


def all_variants() -> list[tuple[str, dict, dict]]:
    assert set(MINIMAL_EVENTS) == set(ce.EVENT_TYPES), "give every client event a minimal instance"
    cases = []
    for event_type, body in MINIMAL_EVENTS.items():
        event = {"type": event_type, "event_id": "evt_1", **body}
        for path, with_null, without in null_variants(ce.EVENT_TYPES[event_type], event):
            cases.append((f"{event_type}:{path}", with_null, without))
    return cases


VARIANTS = all_variants()


def test_the_generated_cases_reach_nested_fields():
    paths = {case[0] for case in VARIANTS}
    assert "response.create:response.instructions" in paths
    assert "session.update:session.audio.input.format.rate" in paths
    assert "session.update:session.audio.input.turn_detection.threshold" in paths
    assert "response.create:response.input.content.text" in paths
    assert "session.update:session.audio.input.turn_detection" not in paths  # null turns VAD off
    assert len(VARIANTS) > 60


@pytest.mark.parametrize(("with_null", "without"), [c[1:] for c in VARIANTS], ids=[c[0] for c in VARIANTS])
def test_null_decodes_as_absent(with_null, without):
    assert decode_client_event(json.dumps(with_null)) == decode_client_event(json.dumps(without))


def _session_effect(message: dict) -> tuple[list[dict], str]:
    session = make_session()
    drive(session, {"type": "conversation.item.create", "item": ASSISTANT_ITEM})
    events, commands = drive(session, message)
    return events, repr(commands)


@pytest.mark.parametrize(("with_null", "without"), [c[1:] for c in VARIANTS], ids=[c[0] for c in VARIANTS])
def test_null_has_the_effect_of_absent_in_a_session(with_null, without):
    events, commands = _session_effect(with_null)
    assert not [e for e in events if e["type"] == "error" and e["error"]["code"] == "invalid_type"]
    assert (events, commands) == _session_effect(without)


def test_null_keeps_its_meaning_where_it_has_one():
    event = decode_client_event(
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "turn_detection": None,
                    "audio": {
                        "input": {"turn_detection": None, "transcription": None, "noise_reduction": None}
                    },
                },
            }
        )
    )
    audio_input = event.session.audio.input
    assert event.session.turn_detection is None and audio_input.turn_detection is None
    assert audio_input.transcription is None and audio_input.noise_reduction is None


def test_livekit_response_create_with_null_instructions_starts_a_response():
    session = make_session()
    drive(session, {"type": "conversation.item.create", "item": USER_ITEM})
    events, commands = drive(
        session,
        {
            "type": "response.create",
            "response": {"instructions": None, "metadata": {"client_event_id": "x"}, "tool_choice": None},
        },
    )
    assert [e["type"] for e in events][0] == "response.created"
    assert commands and commands[0].request.instructions == session.settings.instructions
