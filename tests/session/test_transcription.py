"""Input audio transcription in the session: settings, request timing, events and the item's transcript."""

from __future__ import annotations

import numpy as np

from realtime.engine.fake_backend import FakeBackend
from realtime.engine.port import (
    CloseSession,
    GenerationDone,
    StartGeneration,
    StartTranscription,
    TextDelta,
    Usage,
)
from tests.conftest import pcm16_b64, silence, tone
from tests.session.test_session import drain, drive, make_session, types

TRANSCRIPTION = {"model": "whisper-1", "language": "en", "prompt": "Gemma, MLX"}


def transcribing_session(**settings):
    session = make_session(**settings)
    update = {"type": "realtime", "audio": {"input": {"transcription": TRANSCRIPTION}}}
    drive(session, {"type": "session.update", "session": update})
    return session


def spoken_turn() -> dict:
    speech = np.concatenate([silence(300), tone(800), silence(700)])
    return {"type": "input_audio_buffer.append", "audio": pcm16_b64(speech)}


def transcriptions(commands: list) -> list[StartTranscription]:
    return [c for c in commands if isinstance(c, StartTranscription)]


def feed(session, outputs) -> list[dict]:
    for output in outputs:
        session.receive_engine_output(output)
    events, _ = drain(session)
    return events


def test_session_states_the_transcription_in_effect_and_null_turns_it_off():
    session = make_session()
    update = {"type": "realtime", "audio": {"input": {"transcription": TRANSCRIPTION}}}
    events, _ = drive(session, {"type": "session.update", "session": update})
    assert events[0]["session"]["audio"]["input"]["transcription"] == TRANSCRIPTION
    # A new object replaces the old one whole; fields it leaves out go back to their defaults.
    update = {"type": "realtime", "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}}
    events, _ = drive(session, {"type": "session.update", "session": update})
    assert events[0]["session"]["audio"]["input"]["transcription"] == {"model": "gpt-4o-transcribe"}
    update = {"type": "realtime", "audio": {"input": {"transcription": None}}}
    events, _ = drive(session, {"type": "session.update", "session": update})
    assert events[0]["session"]["audio"]["input"]["transcription"] is None
    beta = {"input_audio_transcription": {"model": "whisper-1", "language": None}}
    events, _ = drive(session, {"type": "session.update", "session": beta})
    assert events[0]["session"]["audio"]["input"]["transcription"] == {"model": "whisper-1"}


def test_bad_transcription_settings_are_an_error_and_change_nothing():
    session = transcribing_session()
    update = {"type": "realtime", "audio": {"input": {"transcription": {"language": 7}}}}
    events, _ = drive(session, {"type": "session.update", "session": update})
    assert types(events) == ["error"] and events[0]["error"]["code"] == "invalid_type"
    assert session.settings.transcription.language == "en"


def test_spoken_turn_is_transcribed_after_the_answer_starts_streaming():
    session = transcribing_session()
    events, commands = drive(session, spoken_turn())
    assert types(events)[:4] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
    ]
    user_item = events[3]["item"]
    assert "conversation.item.done" not in types(events)[:5]
    # The answer goes to the engine first; the transcription waits for its first delta.
    [generation] = [c for c in commands if isinstance(c, StartGeneration)]
    assert not transcriptions(commands)
    response_id = generation.request.response_id
    session.receive_engine_output(TextDelta(response_id, "Hi"))
    _, commands = drain(session)
    [transcription] = transcriptions(commands)
    request = transcription.request
    assert (request.language, request.prompt) == ("en", "Gemma, MLX")
    # The clips carry the keys the answer's request used, so the engine can reuse their encoding.
    answer_clips = [p for p in generation.request.turns[-1].parts if hasattr(p, "samples")]
    assert [c.key for c in request.clips] == [c.key for c in answer_clips]

    events = feed(session, FakeBackend(transcript=lambda r: "hello there").transcribe(request, lambda: False))
    assert types(events) == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    assert "".join(e["delta"] for e in events[:2]) == "hello there"
    completed = events[2]
    assert (completed["item_id"], completed["content_index"]) == (user_item["id"], 0)
    assert completed["transcript"] == "hello there"
    assert completed["usage"]["type"] == "tokens" and completed["usage"]["output_tokens"] == 2
    assert events[3]["item"]["content"][0]["transcript"] == "hello there"
    events, _ = drive(session, {"type": "conversation.item.retrieve", "item_id": user_item["id"]})
    assert events[0]["item"]["content"][0]["transcript"] == "hello there"
    # The answer goes on undisturbed.
    events = feed(session, [GenerationDone(response_id, "end_of_turn", Usage(output_tokens=1))])
    assert types(events)[-1] == "response.done" and events[-1]["response"]["status"] == "completed"


def test_committed_buffer_without_an_answer_is_transcribed_at_once():
    session = transcribing_session(turn_detection=None)
    drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(500))})
    events, commands = drive(session, {"type": "input_audio_buffer.commit"})
    assert types(events) == ["input_audio_buffer.committed", "conversation.item.added"]
    [transcription] = transcriptions(commands)
    assert sum(len(c.samples) for c in transcription.request.clips) == 8000
    # A transcript far longer than speech can be is cut off.
    assert transcription.request.max_output_tokens == 32


def test_failed_transcription_reports_failed_and_the_session_goes_on():
    session = transcribing_session(turn_detection=None)
    drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(500))})
    _, commands = drive(session, {"type": "input_audio_buffer.commit"})
    request_id = transcriptions(commands)[0].request.request_id
    events = feed(session, [GenerationDone(request_id, "error", Usage(), "the engine is not running")])
    assert types(events) == ["conversation.item.input_audio_transcription.failed", "conversation.item.done"]
    assert events[0]["error"]["message"] == "the engine is not running"
    assert events[1]["item"]["content"][0]["transcript"] is None
    events, commands = drive(session, {"type": "response.create"})
    assert "response.created" in types(events)


def test_no_transcription_unless_asked_for():
    session = make_session()
    events, commands = drive(session, spoken_turn())
    assert "conversation.item.done" in types(events) and not transcriptions(commands)
    generation = next(c for c in commands if isinstance(c, StartGeneration))
    session.receive_engine_output(TextDelta(generation.request.response_id, "Hi"))
    _, commands = drain(session)
    assert not transcriptions(commands)


def test_closing_drops_transcriptions_not_yet_sent():
    session = transcribing_session()
    _, commands = drive(session, spoken_turn())
    assert not transcriptions(commands)
    session.close()
    _, commands = drain(session)
    assert not transcriptions(commands) and isinstance(commands[-1], CloseSession)
