"""The session core driven directly: no sockets, no threads, a scripted engine."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from realtime.engine.fake_backend import FakeBackend
from realtime.engine.port import (
    AbandonAudioTurn,
    AppendAudioTurn,
    AudioPart,
    BeginAudioTurn,
    CancelGeneration,
    GenerationDone,
    ImagePart,
    StartGeneration,
    TextDelta,
    Usage,
)
from realtime.protocol.codec import encode_server_event
from realtime.protocol.ids import IdFactory
from realtime.session.session import Session
from realtime.session.settings import SessionSettings
from tests.conftest import pcm16_b64, png_data_uri, silence, strict_server_event, tone


class EnergyDetector:
    """Loud frames are speech: makes VAD timing exact so the session's wiring can be checked."""

    frame_n_samples = 320
    hangover_n_samples = 0

    def is_speech(self, frame: np.ndarray) -> bool:
        return bool(np.abs(frame.astype(np.int32)).mean() > 1000)


def make_session(**settings) -> Session:
    session = Session(
        "sess_test",
        SessionSettings(**settings),
        ids=IdFactory(random.Random(0)),
        detector_factory=lambda threshold: EnergyDetector(),
    )
    session.start()
    session.drain()
    return session


def drive(session: Session, *messages: dict | str) -> tuple[list[dict], list]:
    """Feed client messages; return the server events (as wire dicts, each strictly valid) and commands."""
    for message in messages:
        session.receive_message(message if isinstance(message, str) else json.dumps(message))
    return drain(session)


def drain(session: Session) -> tuple[list[dict], list]:
    events, commands = session.drain()
    wire = [encode_server_event(e) for e in events]
    for text in wire:
        strict_server_event(text)
    return [json.loads(text) for text in wire], commands


def run_engine(session: Session, commands: list, backend: FakeBackend | None = None) -> list[dict]:
    """Play the engine for each StartGeneration, synchronously, and return what the session emitted."""
    backend = backend or FakeBackend()
    events: list[dict] = []
    for command in commands:
        if isinstance(command, StartGeneration):
            for output in backend.generate(command.request, lambda: False):
                session.receive_engine_output(output)
            new_events, _ = drain(session)
            events += new_events
    return events


def generations(commands: list) -> list[StartGeneration]:
    return [c for c in commands if isinstance(c, StartGeneration)]


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def user_text(text: str) -> dict:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


TEXT_RESPONSE_GRAMMAR = ["response.created"]
# The message opens with the first text: a response may instead be function calls only.
TEXT_RESPONSE_OPENING = [
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
]
TEXT_RESPONSE_END = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]


