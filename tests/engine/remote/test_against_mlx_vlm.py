"""RemoteEngine against a real third-party serving engine: mlx-vlm's own server on the tiny Gemma 4."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from realtime.engine.demo_model import ensure_demo_model
from realtime.engine.port import (
    AudioPart,
    ImagePart,
    TextDelta,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    Turn,
)
from tests.engine.remote.test_engine import engine_for, run, text_request
from tests.upstream import mlx_vlm_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    with mlx_vlm_server(ensure_demo_model()) as url, engine_for(url) as engine:
        yield engine


def speech_like(duration_s: float) -> np.ndarray:
    t = np.arange(int(duration_s * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_text_answer_streams_and_reports_usage(engine):
    outputs = run(engine, text_request("Hello there", max_output_tokens=5))
    deltas, done = outputs[:-1], outputs[-1]
    assert deltas and all(isinstance(d, TextDelta) and d.text for d in deltas)
    assert done.stop_reason == "max_tokens" and done.usage.output_tokens == 5
    assert done.usage.input_tokens > 5


@pytest.mark.parametrize("with_image", [False, True], ids=["audio only", "audio and image"])
def test_audio_turns_reach_the_engine(engine, with_image):
    image = ImagePart(Image.new("RGB", (64, 48), (10, 200, 30)), "green")
    parts = (image,) if with_image else ()
    short = Turn("user", (*parts, AudioPart(speech_like(0.4), "i1/0/0")), "i1")
    long = Turn("user", (*parts, AudioPart(speech_like(2.0), "i2/0/0")), "i2")
    short_done = run(engine, text_request(turns=(short,), max_output_tokens=2))[-1]
    long_done = run(engine, text_request(turns=(long,), response_id="resp_2", max_output_tokens=2))[-1]
    assert short_done.error_message is None and long_done.error_message is None
    # Gemma 4 hears 25 audio tokens per second: 1.6 s more audio is 40 more prompt tokens.
    assert long_done.usage.input_tokens - short_done.usage.input_tokens == 40


def test_conversation_with_a_previous_answer(engine):
    turns = (
        Turn("user", (TextPart("Hi"),), "i1"),
        Turn("assistant", (TextPart("Hello! How can I help?"),), "i2"),
        Turn("user", (TextPart("Tell me more"),), "i3"),
    )
    done = run(engine, text_request(turns=turns, max_output_tokens=3))[-1]
    assert done.stop_reason in ("max_tokens", "end_of_turn") and done.error_message is None


def test_tools_and_tool_rounds_are_accepted(engine):
    weather = ToolSpec(
        "get_weather", "Weather for a city.", {"type": "object", "properties": {"city": {"type": "string"}}}
    )
    turns = (
        Turn("user", (TextPart("Weather in Paris?"),), "i1"),
        Turn("assistant", (ToolCallPart("call_1", "get_weather", '{"city": "Paris"}'),), "i2"),
        Turn("tool", (ToolResultPart("call_1", "get_weather", "sunny"),), "i3"),
    )
    done = run(engine, text_request(turns=turns, tools=(weather,), max_output_tokens=3))[-1]
    assert done.error_message is None and done.usage.input_tokens > 10


def test_an_engine_error_fails_only_that_response(engine):
    huge = Turn("user", (TextPart("x"),), "i1")
    bad = text_request(turns=(huge,), max_output_tokens=-5)
    done = run(engine, bad)[-1]
    assert done.stop_reason == "error" and "HTTP" in done.error_message
    assert run(engine, text_request(max_output_tokens=2))[-1].error_message is None
