"""LiveKit Agents' OpenAI realtime plugin, unchanged, pointed at the server with `base_url`.

A RealtimeSession runs without a LiveKit room: `RealtimeModel.session()` opens the WebSocket
itself, and the test plays the part AgentSession plays (chat context, generate_reply, push_audio).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from livekit import rtc
from livekit.agents import function_tool, llm
from livekit.plugins import openai as lk_openai

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
FRAME_MS = 20


class Recorder:
    """What one RealtimeSession received: raw server events, errors, and the first response.done."""

    def __init__(self, session: llm.RealtimeSession) -> None:
        self.raw: list[dict] = []
        self.errors: list[llm.RealtimeModelError] = []
        self.done: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self.transcribed: asyncio.Future[llm.InputTranscriptionCompleted] = (
            asyncio.get_running_loop().create_future()
        )
        session.on("openai_server_event_received", self._on_raw)
        session.on("error", self.errors.append)
        session.on("input_audio_transcription_completed", self._on_transcribed)

    def _on_transcribed(self, event: llm.InputTranscriptionCompleted) -> None:
        # LiveKit reports each transcription delta under the same name, with is_final=False.
        if event.is_final and not self.transcribed.done():
            self.transcribed.set_result(event)

    def _on_raw(self, event: dict) -> None:
        self.raw.append(event)
        if event["type"] == "response.done" and not self.done.done():
            self.done.set_result(event)

    def text(self) -> str:
        return "".join(e["delta"] for e in self.raw if e["type"] == "response.output_text.delta")


async def read_text(generation: llm.GenerationCreatedEvent) -> str:
    parts = []
    async for message in generation.message_stream:
        async for chunk in message.text_stream:
            parts.append(str(chunk))
    return "".join(parts)


async def assert_clean_answer(generation: llm.GenerationCreatedEvent, recorder: Recorder, error_logs) -> None:
    """The generation's text streams in full, the response finishes, and nothing reports an error."""
    text = await asyncio.wait_for(read_text(generation), TIMEOUT_S)
    done = await asyncio.wait_for(recorder.done, TIMEOUT_S)
    assert not recorder.errors and not unexpected(error_logs)
    assert_answer_finished(done["response"])
    assert text and text == recorder.text()


@pytest.fixture
async def session(server):
    model = lk_openai.realtime.RealtimeModel(base_url=server.http_url, modalities=["text"], api_key="unused")
    model.update_options(max_response_output_tokens=ANSWER_CAP_TOKENS)
    session = model.session()
    yield session
    await session.aclose()
    await model.aclose()


async def test_generate_reply_after_a_chat_context_completes(session, client_error_logs):
    recorder = Recorder(session)
    chat_ctx = llm.ChatContext.empty()
    chat_ctx.add_message(role="user", content="Hello there!")
    await session.update_chat_ctx(chat_ctx)
    generation = await asyncio.wait_for(session.generate_reply(), TIMEOUT_S)
    await assert_clean_answer(generation, recorder, client_error_logs)
    assert generation.user_initiated


async def test_an_audio_turn_pushed_with_server_vad_completes(session, client_error_logs):
    recorder = Recorder(session)
    generations: asyncio.Queue[llm.GenerationCreatedEvent] = asyncio.Queue()
    session.on("generation_created", generations.put_nowait)
    audio = spoken_turn("What is the weather like today?")
    frame_n_bytes = 2 * RATE_HZ * FRAME_MS // 1000
    for start in range(0, len(audio) - frame_n_bytes + 1, frame_n_bytes):
        samples = audio[start : start + frame_n_bytes]
        session.push_audio(rtc.AudioFrame(samples, RATE_HZ, 1, len(samples) // 2))
    generation = await asyncio.wait_for(generations.get(), TIMEOUT_S)
    await assert_clean_answer(generation, recorder, client_error_logs)
    types = [e["type"] for e in recorder.raw]
    assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.committed")
    assert not generation.user_initiated
    # LiveKit asks for transcripts by default and puts them in its context.
    transcribed = await asyncio.wait_for(recorder.transcribed, TIMEOUT_S)
    assert transcribed.transcript
    user_item = session.chat_ctx.get_by_id(transcribed.item_id)
    assert user_item is not None and transcribed.transcript in user_item.text_content


async def test_a_video_frame_then_generate_reply_completes(session, client_error_logs):
    recorder = Recorder(session)
    width, height = 64, 48
    rgba = bytes([30, 30, 200, 255]) * (width * height)
    session.push_video(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, rgba))
    chat_ctx = session.chat_ctx.copy()
    chat_ctx.add_message(role="user", content="What colour is the picture?")
    await session.update_chat_ctx(chat_ctx)
    generation = await asyncio.wait_for(session.generate_reply(), TIMEOUT_S)
    await assert_clean_answer(generation, recorder, client_error_logs)
    added = [e["item"] for e in recorder.raw if e["type"] == "conversation.item.added"]
    user_parts = [part["type"] for item in added if item["role"] == "user" for part in item["content"]]
    assert "input_image" in user_parts and "input_text" in user_parts


@function_tool
async def get_weather(city: str) -> str:
    """Look up today's weather in a city."""
    return f"Sunny in {city}."


async def read_calls(generation: llm.GenerationCreatedEvent) -> list[llm.FunctionCall]:
    return [call async for call in generation.function_stream]


async def test_generate_reply_with_a_required_tool_streams_the_call(session, client_error_logs):
    recorder = Recorder(session)
    session.update_options(max_response_output_tokens=TOOL_CALL_CAP_TOKENS)
    await session.update_tools([get_weather])
    chat_ctx = session.chat_ctx.copy()
    chat_ctx.add_message(role="user", content="What is the weather in Paris?")
    await session.update_chat_ctx(chat_ctx)
    generation = await asyncio.wait_for(session.generate_reply(tool_choice="required"), TIMEOUT_S)
    # "required" with parallel calls allowed: at least one call, each a valid one of the tool.
    calls = await asyncio.wait_for(read_calls(generation), TIMEOUT_S)
    done = await asyncio.wait_for(recorder.done, TIMEOUT_S)
    assert not recorder.errors and not unexpected(client_error_logs)
    assert done["response"]["status"] == "completed"
    assert calls and all(
        call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str) for call in calls
    )