def test_session_created_first_and_valid():
    session = Session("sess_a", SessionSettings())
    session.start()
    events, _ = drain(session)
    assert types(events) == ["session.created"]
    assert events[0]["session"]["id"] == "sess_a"
    assert events[0]["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"


def test_text_turn_full_event_grammar():
    session = make_session()
    drain(session)
    events, commands = drive(session, user_text("hello there"), {"type": "response.create"})
    assert types(events) == ["conversation.item.added", "conversation.item.done", *TEXT_RESPONSE_GRAMMAR]
    assert [type(c) for c in commands] == [StartGeneration]
    request = commands[0].request
    assert request.turns[-1].role == "user"
    engine_events = run_engine(session, commands)
    n_deltas = len(engine_events) - len(TEXT_RESPONSE_OPENING) - len(TEXT_RESPONSE_END)
    assert types(engine_events) == (
        TEXT_RESPONSE_OPENING + ["response.output_text.delta"] * n_deltas + TEXT_RESPONSE_END
    )
    text = "".join(e["delta"] for e in engine_events if e["type"] == "response.output_text.delta")
    assert text == "text:hello there"
    done = engine_events[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"] == [{"type": "output_text", "text": text}]
    assert done["usage"]["output_tokens"] == n_deltas
    assert engine_events[-2]["item"]["status"] == "completed"
    ids = [e["event_id"] for e in events + engine_events]
    assert len(set(ids)) == len(ids)


def test_second_turn_sends_the_whole_conversation_with_the_answer():
    session = make_session()
    _, commands = drive(session, user_text("one"), {"type": "response.create"})
    run_engine(session, commands)
    _, commands = drive(session, user_text("two"), {"type": "response.create"})
    turns = commands[0].request.turns
    assert [t.role for t in turns] == ["user", "assistant", "user"]
    assert turns[1].item_id == commands[0].request.turns[1].item_id
    assert turns[1].parts[0].text == "text:one"


def test_manual_audio_turn():
    session = make_session(turn_detection=None)
    audio = tone(1000)
    events, _ = drive(
        session,
        {"type": "input_audio_buffer.append", "audio": pcm16_b64(audio[:12001])},
        {"type": "input_audio_buffer.append", "audio": pcm16_b64(audio[12001:])},
        {"type": "input_audio_buffer.commit", "event_id": "c1"},
    )
    assert types(events) == ["input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    assert events[1]["item"]["content"] == [{"type": "input_audio", "transcript": None, "audio": None}]
    _, commands = drive(session, {"type": "response.create"})
    (part,) = commands[0].request.turns[-1].parts
    assert isinstance(part, AudioPart)
    assert len(part.samples) == 16000
    assert part.samples.dtype == np.float32


def test_vad_turn_and_auto_response():
    session = make_session()
    drain(session)
    audio = np.concatenate([silence(500), tone(800), silence(700)])
    events, commands = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(audio)})
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        *TEXT_RESPONSE_GRAMMAR,
    ]
    started, stopped, committed = events[:3]
    assert started["audio_start_ms"] == 500 - 300  # prefix padding
    assert stopped["audio_end_ms"] == 1300
    assert started["item_id"] == stopped["item_id"] == committed["item_id"] == events[3]["item"]["id"]
    (part,) = generations(commands)[0].request.turns[-1].parts
    # From the padded start to where the 500 ms silence wait ran out.
    assert len(part.samples) == (1300 + 500 - 200) * 16


def test_speech_start_cancels_streaming_response_barge_in():
    session = make_session()
    _, commands = drive(session, user_text("hi"), {"type": "response.create"})
    response_id = commands[0].request.response_id
    session.receive_engine_output(TextDelta(response_id, "partial"))
    events, commands = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(300))})
    assert "input_audio_buffer.speech_started" in types(events)
    assert commands == [CancelGeneration(response_id)]
    session.receive_engine_output(GenerationDone(response_id, "cancelled", Usage(5, 0, 0, 0, 1)))
    events, _ = drain(session)
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "turn_detected"
    assert done["output"][0]["content"][0]["text"] == "partial"
    events, commands = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(silence(600))})
    assert "response.created" in types(events)
    assert isinstance(commands[0], StartGeneration)


def test_client_cancel_and_cancel_with_nothing_active():
    session = make_session()
    _, commands = drive(session, user_text("hi"), {"type": "response.create"})
    response_id = commands[0].request.response_id
    events, commands = drive(session, {"type": "response.cancel"})
    assert events == [] and commands == [CancelGeneration(response_id)]
    session.receive_engine_output(GenerationDone(response_id, "cancelled", Usage()))
    events, _ = drain(session)
    assert events[-1]["response"]["status_details"]["reason"] == "client_cancelled"
    events, _ = drive(session, {"type": "response.cancel", "event_id": "x"})
    assert events[0]["error"]["code"] == "response_cancel_not_active"
    assert events[0]["error"]["event_id"] == "x"


