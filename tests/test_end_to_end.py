"""The real server with the real MLX engine on the tiny Gemma 4, driven by the official openai SDK."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soxr
import websockets.sync.client
from openai import OpenAI
from PIL import Image

from realtime.engine.demo_model import ensure_demo_model
from realtime.engine.mlx_backend import MlxBackend
from realtime.engine.port import ImagePart
from tests.conftest import (
    data_uri,
    pcm16_b64,
    png_of_size,
    require_tool,
    serve_in_thread,
    strict_server_event,
)

pytestmark = pytest.mark.slow

TIMEOUT_S = 120


class RecordingBackend(MlxBackend):
    """The real backend, keeping each request so a test can look at what reached the model."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.requests = []

    def generate(self, request, should_stop):
        self.requests.append(request)
        yield from super().generate(request, should_stop)


@pytest.fixture(scope="module")
def backend():
    return RecordingBackend(ensure_demo_model())


@pytest.fixture(scope="module")
def host(backend):
    with serve_in_thread(backend) as address:
        yield address


@pytest.fixture(scope="module")
def speech_24k() -> np.ndarray:
    require_tool("espeak-ng")
    from tests.audio.speech import synthesize

    clip = synthesize("Hello there, what can you see in this picture?")
    samples = soxr.resample(clip.samples, clip.rate_hz, 24000)
    return (np.clip(samples, -1, 1) * 32767).astype(np.int16)


def sdk_connection(host: str):
    client = OpenAI(base_url=f"http://{host}/v1", api_key="unused")
    return client.realtime.connect(model="gemma-4-demo")


def collect(connection, until: str = "response.done") -> list:
    """Every event until `until`, each checked strictly against the SDK's models first."""
    events = []
    while True:
        raw = connection.recv_bytes()
        strict_server_event(raw.decode())
        events.append(connection.parse_event(raw))
        if events[-1].type == until:
            return events


def text_of(events) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


def send_speech(connection, samples: np.ndarray, chunk_n_samples: int = 2400) -> None:
    for start in range(0, len(samples), chunk_n_samples):
        connection.input_audio_buffer.append(audio=pcm16_b64(samples[start : start + chunk_n_samples]))


def test_sdk_text_conversation_uses_the_cache(host):
    with sdk_connection(host) as connection:
        assert connection.recv().type == "session.created"
        connection.session.update(session={"type": "realtime", "output_modalities": ["text"], "max_output_tokens": 8})
        assert connection.recv().type == "session.updated"
        usages = []
        for text in ("Hello, who are you?", "And what is your name?"):
            connection.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
            )
            connection.response.create()
            events = collect(connection)
            done = events[-1].response
            assert done.status in ("completed", "incomplete")
            assert done.output[0].content[0].text == text_of(events)
            assert done.usage.output_tokens == (8 if done.status == "incomplete" else done.usage.output_tokens)
            usages.append(done.usage)
    assert usages[0].input_token_details.cached_tokens == 0
    # Turn 2 reuses everything turn 1 prefilled: the prompt so far and the answer's tokens.
    assert usages[1].input_token_details.cached_tokens >= usages[0].input_tokens


def test_sdk_spoken_turn_with_server_vad(host, speech_24k, backend):
    silence = np.zeros(24000, dtype=np.int16)
    with sdk_connection(host) as connection:
        connection.recv()
        connection.session.update(session={"type": "realtime", "max_output_tokens": 6})
        connection.recv()
        send_speech(connection, np.concatenate([silence[:12000], speech_24k, silence]))
        events = collect(connection)
    types = [e.type for e in events]
    expected = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert types[: len(expected)] == expected
    started, stopped = events[0], events[1]
    speech_ms = len(speech_24k) // 24
    assert abs(started.audio_start_ms - (500 - 300)) <= 100
    assert abs(stopped.audio_end_ms - (500 + speech_ms)) <= 100
    usage = events[-1].response.usage
    (audio_part,) = backend.requests[-1].turns[-1].parts
    # The turn runs from the padded speech start to where the 500 ms silence wait ran out.
    spoken_ms = stopped.audio_end_ms - started.audio_start_ms
    assert abs(len(audio_part.samples) / 16 - (spoken_ms + 500)) <= 25
    # Gemma 4 hears 25 audio tokens per second of the committed turn.
    assert abs(usage.input_token_details.audio_tokens - len(audio_part.samples) / 640) <= 1
    # Streaming prefill: the turn was in the cache before it ended; only its tail was left to prefill.
    assert usage.input_token_details.cached_tokens >= usage.input_tokens - 20


