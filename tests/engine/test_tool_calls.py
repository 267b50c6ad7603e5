"""Tool calls on the real engine (tiny random Gemma 4): each tool_choice, calls out of the token stream,
cancellation inside a call, and a tool round replayed from the cache."""

import json

import numpy as np
import pytest

from realtime.engine.demo_model import build_demo_model
from realtime.engine.gemma4.loading import load_model
from realtime.engine.gemma4.tokens import TOOL_CALL_END_ID, TOOL_CALL_START_ID, TOOL_START_ID
from realtime.engine.gemma4.tools import call_pieces
from realtime.engine.mlx_backend import MlxBackend
from realtime.engine.port import (
    ENGINE_SAMPLE_RATE_HZ,
    AudioPart,
    AudioTurnStart,
    GenerationDone,
    NamedTool,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    Turn,
)
from tests.engine.backend_state import cached_keys, render_prompt, reply
from tests.engine.test_mlx_backend import request, scripted_head, user

pytestmark = pytest.mark.slow

WEATHER = ToolSpec(
    "get_weather",
    "Weather in a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 16},
            "days": {"type": "integer"},
            "options": {
                "type": "object",
                "properties": {
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
                },
                "required": ["unit", "tags"],
            },
        },
        "required": ["city", "days", "options"],
    },
)
PING = ToolSpec("ping", "", {"type": "object", "properties": {}})
TOOLS = (WEATHER, PING)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    # The plain random weights (the demo before it learnt to end its turns): the calls below are what
    # greedy decoding of those weights makes.
    directory = build_demo_model(tmp_path_factory.mktemp("demo"), seed=0, model_type="gemma4", ends_turns=False)
    model = load_model(directory)
    backend = MlxBackend(model, prefill_chunk_tokens=64, prefill_alone_tokens=64)
    backend.load()
    return backend


def generate(backend, req, should_stop=lambda: False):
    outputs = [o for o in backend.generate(req, should_stop) if o is not None]
    assert isinstance(outputs[-1], GenerationDone)
    return outputs[:-1], outputs[-1]


def calls_of(outputs) -> list[ToolCall]:
    return [o for o in outputs if isinstance(o, ToolCall)]


def check_weather_arguments(arguments: str) -> None:
    args = json.loads(arguments)
    assert isinstance(args["city"], str) and len(args["city"]) <= 16
    assert isinstance(args["days"], int)
    assert args["options"]["unit"] in ("celsius", "fahrenheit")
    assert len(args["options"]["tags"]) <= 2 and all(isinstance(t, str) for t in args["options"]["tags"])


def test_required_gives_a_valid_call_with_nested_arguments_and_no_text(backend):
    req = request([user("What is the weather?")], max_tokens=120, tools=TOOLS, tool_choice="required")
    outputs, done = generate(backend, req)
    # "required" allows several calls: the random model may still be writing another when tokens run out.
    assert done.stop_reason in ("end_of_turn", "max_tokens")
    assert not [o for o in outputs if isinstance(o, TextDelta)]
    calls = calls_of(outputs)
    assert calls and all(c.name in ("get_weather", "ping") for c in calls)
    for call in calls:
        if call.name == "get_weather":
            check_weather_arguments(call.arguments)
        else:
            assert json.loads(call.arguments) == {}
    stored = reply(backend, req.session_id, req.output_item_id)
    assert stored.call_ids == tuple(c.call_id for c in calls) and stored.text == ""
    assert stored.token_ids.count(TOOL_CALL_START_ID) == len(calls)


def test_a_named_tool_gives_exactly_one_call_of_it(backend):
    req = request([user("Weather please")], max_tokens=120, tools=TOOLS, tool_choice=NamedTool("get_weather"))
    outputs, done = generate(backend, req)
    (call,) = calls_of(outputs)
    assert call.name == "get_weather" and done.stop_reason == "end_of_turn"
    check_weather_arguments(call.arguments)


def test_auto_declares_the_tools_and_none_leaves_them_out(backend):
    auto = request([user("hi")], tools=TOOLS, tool_choice="auto")
    none = request([user("hi")], tools=TOOLS, tool_choice="none")
    assert TOOL_START_ID in render_prompt(backend, auto).ids
    assert TOOL_START_ID not in render_prompt(backend, none).ids
    assert render_prompt(backend, none).ids == render_prompt(backend, request([user("hi")])).ids
    outputs, done = generate(backend, none)
    assert not calls_of(outputs) and done.stop_reason in ("end_of_turn", "max_tokens")
    outputs, done = generate(backend, auto)
    # The random model rarely starts a call of its own; whatever it does must be well formed.
    assert all(c.name in ("get_weather", "ping") for c in calls_of(outputs))


