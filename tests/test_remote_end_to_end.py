"""The realtime server in front of a real third-party serving engine (mlx-vlm's server on the tiny
Gemma 4) through the remote engine, driven by the official openai SDK: the turns that matter."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realtime.engine.demo_model import ensure_demo_model
from realtime.engine.remote import RemoteEngine, RemoteEngineConfig
from tests.conftest import serve_engine_in_thread
from tests.engine.remote.test_engine import scripted_upstream
from tests.test_end_to_end import (
    TIMEOUT_S,
    _png_uri,
    collect,
    sdk_connection,
    send_speech,
    speech_24k,
    text_of,
)
from tests.upstream import OURS_READY, mlx_vlm_server, served_process

pytestmark = pytest.mark.slow
__all__ = ["speech_24k"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def upstream_url():
    with mlx_vlm_server(ensure_demo_model()) as url:
        yield url


@pytest.fixture(scope="module")
def host(upstream_url):
    engine = RemoteEngine(RemoteEngineConfig(base_url=upstream_url))
    with serve_engine_in_thread(engine, streaming_prefill=False) as address:
        yield address


def start_session(connection, **session) -> None:
    assert connection.recv().type == "session.created"
    connection.session.update(session={"type": "realtime", **session})
    assert connection.recv().type == "session.updated"


def test_text_turns(host):
    with sdk_connection(host) as connection:
        start_session(connection, output_modalities=["text"], max_output_tokens=6)
        for text in ("Hello, who are you?", "And what is your name?"):
            connection.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
            )
            connection.response.create()
            events = collect(connection)
            done = events[-1].response
            assert done.status == "incomplete" and done.status_details.reason == "max_output_tokens"
            assert done.output[0].content[0].text == text_of(events) != ""
            assert done.usage.output_tokens == 6 and done.usage.input_tokens > 6


def test_spoken_turn_with_server_vad(host, speech_24k):
    silence = np.zeros(24000, dtype=np.int16)
    with sdk_connection(host) as connection:
        start_session(connection, max_output_tokens=4)
        send_speech(connection, np.concatenate([silence[:12000], speech_24k, silence]))
        events = collect(connection)
    types = [e.type for e in events]
    assert types[:3] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]
    done = events[-1].response
    assert done.status == "incomplete" and text_of(events)
    # The committed turn reached the engine: ~25 prompt tokens per second of speech beyond the text.
    spoken_s = (events[1].audio_end_ms - events[0].audio_start_ms + 500) / 1000
    assert done.usage.input_tokens >= 25 * spoken_s


def test_barge_in_cancels_the_streaming_answer(host, speech_24k):
    silence = np.zeros(24000, dtype=np.int16)
    with sdk_connection(host) as connection:
        start_session(connection, max_output_tokens=4)
        connection.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "A long story."}],
            }
        )
        connection.response.create(response={"max_output_tokens": 4096})
        long_response_id = collect(connection, until="response.output_text.delta")[-1].response_id
        with ThreadPoolExecutor(1) as reader:
            reading = reader.submit(collect, connection)
            send_speech(connection, np.concatenate([speech_24k, silence]))
            events = reading.result(TIMEOUT_S)
        assert events[-1].response.id == long_response_id
        assert events[-1].response.status == "cancelled"
        following = collect(connection)
    assert following[-1].response.id != long_response_id
    assert following[-1].response.status in ("completed", "incomplete")


def answer_input_tokens(host: str, content: list[dict]) -> int:
    with sdk_connection(host) as connection:
        start_session(connection, output_modalities=["text"], max_output_tokens=3)
        connection.conversation.item.create(item={"type": "message", "role": "user", "content": content})
        connection.response.create()
        events = collect(connection)
    assert events[-1].response.status == "incomplete" and text_of(events)
    return events[-1].response.usage.input_tokens


def test_image_turn(host):
    question = {"type": "input_text", "text": "What colour?"}
    image = {"type": "input_image", "image_url": _png_uri(Image.new("RGB", (96, 64), (250, 120, 0)))}
    # The image's soft tokens and markers reached the engine's prompt.
    assert answer_input_tokens(host, [image, question]) > answer_input_tokens(host, [question]) + 10


def test_cli_serves_through_the_engine(upstream_url):
    argv = [sys.executable, "-m", "realtime", "serve", "--port", "0", "--engine-url", upstream_url]
    with served_process(argv, OURS_READY) as url:
        host = url.removeprefix("http://")
        with urllib.request.urlopen(f"{url}/healthz", timeout=TIMEOUT_S) as reply:
            health = json.loads(reply.read())
        with sdk_connection(host) as connection:
            start_session(connection, output_modalities=["text"], max_output_tokens=3)
            connection.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
            )
            connection.response.create()
            events = collect(connection)
    assert health["engine_alive"] is True and health["model"] == str(ensure_demo_model())
    assert events[-1].response.status == "incomplete" and text_of(events)


def test_cli_refuses_an_unreachable_engine_clearly():
    result = subprocess.run(
        [sys.executable, "-m", "realtime", "serve", "--port", "0", "--engine-url", "http://127.0.0.1:9/v1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 1
    assert "cannot serve: the engine at http://127.0.0.1:9/v1/models is unreachable" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_tool_call_from_the_engine_reaches_the_client():
    weather = {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    call = {
        "index": 0,
        "id": "call_x",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    pieces = [call, {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]
    with scripted_upstream() as upstream:
        upstream.chunks = [{"choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]} for piece in pieces]
        upstream.chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        engine = RemoteEngine(RemoteEngineConfig(base_url=upstream.url))
        with (
            serve_engine_in_thread(engine, streaming_prefill=False) as host,
            sdk_connection(host) as connection,
        ):
            start_session(connection, output_modalities=["text"], tools=[weather])
            connection.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Paris?"}],
                }
            )
            connection.response.create()
            events = collect(connection)
    (item,) = events[-1].response.output
    assert item.type == "function_call" and item.call_id == "call_x" and item.name == "get_weather"
    assert json.loads(item.arguments) == {"city": "Paris"}
    assert "response.function_call_arguments.done" in [e.type for e in events]
    sent = upstream.bodies[-1]
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tool_choice"] == "auto"