@pytest.mark.parametrize(
    ("message", "code", "param"),
    [
        ("{nope", "invalid_json", None),
        ({"type": "no.such.event", "event_id": "e1"}, "unknown_event_type", "type"),
        ({"type": "input_audio_buffer.append", "event_id": "e1"}, "missing_required_parameter", "audio"),
        ({"type": "input_audio_buffer.append", "audio": 7, "event_id": "e1"}, "invalid_type", "audio"),
        ({"type": "input_audio_buffer.append", "audio": "%%%", "event_id": "e1"}, "invalid_base64", "audio"),
        ({"type": "input_audio_buffer.commit", "event_id": "e1"}, "input_audio_buffer_commit_empty", None),
        ({"type": "conversation.item.retrieve", "item_id": "nope", "event_id": "e1"}, "item_retrieve_invalid_item_id", "item_id"),
        ({"type": "conversation.item.delete", "item_id": "nope", "event_id": "e1"}, "item_delete_invalid_item_id", "item_id"),
        ({**user_text("x"), "previous_item_id": "nope", "event_id": "e1"}, "previous_item_id_not_found", "previous_item_id"),
        (
            {"type": "conversation.item.create", "event_id": "e1", "item": {"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}},
            "invalid_image",
            "item.content[0].image_url",
        ),
        ({"type": "session.update", "event_id": "e1", "session": {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 3}}}}}, "invalid_value", "session.audio.input.turn_detection.threshold"),
        ({"type": "session.update", "event_id": "e1", "session": {"audio": {"input": {"format": {"type": "audio/ogg"}}}}}, "invalid_value", "session.audio.input.format"),
    ],
)
def test_bad_input_is_an_error_event_and_the_session_goes_on(message, code, param):
    session = make_session()
    drive(session, user_text("kept"))
    events, commands = drive(session, message)
    assert types(events) == ["error"] and commands == []
    error = events[0]["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    assert error["message"]
    assert error["event_id"] == (None if isinstance(message, str) else message.get("event_id"))
    events, commands = drive(session, {"type": "response.create"})
    assert types(events)[0] == "response.created"
    assert commands[0].request.turns[0].parts[0].text == "kept"


def test_a_refused_client_event_is_logged_with_its_code(caplog):
    session = make_session()
    with caplog.at_level("INFO", logger="realtime.session.session"):
        drive(session, {"type": "response.create", "response": {"instructions": 3}})
    assert "refused a client event: invalid_type (param response.instructions)" in caplog.text


def test_response_create_while_one_is_active():
    session = make_session()
    drive(session, user_text("x"), {"type": "response.create"})
    events, commands = drive(session, {"type": "response.create", "event_id": "again"})
    assert events[0]["error"]["code"] == "conversation_already_has_active_response"
    assert commands == []


def test_session_update_semantic_vad_beta_aliases_and_null_turn_detection():
    session = make_session()
    events, _ = drive(
        session,
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}, "transcription": {"model": "whisper-1"}, "noise_reduction": {"type": "near_field"}}, "output": {"voice": "alloy"}}, "tracing": "auto", "tools": []}},
    )
    td = events[0]["session"]["audio"]["input"]["turn_detection"]
    assert td == {"type": "semantic_vad", "eagerness": "high", "create_response": True, "interrupt_response": True}
    assert session.settings.turn_detection.effective_silence_ms == 500
    events, _ = drive(session, {"type": "session.update", "session": {"modalities": ["text"], "input_audio_format": "g711_ulaw", "turn_detection": None}})
    audio_input = events[0]["session"]["audio"]["input"]
    assert audio_input["format"] == {"type": "audio/pcmu"} and audio_input["turn_detection"] is None
    events, _ = drive(session, {"type": "session.update", "session": {"instructions": "Be brief.", "max_output_tokens": "inf"}})
    assert events[0]["session"]["instructions"] == "Be brief."
    assert events[0]["session"]["max_output_tokens"] == 4096


def test_client_item_ids_previous_root_and_retrieve_with_audio():
    session = make_session(turn_detection=None)
    events, _ = drive(
        session,
        {**user_text("second"), "item": {**user_text("second")["item"], "id": "mine_2"}},
        {"type": "conversation.item.create", "previous_item_id": "root", "item": {"id": "mine_1", "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": pcm16_b64(tone(200))}]}},
        {"type": "conversation.item.retrieve", "item_id": "mine_1"},
    )
    assert events[0]["item"]["id"] == "mine_2"
    assert events[2]["item"]["id"] == "mine_1" and events[2]["previous_item_id"] is None
    assert [i.id for i in session.conversation] == ["mine_1", "mine_2"]
    audio = events[-1]["item"]["content"][0]["audio"]
    assert len(audio) > 0
    events, _ = drive(session, {**user_text("dup"), "item": {**user_text("dup")["item"], "id": "mine_1"}})
    assert events[0]["error"]["code"] == "duplicate_item_id"


