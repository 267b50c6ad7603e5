"""POST /v1/messages with the official anthropic client, on the scripted engine: shapes and errors."""

from __future__ import annotations

import anthropic
import pytest

from realtime.engine.fake_backend import FakeBackend
from realtime.engine.worker import EngineWorker
from tests.conftest import png_data_uri
from tests.http_api.conftest import TIMEOUT_S, audio_b64, serve_http_api, tone_16k


@pytest.fixture
def client(base_url):
    return anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=TIMEOUT_S)


def audio_block(seconds: float = 1.0, rate_hz: int = 24000, media_type: str = "audio/wav") -> dict:
    data = audio_b64(tone_16k(seconds, rate_hz), rate_hz, "wav" if media_type == "audio/wav" else "mp3")
    return {"type": "input_audio", "source": {"type": "base64", "media_type": media_type, "data": data}}


def image_block(size=(64, 48)) -> dict:
    data = png_data_uri((200, 30, 30), size).split(",", 1)[1]
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


def test_text_message(client, backend):
    answer = client.messages.create(
        model="gemma-4-test",
        max_tokens=64,
        system="Be brief.",
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
            {"role": "user", "content": [{"type": "text", "text": "Again"}]},
        ],
    )
    assert answer.type == "message" and answer.role == "assistant" and answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text" and answer.content[0].text == "text:Again"
    assert answer.usage.output_tokens == 1
    request = backend.requests[-1]
    assert request.instructions == "Be brief." and [t.role for t in request.turns] == [
        "user",
        "assistant",
        "user",
    ]
    assert request.max_output_tokens == 64


@pytest.mark.parametrize(
    ("content", "described"),
    [
        ([audio_block(1.0)], "audio:1000ms"),
        (
            [image_block(), audio_block(0.5), {"type": "text", "text": "what?"}],
            "image:64x48 audio:500ms text:what?",
        ),
        ([audio_block(0.75, 44100, "audio/mpeg")], "audio:7"),
    ],
    ids=["audio only", "image audio text", "mp3"],
)
def test_streamed_media_reaches_the_engine(client, content, described):
    with client.messages.stream(
        model="gemma-4-test", max_tokens=64, messages=[{"role": "user", "content": content}]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    types = [e.type for e in events]
    assert types[:2] == ["message_start", "content_block_start"] and types[-1] == "message_stop"
    assert "content_block_stop" in types and "message_delta" in types
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text.startswith(described) and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == len(text.split(" "))


def test_max_tokens_cut(client):
    answer = client.messages.create(
        model="m", max_tokens=2, messages=[{"role": "user", "content": "one two three four"}]
    )
    assert answer.stop_reason == "max_tokens" and answer.usage.output_tokens == 2


def one_block(block: dict) -> dict:
    return {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": [block]}]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 8, "messages": [{"role": "system", "content": "x"}]}, "role"),
        (
            {"model": "m", "max_tokens": 8, "messages": [{"role": "assistant", "content": "x"}]},
            "user message",
        ),
        ({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "between"),
        (
            one_block(
                {
                    "type": "input_audio",
                    "source": {"type": "base64", "media_type": "audio/wav", "data": "AAAA"},
                }
            ),
            "not readable wav",
        ),
        (
            one_block(
                {
                    "type": "input_audio",
                    "source": {"type": "base64", "media_type": "audio/ogg", "data": "AAAA"},
                }
            ),
            "wav or mp3",
        ),
        (
            one_block(
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
            ),
            "messages.0.content.0.source",
        ),
        (one_block({"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}), "source"),
    ],
)
def test_bad_requests_get_anthropic_errors(client, body, message):
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.post("/v1/messages", body=body, cast_to=object)
    assert raised.value.status_code == 400
    assert (
        raised.value.body["type"] == "error" and raised.value.body["error"]["type"] == "invalid_request_error"
    )
    assert message in raised.value.body["error"]["message"]


def test_api_key_is_required_when_set():
    with serve_http_api(EngineWorker(FakeBackend()), api_key="sesame") as url:
        messages = [{"role": "user", "content": "hi"}]
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=url, api_key="wrong", max_retries=0).messages.create(
                model="m", max_tokens=8, messages=messages
            )
        answer = anthropic.Anthropic(base_url=url, api_key="sesame").messages.create(
            model="m", max_tokens=8, messages=messages
        )
        assert answer.content[0].text == "text:hi"