def test_barge_in_cancels_the_streaming_answer(host, speech_24k):
    silence = np.zeros(24000, dtype=np.int16)
    with sdk_connection(host) as connection:
        connection.recv()
        # Short answers by default; the answer to be interrupted is the one long exception.
        connection.session.update(session={"type": "realtime", "max_output_tokens": 4})
        connection.recv()
        connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a long story."}]}
        )
        connection.response.create(response={"max_output_tokens": 4096})
        first = collect(connection, until="response.output_text.delta")
        long_response_id = first[-1].response_id
        # A real client reads while it talks; reading only afterwards would stall both sides.
        with ThreadPoolExecutor(1) as reader:
            reading = reader.submit(collect, connection)
            send_speech(connection, np.concatenate([speech_24k, silence]))
            events = reading.result(TIMEOUT_S)
        assert events[-1].response.id == long_response_id
        assert events[-1].response.status == "cancelled"
        assert events[-1].response.status_details.reason == "turn_detected"
        assert "input_audio_buffer.speech_started" in [e.type for e in events]
        # The spoken turn's own response was held until the cancelled one had ended.
        following = collect(connection)
    assert following[-1].response.id != long_response_id
    assert following[-1].response.status in ("completed", "incomplete")


def _png_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("with_text", [False, True])
def test_image_turn_reaches_the_model(host, backend, with_text):
    image = Image.new("RGB", (96, 64), (30, 160, 220))
    image.putpixel((10, 20), (255, 0, 0))
    content = [{"type": "input_image", "image_url": _png_uri(image), "detail": "auto"}]
    if with_text:
        content.append({"type": "input_text", "text": "What is this?"})
    with sdk_connection(host) as connection:
        connection.recv()
        connection.conversation.item.create(item={"type": "message", "role": "user", "content": content})
        connection.response.create(response={"max_output_tokens": 4})
        events = collect(connection)
    usage = events[-1].response.usage
    image_part = backend.requests[-1].turns[-1].parts[0]
    assert isinstance(image_part, ImagePart)
    assert image_part.image.getpixel((10, 20)) == (255, 0, 0)
    assert image_part.image.getpixel((50, 50)) == (30, 160, 220)
    assert usage.input_token_details.image_tokens == image_budget(backend, image_part.image)


def image_budget(backend, image) -> int:
    """Soft tokens Gemma 4's own processor gives this image (at most 70 on the demo model)."""
    processor = backend.loaded.processor
    inputs = processor(text=processor.image_token, images=[image], return_tensors="np")
    return int((np.asarray(inputs["input_ids"]) == backend.loaded.model.config.image_token_id).sum())


def test_image_and_audio_turn(host, backend, speech_24k):
    with sdk_connection(host) as connection:
        connection.recv()
        image = Image.new("RGB", (64, 64), (0, 200, 0))
        connection.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": _png_uri(image)},
                    {"type": "input_audio", "audio": pcm16_b64(speech_24k)},
                ],
            }
        )
        connection.response.create(response={"max_output_tokens": 4})
        events = collect(connection)
    details = events[-1].response.usage.input_token_details
    image_part = backend.requests[-1].turns[-1].parts[0]
    assert details.image_tokens == image_budget(backend, image_part.image)
    assert abs(details.audio_tokens - len(speech_24k) / 24 / 40) <= 2


@pytest.mark.parametrize(
    ("image_url", "code"),
    [
        ("data:image/png;base64,not*base64", "invalid_base64"),
        ("data:image/png;base64," + base64.b64encode(b"plain text, not an image").decode(), "invalid_image"),
        ("data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 64).decode(), "invalid_image"),
        # Over the 10 MiB image limit, under the 16 MiB message limit (a bigger message closes with 1009).
        ("data:image/png;base64," + "A" * (14 * 1024 * 1024), "image_too_large"),
        (data_uri(png_of_size(20_000, 20_000), "image/png"), "image_too_many_pixels"),
    ],
)
def test_bad_images_are_error_events_over_the_wire(host, image_url, code):
    with websockets.sync.client.connect(f"ws://{host}/v1/realtime", max_size=None) as ws:
        json.loads(ws.recv(TIMEOUT_S))
        ws.send(json.dumps({
            "type": "conversation.item.create",
            "event_id": "img",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": image_url}]},
        }))
        error = json.loads(ws.recv(TIMEOUT_S))
        strict_server_event(error)
        assert error["type"] == "error" and error["error"]["code"] == code
        assert error["error"]["event_id"] == "img"
        ws.send(json.dumps({"type": "input_image_buffer.append", "image": image_url, "event_id": "frame"}))
        assert json.loads(ws.recv(TIMEOUT_S))["error"]["code"] == code
        ws.send(json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "still here"}]}}))
        assert json.loads(ws.recv(TIMEOUT_S))["type"] == "conversation.item.added"
