"""The official openai SDK's realtime client, as README's snippet uses it, against the real server."""

from __future__ import annotations

import base64

import pytest
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from tests.clients.conftest import (
    ANSWER_CAP_TOKENS,
    RATE_HZ,
    assert_answer_finished,
    spoken_turn,
)

pytestmark = pytest.mark.usefixtures("server_errors")
CHUNK_N_BYTES = 2 * RATE_HZ * 40 // 1000
SERVER_EVENT = TypeAdapter(RealtimeServerEvent)


TRANSCRIBED = "conversation.item.input_audio_transcription.completed"


async def events_until(connection, *types: str) -> list[dict]:
    """Every server event until each of `types` has come, each validated by the SDK's own models."""
    events, waiting = [], set(types)
    async for event in connection:
        wire = event.model_dump(mode="json", exclude_unset=True)
        SERVER_EVENT.validate_python(wire)
        events.append(wire)
        assert event.type != "error", wire
        waiting.discard(event.type)
        if not waiting:
            return events
    raise AssertionError(f"the connection closed before {waiting}")


def assert_clean_answer(events: list[dict]) -> None:
    done = next(e for e in events if e["type"] == "response.done")["response"]
    assert_answer_finished(done)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text and done["output"][0]["content"][0]["text"] == text


async def start_text_session(connection) -> None:
    session = {
        "type": "realtime",
        "output_modalities": ["text"],
        "max_output_tokens": ANSWER_CAP_TOKENS,
        "audio": {"input": {"transcription": {"model": "gpt-4o-mini-transcribe"}}},
    }
    await connection.session.update(session=session)


def open_connection(server):
    client = AsyncOpenAI(base_url=server.http_url, api_key="unused")
    return client.realtime.connect(model="gemma-4")


async def test_a_text_turn(server):
    async with open_connection(server) as connection:
        await start_text_session(connection)
        await connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello!"}]}
        )
        await connection.response.create()
        assert_clean_answer(await events_until(connection, "response.done"))


async def test_an_audio_turn_with_server_vad(server):
    audio = spoken_turn("Turn on the lights in the kitchen.")
    async with open_connection(server) as connection:
        await start_text_session(connection)
        for start in range(0, len(audio), CHUNK_N_BYTES):
            chunk = base64.b64encode(audio[start : start + CHUNK_N_BYTES]).decode()
            await connection.input_audio_buffer.append(audio=chunk)
        events = await events_until(connection, "response.done", TRANSCRIBED)
    types = [e["type"] for e in events]
    assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.committed")
    assert_clean_answer(events)
    (transcribed,) = [e for e in events if e["type"] == TRANSCRIBED]
    assert transcribed["transcript"] and transcribed["usage"]