def test_out_of_band_response_leaves_the_conversation_alone():
    session = make_session()
    drive(session, user_text("in conversation"))
    events, commands = drive(
        session,
        {"type": "response.create", "response": {"conversation": "none", "metadata": {"topic": "x"}, "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "side"}]}], "instructions": "Classify."}},
    )
    assert types(events) == ["response.created"]
    assert events[0]["response"]["metadata"] == {"topic": "x"}
    assert events[0]["response"]["conversation_id"] is None
    request = commands[0].request
    assert request.use_session_cache is False and request.instructions == "Classify."
    assert [t.parts[0].text for t in request.turns] == ["side"]
    engine_events = run_engine(session, commands)
    assert types(engine_events)[:2] == ["response.output_item.added", "response.content_part.added"]
    assert not {"conversation.item.added", "conversation.item.done"} & set(types(engine_events))
    assert len(session.conversation) == 1


def test_max_output_tokens_gives_incomplete_and_engine_error_gives_failed():
    session = make_session()
    _, commands = drive(session, user_text("a b c d"), {"type": "response.create", "response": {"max_output_tokens": 1}})
    assert commands[0].request.max_output_tokens == 1
    events = run_engine(session, commands)
    assert events[-1]["response"]["status"] == "incomplete"
    assert events[-1]["response"]["status_details"]["reason"] == "max_output_tokens"
    _, commands = drive(session, {"type": "response.create"})
    session.receive_engine_output(GenerationDone(commands[0].request.response_id, "error", Usage(), "boom"))
    events, _ = drain(session)
    assert events[-1]["response"]["status"] == "failed"


def test_live_frames_join_the_audio_turn():
    session = make_session()
    session.receive_message(json.dumps({"type": "input_image_buffer.append", "image": png_data_uri((200, 10, 10))}), now_ms=100)
    session.receive_message(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_b64(np.concatenate([silence(400), tone(500)]))}), now_ms=900)
    # A frame that arrives while the user speaks is newer than the one current at speech start.
    session.receive_message(json.dumps({"type": "input_image_buffer.append", "image": png_data_uri((10, 10, 200))}), now_ms=1000)
    session.receive_message(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_b64(silence(700))}), now_ms=1600)
    events, commands = drain(session)
    user_item = next(e for e in events if e["type"] == "conversation.item.added")["item"]
    assert [c["type"] for c in user_item["content"]] == ["input_image", "input_audio"]
    image_part, audio_part = generations(commands)[0].request.turns[-1].parts
    assert isinstance(image_part, ImagePart) and isinstance(audio_part, AudioPart)
    assert image_part.image.getpixel((5, 5)) == (200, 10, 10)


def test_clear_drops_the_buffer():
    session = make_session(turn_detection=None)
    events, _ = drive(
        session,
        {"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(500))},
        {"type": "input_audio_buffer.clear"},
        {"type": "input_audio_buffer.commit"},
    )
    assert types(events) == ["input_audio_buffer.cleared", "error"]


def test_thirty_fps_for_ten_seconds_keeps_memory_bounded_and_attaches_the_frame_at_speech_start():
    session = make_session()
    session.receive_message(json.dumps({"type": "session.update", "session": {"frames": {"max_per_turn": 1}}}))
    colors = {}
    speech = np.concatenate([silence(2000), tone(7000), silence(1000)])
    chunk_n_samples = 24000 // 30
    speech_started_at_ms = None
    for n in range(300):
        now_ms = n * 1000 // 30
        colors[now_ms] = (n % 256, 255 - n % 256, 7)
        session.receive_message(json.dumps({"type": "input_image_buffer.append", "image": png_data_uri(colors[now_ms], (8, 8))}), now_ms=now_ms)
        chunk = speech[n * chunk_n_samples : (n + 1) * chunk_n_samples]
        session.receive_message(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_b64(chunk)}), now_ms=now_ms)
        events, commands = drain(session)
        if "input_audio_buffer.speech_started" in types(events):
            speech_started_at_ms = now_ms
        assert session._frames.n_frames_held <= 1
        if generations(commands):
            turn_commands = generations(commands)
    assert speech_started_at_ms is not None
    image_part, _ = turn_commands[0].request.turns[-1].parts
    assert image_part.image.getpixel((0, 0)) == colors[speech_started_at_ms]


