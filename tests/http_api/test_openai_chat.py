"""POST /v1/chat/completions with the official openai client, on the scripted engine: shapes and errors."""

from __future__ import annotations

import json
import queue
import urllib.error
import urllib.request

import openai
import pytest
from openai import OpenAI

from realtime.engine.fake_backend import FakeBackend
from realtime.engine.port import GenerationRequest, TextPart, ToolCall, ToolSpec, Turn
from realtime.engine.worker import EngineWorker
from tests.conftest import png_data_uri
from tests.engine.remote.test_engine import engine_for, run
from tests.http_api.conftest import TIMEOUT_S, audio_b64, serve_http_api, tone_16k


class FailingBackend(FakeBackend):
    def generate(self, request, should_stop):
        raise RuntimeError("the model broke")
        yield


@pytest.fixture
def client(base_url):
    return OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_S)


def audio_part(seconds: float = 1.0, rate_hz: int = 24000, audio_format: str = "wav") -> dict:
    data = audio_b64(tone_16k(seconds, rate_hz), rate_hz, audio_format)
    return {"type": "input_audio", "input_audio": {"data": data, "format": audio_format}}


def image_part(size=(64, 48)) -> dict:
    return {"type": "image_url", "image_url": {"url": png_data_uri((10, 200, 30), size)}}


def test_text_completion_with_usage(client, backend):
    answer = client.chat.completions.create(
        model="gemma-4-test",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": [{"type": "text", "text": "Again"}]},
        ],
        max_tokens=50,
    )
    assert answer.choices[0].message.content == "text:Again"
    assert answer.choices[0].finish_reason == "stop" and answer.object == "chat.completion"
    assert answer.usage.completion_tokens == 1
    request = backend.requests[-1]
    assert request.instructions == "Be brief." and [t.role for t in request.turns] == [
        "user",
        "assistant",
        "user",
    ]
    assert request.max_output_tokens == 50 and request.sampling.temperature == 1.0


@pytest.mark.parametrize(
    ("content", "described"),
    [
        ([audio_part(1.0)], "audio:1000ms"),
        (
            [image_part(), audio_part(0.5), {"type": "text", "text": "what?"}],
            "image:64x48 audio:500ms text:what?",
        ),
        ([audio_part(0.75, 44100, "mp3")], "audio:7"),
    ],
    ids=["audio only", "image audio text", "mp3"],
)
def test_streamed_media_reaches_the_engine(client, backend, content, described):
    stream = client.chat.completions.create(
        model="gemma-4-test",
        messages=[{"role": "user", "content": content}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith(described)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text.split(" "))
    (audio,) = [p for p in backend.requests[-1].turns[-1].parts if hasattr(p, "samples")]
    assert audio.samples.dtype.name == "float32" and abs(audio.samples.max() - 0.3) < 0.02


def test_long_audio_reaches_the_engine_whole(client, backend):
    client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": [audio_part(31.0, 16000)]}]
    )
    # The engine cuts it into the clips its model hears.
    assert [len(p.samples) for p in backend.requests[-1].turns[-1].parts] == [31 * 16000]


def test_max_tokens_cut_is_length(client):
    answer = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "one two three four"}], max_completion_tokens=2
    )
    assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 2


def test_models_list(client):
    assert [m.id for m in client.models.list()] == ["gemma-4-test"]


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WITH_TOOL = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER]}


def one_part(part: dict) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": [part]}]}


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "Expected"),
        (
            {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
            "Invalid value 'robot'",
        ),
        ({"model": "m", "messages": [{"role": "system", "content": "x"}]}, "messages", "user message"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n", "n=1"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
            "between",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
            "temperature",
            "between",
        ),
        (
            WITH_TOOL | {"tool_choice": {"type": "function", "function": {"name": "g"}}},
            "tool_choice",
            "not among",
        ),
        (
            WITH_TOOL | {"messages": [{"role": "tool", "tool_call_id": "c9", "content": "x"}]},
            "messages[0].tool_call_id",
            "earlier",
        ),
        (
            WITH_TOOL | {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].name",
            "letters",
        ),
        (
            one_part({"type": "input_audio", "input_audio": {"data": "@@", "format": "wav"}}),
            "messages[0].content[0]",
            "base64",
        ),
        (
            one_part({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
            "messages[0].content[0]",
            "not readable wav",
        ),
        (
            one_part({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "ogg"}}),
            "messages[0].content[0].input_audio.format",
            "wav or mp3",
        ),
        (
            one_part({"type": "image_url", "image_url": {"url": "https://x/y.png"}}),
            "messages[0].content[0].image_url.url",
            "not fetched",
        ),
    ],
)
def test_bad_requests_get_openai_errors(client, body, param, message):
    with pytest.raises(openai.BadRequestError) as raised:
        client.post("/chat/completions", body=body, cast_to=object)
    error = raised.value.body
    assert raised.value.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == param and message in error["message"] and error["code"]