def test_two_calls_in_one_response(backend):
    pong = ToolSpec("pong", "", {"type": "object", "properties": {}})
    req = request([user("Please ping.")], max_tokens=40, tools=(PING, pong), tool_choice="required")
    outputs, done = generate(backend, req)
    # Greedy on the seed-0 demo weights, this prompt chains a second call before the model stops.
    assert [(c.name, c.arguments) for c in calls_of(outputs)] == [("pong", "{}"), ("pong", "{}")]
    assert len({c.call_id for c in calls_of(outputs)}) == 2
    assert done.stop_reason == "end_of_turn"
    stored = reply(backend, req.session_id, req.output_item_id)
    assert stored.call_ids == tuple(c.call_id for c in calls_of(outputs))


def test_without_parallel_calls_the_answer_ends_after_one(backend):
    pong = ToolSpec("pong", "", {"type": "object", "properties": {}})
    req = request([user("Please ping.")], max_tokens=40, tools=(PING, pong), tool_choice="required",
                  parallel_tool_calls=False)
    outputs, done = generate(backend, req)
    # The prompt that chains two calls above, held to one.
    assert [(c.name, c.arguments) for c in calls_of(outputs)] == [("pong", "{}")]
    assert done.stop_reason == "end_of_turn"


def test_a_response_cancelled_mid_call_makes_no_call_and_replays_none(backend):
    req = request([user("Weather?")], max_tokens=120, tools=TOOLS, tool_choice=NamedTool("get_weather"))
    n_steps = 0

    def stop_inside_the_call() -> bool:
        # Seven prefill chunks and the prompt's last token, then two tokens into the forced call.
        return n_steps >= 10

    outputs = []
    for output in backend.generate(req, stop_inside_the_call):
        n_steps += 1
        outputs.append(output)
    done = outputs[-1]
    assert done.stop_reason == "cancelled" and done.usage.output_tokens > 0
    assert not calls_of(outputs) and not [o for o in outputs if isinstance(o, TextDelta)]
    # The unfinished call's tokens are not replayed as part of the answer.
    stored = reply(backend, req.session_id, req.output_item_id)
    assert TOOL_CALL_START_ID not in stored.token_ids and stored.call_ids == ()


def test_a_response_cancelled_as_its_call_completes_makes_no_call_and_replays_none(backend):
    req = request([user("Weather?")], session_id="cut-at-call-end", max_tokens=120, tools=TOOLS,
                  tool_choice=NamedTool("get_weather"))

    def call_end_just_fed() -> bool:
        # The step that fed <tool_call|> has run; the answer has not yet read it, so the call is unseen.
        return cached_keys(backend, "cut-at-call-end")[-1:] == (TOOL_CALL_END_ID,)

    outputs = [o for o in backend.generate(req, call_end_just_fed) if o is not None]
    assert outputs[-1].stop_reason == "cancelled"
    assert not calls_of(outputs)
    stored = reply(backend, req.session_id, req.output_item_id)
    assert TOOL_CALL_START_ID not in stored.token_ids and stored.call_ids == ()


def test_a_tool_round_replays_from_the_cache_and_matches_a_cold_run(backend):
    first = request([user("Weather?", item_id="u-w")], session_id="tool-round", max_tokens=120,
                    tools=TOOLS, tool_choice=NamedTool("get_weather"))
    outputs, first_done = generate(backend, first)
    (call,) = calls_of(outputs)
    result = json.dumps({"temp_c": 21, "sky": 'clear, "dry"'})
    turns = (
        *first.turns,
        Turn("assistant", (ToolCallPart(call.call_id, call.name, call.arguments),), first.output_item_id),
        Turn("tool", (ToolResultPart(call.call_id, call.name, result),), "out-1"),
    )
    stored = reply(backend, "tool-round", first.output_item_id)
    second = request(turns, session_id="tool-round", max_tokens=12, tools=TOOLS)
    prompt = render_prompt(backend, second)
    # The model's own call tokens, then the result, with the model's turn left open to go on.
    n_first = first_done.usage.input_tokens
    assert prompt.ids[n_first : n_first + len(stored.token_ids)] == stored.token_ids
    assert prompt.ids[-1] != 105
    warm_outputs, warm_done = generate(backend, second)
    # Cached: the first prompt, every answer token, and the stop token <|tool_response> (fed too).
    assert warm_done.usage.cached_tokens == n_first + len(stored.token_ids) + 1
    cold = request(turns, session_id="tool-round", max_tokens=12, tools=TOOLS, use_session_cache=False)
    cold_outputs, cold_done = generate(backend, cold)
    assert cold_done.usage.cached_tokens == 0
    assert cold_done.usage.input_tokens == warm_done.usage.input_tokens
    assert warm_outputs and comparable(warm_outputs) == comparable(cold_outputs)


