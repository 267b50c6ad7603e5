"""The HTTP API on the real local engine (tiny Gemma 4): both official clients, and our own remote
engine using it as its upstream."""

from __future__ import annotations

import anthropic
import numpy as np
import pytest
from openai import OpenAI
from PIL import Image

from realtime.engine.demo_model import ensure_demo_model
from realtime.engine.mlx_backend import MlxBackend
from realtime.engine.port import AudioPart, ImagePart, TextPart, Turn
from realtime.engine.worker import EngineWorker
from tests.conftest import png_data_uri
from tests.engine.remote.test_engine import engine_for, run, text_request
from tests.http_api.conftest import TIMEOUT_S, audio_b64, serve_http_api, tone_16k

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_url():
    with serve_http_api(EngineWorker(MlxBackend(ensure_demo_model())), model="gemma-4-demo") as url:
        yield url


def test_openai_client_streams_audio_image_and_text(base_url):
    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_S)
    audio = {
        "type": "input_audio",
        "input_audio": {"data": audio_b64(tone_16k(2.0), 16000, "wav"), "format": "wav"},
    }
    content = [
        {"type": "image_url", "image_url": {"url": png_data_uri((0, 90, 200))}},
        audio,
        {"type": "text", "text": "What do you hear and see?"},
    ]
    chunks = list(
        client.chat.completions.create(
            model="gemma-4-demo",
            messages=[{"role": "user", "content": content}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert text and usage.completion_tokens == 4
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    # 2 s of audio is 50 Gemma 4 audio tokens; the placeholders never reach the client.
    assert usage.prompt_tokens_details.audio_tokens == 50
    assert "<|audio|>" not in text and "<|image|>" not in text


def test_anthropic_client_streams_an_input_audio_block(base_url):
    client = anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=TIMEOUT_S)
    source = {"type": "base64", "media_type": "audio/wav", "data": audio_b64(tone_16k(1.0), 16000, "wav")}
    with client.messages.stream(
        model="gemma-4-demo",
        max_tokens=3,
        messages=[{"role": "user", "content": [{"type": "input_audio", "source": source}]}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 3 and final.content[0].text
    assert final.usage.input_tokens > 25


def test_remote_engine_on_our_own_chat_completions(base_url):
    samples = (0.3 * np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    image = ImagePart(Image.new("RGB", (48, 48), (250, 250, 0)), "yellow")
    spoken = Turn("user", (image, AudioPart(samples, "i1/0/0"), TextPart("and?")), "i1")
    with engine_for(f"{base_url}/v1") as engine:
        assert engine.model == "gemma-4-demo"
        text_done = run(engine, text_request("Hello", max_output_tokens=3))
        media_done = run(engine, text_request(turns=(spoken,), response_id="resp_2", max_output_tokens=3))
    assert text_done[-1].stop_reason == "max_tokens" and len(text_done) >= 2
    assert media_done[-1].stop_reason == "max_tokens"
    assert media_done[-1].usage.input_tokens > text_done[-1].usage.input_tokens + 25
