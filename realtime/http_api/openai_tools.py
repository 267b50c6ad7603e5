"""Tools in chat completions: declarations and tool_choice in, calls and results in the conversation,
calls out (whole in an answer, as deltas in a stream)."""

from __future__ import annotations

from ..engine.port import NamedTool, ToolCall, ToolCallPart, ToolChoice, ToolResultPart, ToolSpec
from ..protocol.errors import ProtocolError
from ..session.tools import check_tool_choice, parse_tool_choice, parse_tools
from .openai_types import (
    ChatRequest,
    FunctionCallBody,
    FunctionDelta,
    NamedToolChoice,
    ToolCallDelta,
    ToolCallSpec,
    ToolMessage,
)


def request_tools(body: ChatRequest) -> tuple[tuple[ToolSpec, ...], ToolChoice]:
    """The declared tools, checked as the realtime session checks them, and the tool_choice."""
    flat = [
        {
            "type": t.type,
            "name": t.function.name,
            "description": t.function.description,
            "parameters": t.function.parameters,
        }
        for t in body.tools or []
    ]
    tools = parse_tools(flat, "tools")
    choice: ToolChoice = "auto"
    if isinstance(body.tool_choice, NamedToolChoice):
        choice = NamedTool(body.tool_choice.function.name)
    elif body.tool_choice is not None:
        choice = parse_tool_choice(body.tool_choice, "tool_choice")
    check_tool_choice(choice, tools, "tool_choice")
    return tools, choice


def call_parts(calls: list[ToolCallSpec] | None) -> list[ToolCallPart]:
    return [ToolCallPart(call.id, call.function.name, call.function.arguments) for call in calls or []]


def result_part(message: ToolMessage, names_by_call_id: dict[str, str], param: str) -> ToolResultPart:
    name = names_by_call_id.get(message.tool_call_id)
    if name is None:
        raise ProtocolError(
            "invalid_value",
            "A tool message must answer a call of an earlier assistant message.",
            param=f"{param}.tool_call_id",
        )
    return ToolResultPart(message.tool_call_id, name, message.content)


def call_spec(call: ToolCall) -> ToolCallSpec:
    return ToolCallSpec(call.call_id, FunctionCallBody(call.name, call.arguments))


def call_delta(call: ToolCall, index: int) -> ToolCallDelta:
    """A whole call in one delta: the engine hands calls over complete."""
    return ToolCallDelta(index, call.call_id, FunctionDelta(call.name, call.arguments))
