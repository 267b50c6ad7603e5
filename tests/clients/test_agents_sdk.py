"""The OpenAI Agents SDK's RealtimeRunner, unchanged, pointed at the server with `model_config["url"]`."""

from __future__ import annotations

import asyncio

import pytest
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner

from tests.clients.conftest import (
    ANSWER_CAP_TOKENS,
    RATE_HZ,
    TIMEOUT_S,
    TOOL_CALL_CAP_TOKENS,
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


async def open_session(server, **model_settings):
    agent = RealtimeAgent(
        name="assistant", instructions="Answer briefly.", tools=model_settings.pop("tools", [])
    )
    settings = {"output_modalities": ["text"], "max_output_tokens": ANSWER_CAP_TOKENS, **model_settings}
    runner = RealtimeRunner(agent, config={"model_settings": settings})
    return await runner.run(
        model_config={"url": f"{server.ws_url}?model=gemma-4", "headers": {"Authorization": "Bearer unused"}}
    )


async def _run_until_tool_ends(session) -> list:
    events = []
    async for event in session:
        events.append(event)
        if event.type == "tool_end":
            return events
    raise AssertionError("the session ended before the tool did")


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
        awaited = ("turn_ended", "input_audio_transcription_completed")
        events, raw = await asyncio.wait_for(_run_until(session, *awaited), TIMEOUT_S)
    assert_clean_turn(session, events, raw, client_error_logs)
    (transcribed,) = [e for e in raw if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert transcribed["transcript"]
    types = [e["type"] for e in raw]
    assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.committed")


async def test_a_required_tool_is_called_and_its_result_sent_back(server, client_error_logs):
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Look up today's weather in a city."""
        cities.append(city)
        return f"Sunny in {city}."

    settings = {"tools": [get_weather], "tool_choice": "required", "max_output_tokens": TOOL_CALL_CAP_TOKENS}
    async with await open_session(server, **settings) as session:
        await session.send_message("What is the weather in Paris?")
        # The SDK runs the tool and sends its output itself; the first tool_end is enough here.
        events = await asyncio.wait_for(_run_until_tool_ends(session), TIMEOUT_S)
    errors = [e for e in events if e.type == "error" or (is_raw(e) and e.data.type in ("error", "exception"))]
    assert not errors and not unexpected(client_error_logs)
    assert len(cities) == 1 and isinstance(cities[0], str)
    assert [e.tool.name for e in events if e.type == "tool_start"] == ["get_weather"]