def test_invalid_json_is_a_400(base_url):
    request = urllib.request.Request(f"{base_url}/v1/chat/completions", data=b"{nope", method="POST")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=TIMEOUT_S)
    assert raised.value.code == 400
    assert json.loads(raised.value.read())["error"]["code"] == "invalid_json"


def test_engine_failures_are_server_errors_and_the_api_goes_on():
    with serve_http_api(EngineWorker(FailingBackend())) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_S)
        messages = [{"role": "user", "content": "hi"}]
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model="m", messages=messages)
        assert (
            raised.value.body["type"] == "server_error" and raised.value.body["message"] == "the model broke"
        )
        with pytest.raises(openai.APIError, match="the model broke"):
            list(client.chat.completions.create(model="m", messages=messages, stream=True))
        assert [m.id for m in client.models.list()] == ["gemma-4-test"]


class RecordingWorker(EngineWorker):
    """The local engine, noting each command it is sent."""

    def __init__(self, backend) -> None:
        super().__init__(backend)
        self.commands: queue.SimpleQueue = queue.SimpleQueue()

    def send(self, command, sink) -> None:
        self.commands.put(command)
        super().send(command, sink)


def test_a_client_that_leaves_a_stream_cancels_the_generation():
    long_answer = FakeBackend(reply=lambda request: "word " * 2000, seconds_per_token=0.01)
    worker = RecordingWorker(long_answer)
    with serve_http_api(worker) as url:
        body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]})
        request = urllib.request.Request(f"{url}/v1/chat/completions", data=body.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as stream:
            assert stream.readline().startswith(b"data: ")
        kinds = []
        while "CloseSession" not in kinds:
            kinds.append(type(worker.commands.get(timeout=TIMEOUT_S)).__name__)
    assert kinds == ["StartGeneration", "CancelGeneration", "CloseSession"]


def test_api_key_is_required_when_set():
    with serve_http_api(EngineWorker(FakeBackend()), api_key="sesame") as url:
        with pytest.raises(openai.AuthenticationError):
            OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
        assert OpenAI(base_url=f"{url}/v1", api_key="sesame").models.list().data[0].id == "gemma-4-test"


def test_a_foreign_browser_origin_is_refused(base_url):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        f"{base_url}/v1/chat/completions",
        data=body,
        method="POST",
        headers={"Origin": "https://evil.example"},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=TIMEOUT_S)
    assert raised.value.code == 403
    assert json.loads(raised.value.read())["error"]["code"] == "origin_not_allowed"


def test_a_body_over_the_limit_is_a_413_in_the_api_shape():
    with serve_http_api(EngineWorker(FakeBackend()), max_message_bytes=4096, max_inflight_bytes=4096) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_S)
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": [audio_part(1.0)]}]
            )
    assert raised.value.status_code == 413 and raised.value.body["code"] == "request_too_large"


def test_tools_calls_and_results():
    calling = FakeBackend(
        calls=lambda request: [("get_weather", '{"city": "Paris"}')] if request.tools else []
    )
    with serve_http_api(RecordingWorker(calling)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_S)
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        answer = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER])
        (call,) = answer.choices[0].message.tool_calls
        assert answer.choices[0].finish_reason == "tool_calls"
        assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
        chunks = list(
            client.chat.completions.create(model="m", messages=messages, tools=[WEATHER], stream=True)
        )
        (streamed,) = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
        assert streamed.function.name == "get_weather" and streamed.id
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
        follow_up = [
            *messages,
            {"role": "assistant", "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
        client.chat.completions.create(model="m", messages=follow_up, tool_choice="none", tools=[WEATHER])
    last = calling.requests[-1]
    assert [t.role for t in last.turns] == ["user", "assistant", "tool"] and last.tool_choice == "none"
    assert last.turns[2].parts[0].output == "sunny" and last.turns[2].parts[0].name == "get_weather"


def test_our_remote_engine_gets_tool_calls_from_our_endpoint():
    calling = FakeBackend(calls=lambda request: [("get_weather", '{"city": "Oslo"}')])
    spec = ToolSpec("get_weather", "", WEATHER["function"]["parameters"])
    turns = (Turn("user", (TextPart("Oslo?"),), "i1"),)
    request = GenerationRequest("s", "resp_1", "o", "", turns, tools=(spec,))
    with serve_http_api(EngineWorker(calling)) as url, engine_for(f"{url}/v1") as engine:
        outputs = run(engine, request)
    calls = [o for o in outputs if isinstance(o, ToolCall)]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Oslo"})]
    assert outputs[-1].stop_reason == "end_of_turn" and calling.requests[-1].tools[0].name == "get_weather"
