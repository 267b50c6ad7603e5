"""The OpenAI Agents SDK's RealtimeRunner, unchanged, pointed at the server with `model_config["url"]`."""

from __future__ import annotations

import asyncio

import pytest
from agents.realtime import RealtimeAgent, RealtimeRunner

from tests.clients.conftest import (
    ANSWER_CAP_TOKENS,
    RATE_HZ,
    SERVER_TRANSCRIBES,
    TIMEOUT_S,
    assert_answer_finished,
    spoken_turn,
    unexpected,
)

pytestmark = pytest.mark.usefixtures("server_errors")
CHUNK_N_BYTES = 2 * RATE_HZ * 40 // 1000


def is_raw(event) -> bool:
    return event.type == "raw_model_event"


async def _run_until(session, *model_event_types: str) -> tuple[list, list]:
    """All session events until each model event type has come, and the raw server events among them."""
    events, raw, waiting = [], [], set(model_event_types)
    async for event in session:
        events.append(event)
        if is_raw(event) and event.data.type == "raw_server_event":
            raw.append(event.data.data)
        if is_raw(event):
            waiting.discard(event.data.type)
            if not waiting:
                return events, raw
    raise AssertionError(f"the session ended before {waiting}")


async def open_session(server):
    agent = RealtimeAgent(name="assistant", instructions="Answer briefly.")
    runner = RealtimeRunner(agent, config={"model_settings": {"output_modalities": ["text"]}})
    return await runner.run(
        model_config={
            "url": f"{server.ws_url}?model=gemma-4",
            "headers": {"Authorization": "Bearer unused"},
            "initial_model_settings": {"max_output_tokens": ANSWER_CAP_TOKENS},
        }
    )


def assert_clean_turn(session, events: list, raw: list[dict], client_error_logs: list) -> str:
    """No error anywhere, a finished response, and the answer's text as the SDK's history holds it."""
    errors = [e for e in events if e.type == "error" or (is_raw(e) and e.data.type in ("error", "exception"))]
    assert not errors and not unexpected(client_error_logs)
    done = next(e for e in raw if e["type"] == "response.done")
    assert_answer_finished(done["response"])
    text = "".join(e["delta"] for e in raw if e["type"] == "response.output_text.delta")
    assert text and done["response"]["output"][0]["content"][0]["text"] == text
    assistant = [item for item in session._history if getattr(item, "role", "") == "assistant"]
    assert assistant and assistant[-1].content[0].text == text
    return text


async def test_a_text_turn_completes(server, client_error_logs):
    async with await open_session(server) as session:
        await session.send_message("Hello there!")
        events, raw = await asyncio.wait_for(_run_until(session, "turn_ended"), TIMEOUT_S)
    assert_clean_turn(session, events, raw, client_error_logs)


async def test_an_audio_turn_with_its_default_semantic_vad_completes(server, client_error_logs):
    audio = spoken_turn("Where is the nearest train station?")
    async with await open_session(server) as session:
        for start in range(0, len(audio), CHUNK_N_BYTES):
            await session.send_audio(audio[start : start + CHUNK_N_BYTES])
        # The SDK asks for input transcription by default (its DEFAULT_MODEL_SETTINGS).
        awaited = (
            ["turn_ended", "input_audio_transcription_completed"] if SERVER_TRANSCRIBES else ["turn_ended"]
        )
        events, raw = await asyncio.wait_for(_run_until(session, *awaited), TIMEOUT_S)
    assert_clean_turn(session, events, raw, client_error_logs)
    if SERVER_TRANSCRIBES:
        (transcribed,) = [
            e for e in raw if e["type"] == "conversation.item.input_audio_transcription.completed"
        ]
        assert transcribed["transcript"]
    types = [e["type"] for e in raw]
    assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.committed")
