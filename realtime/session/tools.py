"""Tool settings from the client: function declarations and tool_choice, checked once, on arrival."""

from __future__ import annotations

import re
from typing import Any

from ..engine.port import NamedTool, ToolChoice, ToolSpec
from ..protocol.errors import ProtocolError, quote

_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Gemma 4 writes keys bare, so a key must not hold its separators.
_PROPERTY_NAME = re.compile(r'^[^\s:,{}\[\]<>"|]{1,64}$')
_SCHEMA_TYPES = frozenset({"object", "string", "integer", "number", "boolean", "array", "null"})
_CHOICE_MODES = ("auto", "none", "required")
# Bounds the call grammar uses; a larger bound would only make the grammar bigger, not more useful.
_SIZE_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems")
_MAX_SIZE = 100_000
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def parse_tools(raw: Any, param: str) -> tuple[ToolSpec, ...]:
    if not isinstance(raw, list):
        raise ProtocolError("invalid_value", "`tools` must be a list.", param=param)
    tools: list[ToolSpec] = []
    for index, spec in enumerate(raw):
        tool = _parse_tool(spec, f"{param}[{index}]")
        if any(t.name == tool.name for t in tools):
            raise ProtocolError(
                "duplicate_tool_name",
                f"Two tools are named {quote(tool.name)}; tool names must be unique.",
                param=f"{param}[{index}].name",
            )
        tools.append(tool)
    return tuple(tools)


def _parse_tool(spec: Any, param: str) -> ToolSpec:
    if not isinstance(spec, dict):
        raise ProtocolError("invalid_value", "A tool must be an object.", param=param)
    kind = spec.get("type", "function")
    if kind != "function":
        raise ProtocolError(
            "unsupported_tool_type",
            f"Tool type {quote(kind)} is not supported; declare functions (type 'function').",
            param=f"{param}.type",
        )
    name = spec.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise ProtocolError(
            "invalid_value",
            "A function needs a `name` of 1 to 64 letters, digits, '_', '.' or '-'.",
            param=f"{param}.name",
        )
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise ProtocolError("invalid_value", "`description` must be a string.", param=f"{param}.description")
    parameters = spec.get("parameters") or EMPTY_PARAMETERS
    _check_schema(parameters, f"{param}.parameters")
    if parameters.get("type", "object") != "object":
        raise ProtocolError(
            "invalid_tool_schema",
            "A function's `parameters` must be an object schema.",
            param=f"{param}.parameters.type",
        )
    return ToolSpec(name, description, parameters)


def _check_schema(schema: Any, param: str) -> None:
    """The JSON-schema subset a call can be rendered and constrained with; unknown keywords are kept."""
    if not isinstance(schema, dict):
        raise _schema_error("A schema must be an object.", param)
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    if any(k not in _SCHEMA_TYPES for k in kinds):
        raise _schema_error(f"Unknown schema type {quote(kind)}.", f"{param}.type")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise _schema_error("`properties` must be an object.", f"{param}.properties")
    for key, sub in properties.items():
        if not _PROPERTY_NAME.match(key):
            message = f"Property name {quote(key)} cannot be written in a call."
            raise _schema_error(message, f"{param}.properties")
        _check_schema(sub, f"{param}.properties.{key}")
    required = schema.get("required", [])
    if not isinstance(required, list) or any(r not in properties for r in required):
        raise _schema_error("`required` must list declared properties.", f"{param}.required")
    if "items" in schema:
        _check_schema(schema["items"], f"{param}.items")
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            variants = schema[keyword]
            if not isinstance(variants, list) or not variants:
                raise _schema_error(f"`{keyword}` must be a non-empty list.", f"{param}.{keyword}")
            for index, sub in enumerate(variants):
                _check_schema(sub, f"{param}.{keyword}[{index}]")
    for keyword in _SIZE_KEYWORDS:
        value = schema.get(keyword, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_SIZE:
            raise _schema_error(
                f"`{keyword}` must be an integer from 0 to {_MAX_SIZE}.", f"{param}.{keyword}"
            )
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise _schema_error("`enum` must be a non-empty list.", f"{param}.enum")


def _schema_error(message: str, param: str) -> ProtocolError:
    return ProtocolError("invalid_tool_schema", message, param=param)


def parse_tool_choice(raw: Any, param: str) -> ToolChoice:
    if raw in _CHOICE_MODES:
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return NamedTool(raw["name"])
    raise ProtocolError(
        "invalid_value",
        "`tool_choice` must be 'auto', 'none', 'required' or {'type': 'function', 'name': …}.",
        param=param,
    )


def check_tool_choice(choice: ToolChoice, tools: tuple[ToolSpec, ...], param: str) -> None:
    if isinstance(choice, NamedTool) and all(t.name != choice.name for t in tools):
        raise ProtocolError(
            "unknown_tool",
            f"`tool_choice` names {quote(choice.name)}, which is not among the tools.",
            param=param,
        )
    if choice == "required" and not tools:
        raise ProtocolError("invalid_value", "`tool_choice` 'required' needs at least one tool.", param=param)


def tools_to_wire(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
        for t in tools
    ]


def tool_choice_to_wire(choice: ToolChoice) -> str | dict[str, str]:
    return {"type": "function", "name": choice.name} if isinstance(choice, NamedTool) else choice