def test_idle_timeout_triggers_a_response():
    session = make_session()
    drive(session, {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 1000}}}}})
    events, commands = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(silence(1500))})
    assert types(events)[:4] == [
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert (events[0]["audio_start_ms"], events[0]["audio_end_ms"]) == (0, 1000)
    assert generations(commands)
    events = run_engine(session, commands)
    # Fires once: more silence after the answer starts the count again from the answer's end.
    events, _ = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(silence(900))})
    assert "input_audio_buffer.timeout_triggered" not in types(events)


def test_streaming_prefill_feeds_the_engine_exactly_the_committed_audio():
    session = make_session()
    audio = np.concatenate([silence(400), tone(900), silence(800)])
    commands = []
    for start in range(0, len(audio), 1111):
        _, new = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(audio[start : start + 1111])})
        commands += new
    begin, *appends, generation = [c for c in commands if not isinstance(c, CancelGeneration)]
    assert isinstance(begin, BeginAudioTurn) and isinstance(generation, StartGeneration)
    assert all(isinstance(a, AppendAudioTurn) for a in appends) and len(appends) > 3
    (part,) = generation.request.turns[-1].parts
    assert begin.start.item_id == generation.request.turns[-1].item_id
    assert begin.start.audio_key == part.key
    streamed = np.concatenate([a.samples for a in appends])
    # Everything the engine heard while the user spoke is the start of the committed clip, sample for sample.
    assert len(streamed) <= len(part.samples)
    np.testing.assert_array_equal(streamed, part.samples[: len(streamed)])
    assert len(part.samples) - len(streamed) < 1111 * 2 // 3


def test_streaming_waits_for_a_cancelled_answer_and_clear_abandons():
    session = make_session()
    _, commands = drive(session, user_text("hi"), {"type": "response.create"})
    response_id = commands[0].request.response_id
    _, commands = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(300))})
    assert [type(c) for c in commands] == [CancelGeneration]
    session.receive_engine_output(GenerationDone(response_id, "cancelled", Usage()))
    _, commands = drain(session)
    begin, append = commands
    assert isinstance(begin, BeginAudioTurn) and [t.role for t in begin.start.turns] == ["user", "assistant"]
    assert isinstance(append, AppendAudioTurn) and len(append.samples) > 300 * 16 - 400
    _, commands = drive(session, {"type": "input_audio_buffer.clear"})
    assert commands == [AbandonAudioTurn("sess_test")]


def test_without_streaming_prefill_the_engine_hears_the_turn_only_at_commit():
    session = Session("s", SessionSettings(), detector_factory=lambda t: EnergyDetector(), stream_turns=False)
    session.receive_message(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_b64(np.concatenate([tone(500), silence(600)]))}))
    _, commands = session.drain()
    assert [type(c) for c in commands] == [StartGeneration]


def test_idle_timeout_waits_while_an_answer_is_generating():
    session = make_session()
    drive(session, {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 1000}}}}})
    _, commands = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(np.concatenate([tone(500), silence(600)]))})
    assert generations(commands)
    events, commands = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(silence(1500))})
    assert "input_audio_buffer.timeout_triggered" not in types(events) and not generations(commands)


def test_speech_during_a_cancelling_answer_drops_the_queued_response():
    session = make_session()
    _, commands = drive(session, user_text("hi"), {"type": "response.create"})
    first = commands[0].request.response_id
    drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(np.concatenate([tone(400), silence(600)]))})
    drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(300))})
    session.receive_engine_output(GenerationDone(first, "cancelled", Usage()))
    events, commands = drain(session)
    # The user is still talking: no answer starts over them.
    assert "response.created" not in types(events) and not generations(commands)
    events, commands = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(silence(600))})
    assert "response.created" in types(events)
    assert [t.role for t in generations(commands)[0].request.turns] == ["user", "assistant", "user", "user"]


