"""Tools in the session: settings, function_call items from the engine, results from the client."""

import json

import pytest

from realtime.engine.fake_backend import FakeBackend
from realtime.engine.port import (
    BeginAudioTurn,
    GenerationDone,
    NamedTool,
    TextDelta,
    ToolCall,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from tests.conftest import pcm16_b64, tone
from tests.session.test_session import drain, drive, make_session, run_engine, types, user_text

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
ARGS = json.dumps({"city": 'Pa"ris, {1}', "nested": {"list": [1, "ü"]}})

CALL_EVENTS = [
    "response.output_item.added",
    "conversation.item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "conversation.item.done",
]


def tools_update(tools, tool_choice="auto"):
    return {"type": "session.update", "session": {"type": "realtime", "tools": tools, "tool_choice": tool_choice}}


def calling(*calls, text=""):
    return FakeBackend(reply=lambda request: text, calls=lambda request: list(calls))


def test_session_updated_states_tools_and_choice():
    session = make_session()
    events, _ = drive(session, tools_update([WEATHER, TIME], {"type": "function", "name": "get_time"}))
    stated = events[0]["session"]
    assert [t["name"] for t in stated["tools"]] == ["get_weather", "get_time"]
    assert stated["tools"][0]["parameters"] == WEATHER["parameters"]
    assert stated["tool_choice"] == {"type": "function", "name": "get_time"}
    _, commands = drive(session, user_text("hi"), {"type": "response.create"})
    request = commands[0].request
    assert [t.name for t in request.tools] == ["get_weather", "get_time"]
    assert request.tool_choice == NamedTool("get_time")


@pytest.mark.parametrize(
    ("session_patch", "code", "param"),
    [
        ({"tools": [WEATHER, WEATHER]}, "duplicate_tool_name", "session.tools[1].name"),
        ({"tools": [{**WEATHER, "parameters": {"type": "object", "properties": {"a": {"type": "strin"}}}}]},
         "invalid_tool_schema", "session.tools[0].parameters.properties.a.type"),
        ({"tools": [{**WEATHER, "parameters": {"type": "string"}}]}, "invalid_tool_schema", "session.tools[0].parameters.type"),
        ({"tools": [{**WEATHER, "parameters": {"type": "object", "properties": {}, "required": ["x"]}}]},
         "invalid_tool_schema", "session.tools[0].parameters.required"),
        ({"tools": [{**WEATHER, "parameters": {"type": "object", "properties": {"a": {"type": "string", "maxLength": "9"}}}}]},
         "invalid_tool_schema", "session.tools[0].parameters.properties.a.maxLength"),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "unsupported_tool_type", "session.tools[0].type"),
        ({"tools": [{**WEATHER, "name": "bad name"}]}, "invalid_value", "session.tools[0].name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "unknown_tool", "session.tool_choice"),
        ({"tool_choice": "sometimes"}, "invalid_value", "session.tool_choice"),
    ],
)
def test_bad_tool_settings_are_errors_and_change_nothing(session_patch, code, param):
    session = make_session()
    drive(session, tools_update([TIME]))
    events, _ = drive(session, {"type": "session.update", "event_id": "e1", "session": session_patch})
    assert types(events) == ["error"]
    assert (events[0]["error"]["code"], events[0]["error"]["param"]) == (code, param)
    assert events[0]["error"]["event_id"] == "e1"
    assert [t.name for t in session.settings.tools] == ["get_time"]
    events, _ = drive(session, user_text("still here"))
    assert types(events) == ["conversation.item.added", "conversation.item.done"]


def test_two_calls_in_one_response_each_an_item_listed_in_response_done():
    session = make_session()
    drive(session, tools_update([WEATHER, TIME]))
    _, commands = drive(session, user_text("weather and time?"), {"type": "response.create"})
    events = run_engine(session, commands, calling(("get_weather", ARGS), ("get_time", "{}")))
    assert types(events) == CALL_EVENTS + CALL_EVENTS + ["response.done"]
    first, second = events[0]["item"], events[6]["item"]
    assert first["type"] == "function_call" and first["status"] == "in_progress" and first["arguments"] == ""
    assert first["id"] == commands[0].request.output_item_id
    assert [e["output_index"] for e in events if "output_index" in e] == [0] * 4 + [1] * 4
    args_done = events[3]
    assert (args_done["name"], args_done["arguments"], args_done["call_id"]) == ("get_weather", ARGS, first["call_id"])
    assert events[2]["delta"] == ARGS
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert [(o["type"], o["name"], o["status"]) for o in done["output"]] == [
        ("function_call", "get_weather", "completed"),
        ("function_call", "get_time", "completed"),
    ]
    assert [i.type for i in session.conversation] == ["message", "function_call", "function_call"]
    assert second["call_id"] != first["call_id"]


def test_text_before_a_call_closes_the_message_first():
    session = make_session()
    drive(session, tools_update([TIME]))
    _, commands = drive(session, user_text("time?"), {"type": "response.create"})
    events = run_engine(session, commands, calling(("get_time", "{}"), text="Let me check."))
    kinds = types(events)
    assert kinds.index("response.output_item.done") < kinds.index("response.function_call_arguments.done")
    message_done = events[kinds.index("response.output_item.done")]
    assert message_done["output_index"] == 0 and message_done["item"]["type"] == "message"
    done = events[-1]["response"]
    assert [o["type"] for o in done["output"]] == ["message", "function_call"]
    assert done["output"][0]["content"] == [{"type": "output_text", "text": "Let me check."}]


def test_a_result_continues_the_conversation_as_a_tool_turn():
    session = make_session()
    drive(session, tools_update([WEATHER]))
    _, commands = drive(session, user_text("weather?"), {"type": "response.create"})
    events = run_engine(session, commands, calling(("get_weather", ARGS)))
    call_id = events[0]["item"]["call_id"]
    output = {"type": "function_call_output", "call_id": call_id, "output": '{"temp_c": 21}'}
    events, _ = drive(session, {"type": "conversation.item.create", "item": output})
    assert types(events) == ["conversation.item.added", "conversation.item.done"]
    assert events[0]["item"]["type"] == "function_call_output" and events[0]["item"]["call_id"] == call_id
    _, commands = drive(session, {"type": "response.create"})
    turns = commands[0].request.turns
    assert [t.role for t in turns] == ["user", "assistant", "tool"]
    assert turns[1].parts == (ToolCallPart(call_id, "get_weather", ARGS),)
    assert turns[2].parts == (ToolResultPart(call_id, "get_weather", '{"temp_c": 21}'),)
    events = run_engine(session, commands, calling(text="It is 21 degrees."))
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "It is 21 degrees."


def test_client_written_calls_and_results_and_their_errors():
    session = make_session()
    call = {"type": "function_call", "call_id": "c1", "name": "get_time", "arguments": "{}"}
    events, _ = drive(session, {"type": "conversation.item.create", "item": call})
    assert events[0]["item"] == {**call, "id": events[0]["item"]["id"], "object": "realtime.item", "status": "completed"}
    bad = [
        ({"type": "function_call_output", "call_id": "nope", "output": "x"}, "unknown_call_id", "item.call_id"),
        ({"type": "function_call_output", "call_id": "c1"}, "missing_required_parameter", "item.output"),
        ({**call, "call_id": "c2", "arguments": "[1]"}, "invalid_value", "item.arguments"),
        (call, "duplicate_call_id", "item.call_id"),
    ]
    for item, code, param in bad:
        events, _ = drive(session, {"type": "conversation.item.create", "event_id": "e9", "item": item})
        assert [(e["error"]["code"], e["error"]["param"]) for e in events] == [(code, param)]
    assert len(session.conversation) == 1
    _, commands = drive(
        session,
        {"type": "response.create", "response": {"tool_choice": "none", "tools": [TIME], "input": [
            {"type": "item_reference", "id": session.conversation.last_id},
            {"type": "function_call_output", "call_id": "c1", "output": "noon"},
        ]}},
    )
    request = commands[0].request
    assert request.tool_choice == "none" and request.turns[-1].parts == (ToolResultPart("c1", "get_time", "noon"),)


def test_response_level_tool_choice_must_name_a_tool_it_has():
    session = make_session()
    drive(session, tools_update([WEATHER]))
    events, commands = drive(
        session, {"type": "response.create", "response": {"tool_choice": {"type": "function", "name": "get_time"}}}
    )
    assert [e["error"]["code"] for e in events] == ["unknown_tool"] and not commands
    _, commands = drive(session, {"type": "response.create", "response": {"tool_choice": "required"}})
    assert commands[0].request.tool_choice == "required"


def test_a_response_cancelled_mid_call_has_no_call_item():
    session = make_session()
    drive(session, tools_update([WEATHER]))
    _, commands = drive(session, user_text("weather?"), {"type": "response.create"})
    response_id = commands[0].request.response_id
    session.receive_engine_output(TextDelta(response_id, "Checking"))
    drive(session, {"type": "response.cancel"})
    # The engine was inside a call when it stopped: the call never completed, so it never comes out.
    session.receive_engine_output(GenerationDone(response_id, "cancelled", Usage(output_tokens=9)))
    events, _ = drain(session)
    done = events[-1]["response"]
    assert done["status"] == "cancelled" and [o["type"] for o in done["output"]] == ["message"]
    assert "function_call" not in [i.type for i in session.conversation]
    # A late call for a finished response is ignored.
    session.receive_engine_output(ToolCall(response_id, "c9", "get_weather", "{}"))
    assert drain(session) == ([], [])


def test_a_streamed_turn_is_prefilled_with_the_tools_its_answer_will_declare():
    session = make_session()
    drive(session, tools_update([WEATHER]))
    _, commands = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(400))})
    (begin,) = [c for c in commands if isinstance(c, BeginAudioTurn)]
    assert [t.name for t in begin.start.tools] == ["get_weather"]
    drive(session, {"type": "input_audio_buffer.clear"}, tools_update([WEATHER], "none"))
    _, commands = drive(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(400))})
    (begin,) = [c for c in commands if isinstance(c, BeginAudioTurn)]
    assert begin.start.tools == ()


def test_parallel_tool_calls_is_stated_and_reaches_the_engine():
    session = make_session()
    events, _ = drive(session, {"type": "session.update", "session": {"tools": [TIME], "parallel_tool_calls": False}})
    assert events[0]["session"]["parallel_tool_calls"] is False
    _, commands = drive(session, user_text("time?"), {"type": "response.create"})
    assert commands[0].request.parallel_tool_calls is False
    run_engine(session, commands)
    _, commands = drive(session, {"type": "response.create", "response": {"parallel_tool_calls": True}})
    assert commands[0].request.parallel_tool_calls is True
