"""Function calling over the real server and the real tiny Gemma 4, driven by the official openai SDK."""

from __future__ import annotations

import json

import pytest

from realtime.engine.demo_model import ensure_demo_model
from realtime.engine.mlx_backend import MlxBackend
from tests.conftest import serve_in_thread
from tests.session.test_tools import CALL_EVENTS
from tests.test_end_to_end import collect, sdk_connection

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
}


@pytest.fixture(scope="module")
def host():
    with serve_in_thread(MlxBackend(ensure_demo_model())) as address:
        yield address


def test_sdk_function_call_round_trip(host):
    with sdk_connection(host) as connection:
        assert connection.recv().type == "session.created"
        connection.session.update(
            session={
                "type": "realtime",
                "audio": {"input": {"turn_detection": None}},
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "name": "get_weather"},
            }
        )
        updated = collect(connection, "session.updated")[-1]
        assert updated.session.tools[0].name == "get_weather"
        connection.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]}
        )
        collect(connection, "conversation.item.done")
        connection.response.create()
        events = collect(connection)
        assert [e.type for e in events] == ["response.created", *CALL_EVENTS, "response.done"]
        args_done, done = events[4], events[-1]
        arguments = json.loads(args_done.arguments)
        assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("celsius", "fahrenheit")
        (call,) = done.response.output
        assert done.response.status == "completed"
        assert (call.type, call.name, call.call_id, call.arguments) == (
            "function_call", "get_weather", args_done.call_id, args_done.arguments
        )

        connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": "not-a-call", "output": "{}"}
        )
        error = collect(connection, "error")[-1]
        assert error.error.code == "unknown_call_id"
        connection.conversation.item.create(
            item={"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temp_c": 4})}
        )
        added = collect(connection, "conversation.item.done")[0]
        assert added.item.type == "function_call_output" and added.item.call_id == call.call_id
        connection.response.create(response={"tool_choice": "auto", "max_output_tokens": 8})
        follow_up = collect(connection)[-1].response
        assert follow_up.status in ("completed", "incomplete")
        # The whole first round (prompt, the call's tokens, <|tool_response>) came from the cache.
        usage = done.response.usage
        assert follow_up.usage.input_token_details.cached_tokens >= usage.input_tokens + usage.output_tokens
