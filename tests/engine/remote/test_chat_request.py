import base64
import io
from dataclasses import replace

import msgspec
import numpy as np
import pytest
import soundfile
from PIL import Image

from realtime.engine.port import (
    AudioPart,
    GenerationRequest,
    ImagePart,
    NamedTool,
    SamplingSettings,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    Turn,
)
from realtime.engine.remote.chat_request import UnsupportedContent, build_chat_request, media_id_of


def request(*turns: Turn, instructions: str = "Be brief.") -> GenerationRequest:
    return GenerationRequest(
        session_id="sess_1",
        response_id="resp_1",
        output_item_id="item_out",
        instructions=instructions,
        turns=turns,
        max_output_tokens=12,
        sampling=SamplingSettings(temperature=0.5, top_p=0.9, seed=7),
    )


def spoken_turn(item_id: str = "item_1") -> Turn:
    samples = (0.5 * np.sin(np.arange(8000) / 10)).astype(np.float32)
    image = ImagePart(Image.new("RGB", (32, 24), (200, 10, 10)), key="sha")
    return Turn("user", (image, AudioPart(samples, key=f"{item_id}/0/0"), TextPart("what is this?")), item_id)


def wire(plan) -> dict:
    return msgspec.json.decode(msgspec.json.encode(plan.body))


def test_a_conversation_becomes_chat_messages_in_order():
    turns = (spoken_turn(), Turn("assistant", (TextPart("A red "), TextPart("square.")), "item_2"))
    body = wire(
        build_chat_request(
            request(*turns, Turn("user", (TextPart("Sure?"),), "item_3")), "m", media_ids=False
        )
    )
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "Be brief."
    assert body["messages"][2]["content"] == "A red square."
    image, audio, text = body["messages"][1]["content"]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert audio["type"] == "input_audio" and audio["input_audio"]["format"] == "wav"
    assert text == {"type": "text", "text": "what is this?"}
    assert "uuid" not in image and "uuid" not in audio
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (12, 0.5, 0.9, 7)


def test_media_arrives_intact():
    turn = spoken_turn()
    _, audio_part, _ = turn.parts
    image_part, audio, _ = wire(build_chat_request(request(turn), "m", media_ids=False))["messages"][1][
        "content"
    ]
    samples, rate_hz = soundfile.read(
        io.BytesIO(base64.b64decode(audio["input_audio"]["data"])), dtype="float32"
    )
    assert rate_hz == 16000 and len(samples) == len(audio_part.samples)
    assert np.max(np.abs(samples - audio_part.samples)) < 1e-3
    jpeg = base64.b64decode(image_part["image_url"]["url"].split(",", 1)[1])
    decoded = Image.open(io.BytesIO(jpeg))
    assert decoded.size == (32, 24) and abs(decoded.getpixel((16, 12))[0] - 200) < 8


def test_no_instructions_means_no_system_message():
    only_text = Turn("user", (TextPart("hi"),), "i")
    body = wire(build_chat_request(request(only_text, instructions=""), "m", media_ids=False))
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_media_ids_send_known_media_as_the_id_alone():
    turn = spoken_turn()
    first = build_chat_request(request(turn), "m", media_ids=True)
    image, audio, _ = wire(first)["messages"][1]["content"]
    assert {image["uuid"], audio["uuid"]} == set(first.sent_media_ids) and not first.omitted_media
    again = build_chat_request(request(turn), "m", media_ids=True, known_media_ids=first.sent_media_ids)
    image, audio, _ = wire(again)["messages"][1]["content"]
    assert image == {"type": "image_url", "image_url": None, "uuid": image["uuid"]}
    assert audio == {"type": "input_audio", "input_audio": None, "uuid": audio["uuid"]}
    assert again.omitted_media and not again.sent_media_ids


def test_media_ids_come_from_the_content_not_the_key():
    a, b = spoken_turn("item_a"), spoken_turn("item_b")
    assert media_id_of(a.parts[1]) == media_id_of(b.parts[1])
    louder = AudioPart(a.parts[1].samples * 0.5, key=a.parts[1].key)
    assert media_id_of(louder) != media_id_of(a.parts[1])
    other = ImagePart(Image.new("RGB", (32, 24), (0, 0, 0)), key="sha")
    assert media_id_of(other) != media_id_of(a.parts[0])


def test_audio_over_30_s_goes_as_clips_the_model_hears_whole():
    samples = np.zeros(31 * 16000, np.float32)
    body = wire(
        build_chat_request(request(Turn("user", (AudioPart(samples, "i/0"),), "i")), "m", media_ids=False)
    )
    clips = body["messages"][1]["content"]
    lengths = [len(soundfile.read(io.BytesIO(base64.b64decode(c["input_audio"]["data"])))[0]) for c in clips]
    assert lengths == [30 * 16000, 16000]


def test_parts_without_a_chat_shape_are_refused_clearly():
    image = ImagePart(Image.new("RGB", (8, 8)), key="k")
    with pytest.raises(UnsupportedContent, match="only text in assistant turns"):
        build_chat_request(request(Turn("assistant", (image,), "i")), "m", media_ids=False)


def test_tools_calls_and_results_take_openai_shapes():
    weather = ToolSpec(
        "get_weather", "Weather for a city.", {"type": "object", "properties": {"city": {"type": "string"}}}
    )
    turns = (
        Turn("user", (TextPart("Weather in Paris?"),), "i1"),
        Turn("assistant", (ToolCallPart("call_1", "get_weather", '{"city":"Paris"}'),), "i2"),
        Turn("tool", (ToolResultPart("call_1", "get_weather", "sunny"),), "i3"),
    )
    named = replace(
        request(*turns), tools=(weather,), tool_choice=NamedTool("get_weather"), parallel_tool_calls=False
    )
    body = wire(build_chat_request(named, "m", media_ids=False))
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city.",
                "parameters": weather.parameters,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    _, _, call, result = body["messages"]
    assert call == {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "call_1",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                "type": "function",
            }
        ],
    }
    assert result == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    unused = wire(build_chat_request(replace(named, tool_choice="none"), "m", media_ids=False))
    assert "tools" not in unused and "tool_choice" not in unused