def comparable(outputs) -> list[tuple[str, ...]]:
    """Outputs without the call ids, which are fresh for every call."""
    return [(o.text,) if isinstance(o, TextDelta) else (o.name, o.arguments) for o in outputs]


def test_a_client_written_call_renders_in_gemma_notation(backend):
    args = json.dumps({"q": 'say "hi", {x}: ü', "n": [1, {"k": None}]})
    turns = [
        user("Look it up"),
        Turn("assistant", (TextPart("Sure."), ToolCallPart("c1", "ping", args)), "a1"),
        Turn("tool", (ToolResultPart("c1", "ping", "done"),), "t1"),
        user("thanks"),
    ]
    prompt = render_prompt(backend, request(turns, tools=(PING,)))
    tokenizer = backend.loaded.processor.tokenizer
    text = tokenizer.decode(list(prompt.ids), skip_special_tokens=False)
    assert (
        '<|turn>model\nSure.<|tool_call>call:ping{q:<|"|>say "hi", {x}: ü<|"|>,n:[1,{k:null}]}<tool_call|>'
        '<|tool_response>response:ping{value:<|"|>done<|"|>}<tool_response|><turn|>\n<|turn>user\nthanks<turn|>'
    ) in text


def test_a_turn_streamed_with_tools_declared_continues_into_its_answer(backend):
    samples = np.random.default_rng(3).uniform(-0.3, 0.3, 3 * ENGINE_SAMPLE_RATE_HZ).astype(np.float32)
    turn = Turn("user", (AudioPart(samples, "spoken/0"),), "spoken")
    start = AudioTurnStart("stream-tools", "Be brief.", (), "spoken", (), "spoken/0", tools=TOOLS)
    for _ in backend.begin_audio_turn(start):
        pass
    for _ in backend.append_audio_turn("stream-tools", samples):
        pass
    req = request([turn], session_id="stream-tools", instructions="Be brief.", tools=TOOLS,
                  tool_choice=NamedTool("ping"))
    prompt = render_prompt(backend, req)
    held = cached_keys(backend, "stream-tools")
    # The declarations and most of the audio were prefilled while the user spoke.
    assert held == prompt.keys[: len(held)] and len(held) > prompt.media[0].start + 50
    outputs, done = generate(backend, req)
    assert done.usage.cached_tokens == len(held)
    assert [c.name for c in calls_of(outputs)] == ["ping"]


def scripted(prompt_last_id: int, script: list[int]):
    """Bias the head so the answer is exactly `script`: from the prompt's last token on, each step
    forces the next scripted token (a chunk boundary that merely ends like the prompt restarts it)."""
    state = {"next": None}

    def bias_for(last_id: int) -> dict[int, float]:
        at = state["next"]
        if at is not None and at < len(script) and last_id == script[at]:
            state["next"] = at + 1
        elif last_id == prompt_last_id:
            state["next"] = 0
        else:
            return {}
        at = state["next"]
        return {script[at]: 100.0} if at < len(script) else {}

    return bias_for


def piece_ids(tokenizer, pieces) -> list[int]:
    ids = []
    for piece in pieces:
        if isinstance(piece, int):
            ids.append(piece)
        else:
            ids += tokenizer.encode(piece, add_special_tokens=False, split_special_tokens=True)
    return ids


@pytest.mark.parametrize("tool_choice", ["auto", "none"])
def test_a_call_the_model_makes_on_its_own_is_parsed_from_the_stream(backend, tool_choice):
    tokenizer = backend.loaded.processor.tokenizer
    tricky = {"q": 'say "hi", {x}: [1] ü 日本', "n": [1, -2.5, {"k": None, "ok": True}]}
    call = ToolCallPart("unused", "ping", json.dumps(tricky))
    script = [*tokenizer.encode("Sure, ", add_special_tokens=False), *piece_ids(tokenizer, call_pieces(call)), 50]
    req = request([user("Look it up")], max_tokens=len(script) + 4, tools=(PING,), tool_choice=tool_choice)
    prompt = render_prompt(backend, req)
    with scripted_head(backend.loaded, scripted(prompt.ids[-1], script)):
        outputs, done = generate(backend, req)
    text = "".join(o.text for o in outputs if isinstance(o, TextDelta))
    stored = reply(backend, req.session_id, req.output_item_id)
    if tool_choice == "auto":
        (made,) = calls_of(outputs)
        assert (made.name, json.loads(made.arguments)) == ("ping", tricky)
        assert text == "Sure, " and done.stop_reason == "end_of_turn"
        # The reply keeps the call's exact tokens for replay; the stop token is not part of it.
        assert list(stored.token_ids) == script[:-1] and stored.call_ids == (made.call_id,)
    else:
        # Without tools in the prompt the tool tokens are masked: the forced call cannot be written.
        assert not calls_of(outputs) and not set(stored.token_ids) & set(range(46, 53))