def test_changing_only_response_options_mid_speech_keeps_the_turn():
    session = make_session()
    events, _ = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(np.concatenate([silence(400), tone(600)]))})
    assert types(events) == ["input_audio_buffer.speech_started"]
    drive(session, {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}}}})
    events, commands = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(np.concatenate([tone(300), silence(600)]))})
    assert types(events)[:2] == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed"]
    (part,) = generations(commands)[0].request.turns[-1].parts
    assert len(part.samples) == (900 + 500 + 300) * 16


def test_manual_commits_with_vad_on_keep_the_vad_clock_in_step():
    session = make_session()
    for _ in range(5):
        drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(silence(200))}, {"type": "input_audio_buffer.commit"})
    events, _ = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(np.concatenate([silence(500), tone(800), silence(700)]))})
    started, stopped = events[0], events[1]
    # Each flush may round the resampler's output up by a few samples; a lost tail would be ~16 ms each.
    assert abs(started["audio_start_ms"] - (1000 + 500 - 300)) <= 5
    assert abs(stopped["audio_end_ms"] - (1000 + 1300)) <= 5


def test_truncate_acknowledges_assistant_text_and_refuses_user_items():
    session = make_session()
    _, commands = drive(session, user_text("hi"), {"type": "response.create"})
    run_engine(session, commands)
    assistant_id = commands[0].request.output_item_id
    user_id = commands[0].request.turns[0].item_id
    events, _ = drive(session, {"type": "conversation.item.truncate", "item_id": assistant_id, "content_index": 0, "audio_end_ms": 1500})
    assert types(events) == ["conversation.item.truncated"] and events[0]["audio_end_ms"] == 1500
    assert session.conversation.find(assistant_id).content[0].text == "text:hi"
    events, _ = drive(session, {"type": "conversation.item.truncate", "item_id": user_id, "content_index": 0, "audio_end_ms": 0})
    assert events[0]["error"]["code"] == "invalid_value"
    events, _ = drive(session, {"type": "conversation.item.truncate", "item_id": "gone", "content_index": 0, "audio_end_ms": 0})
    assert events[0]["error"]["code"] == "item_truncate_invalid_item_id"


def test_a_vad_change_mid_speech_lets_new_frames_in_again():
    session = make_session()
    session.receive_message(json.dumps({"type": "input_image_buffer.append", "image": png_data_uri((200, 0, 0))}), now_ms=100)
    session.receive_message(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(500))}), now_ms=600)
    session.receive_message(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.8}}}}}), now_ms=700)
    session.receive_message(json.dumps({"type": "input_image_buffer.append", "image": png_data_uri((0, 0, 200))}), now_ms=800)
    session.receive_message(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_b64(np.concatenate([tone(500), silence(700)]))}), now_ms=2000)
    _, commands = drain(session)
    image_part, _ = generations(commands)[0].request.turns[-1].parts
    assert image_part.image.getpixel((0, 0)) == (0, 0, 200)


def test_tool_choice_required_may_come_before_the_tools_as_pipecat_sends_it():
    session = make_session()
    patch = {"tools": [], "tool_choice": "required"}
    events, _ = drive(session, {"type": "session.update", "session": patch})
    assert types(events) == ["session.updated"] and events[0]["session"]["tool_choice"] == "required"
    events, commands = drive(session, user_text("hi"), {"type": "response.create", "event_id": "r1"})
    assert events[-1]["error"]["param"] == "response.tool_choice" and not generations(commands)
    weather = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    events, _ = drive(session, {"type": "session.update", "session": {"tools": [weather]}})
    assert types(events) == ["session.updated"]
    _, commands = drive(session, {"type": "response.create"})
    assert generations(commands)[0].request.tool_choice == "required"
