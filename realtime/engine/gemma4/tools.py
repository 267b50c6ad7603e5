"""Gemma 4's tool syntax: declarations, calls and results as prompt pieces, and calls parsed back to JSON.

Gemma 4 writes values in its own notation: bare keys, `<|"|>`-quoted strings, JSON-like numbers, booleans,
lists and objects: `<|tool_call>call:NAME{city:<|"|>Paris<|"|>,days:[1,2]}<tool_call|>`. A piece is text or
a control token id; the quote is always the token, never its spelling, so text inside a string is inert.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from ..port import ToolCallPart, ToolResultPart, ToolSpec
from .tokens import (
    QUOTE_ID,
    TOOL_CALL_END_ID,
    TOOL_CALL_START_ID,
    TOOL_END_ID,
    TOOL_RESPONSE_END_ID,
    TOOL_RESPONSE_START_ID,
    TOOL_START_ID,
)

Piece = str | int


class ToolSyntaxError(ValueError):
    pass


def value_pieces(value: Any) -> list[Piece]:
    """A JSON value in Gemma 4 notation."""
    if isinstance(value, str):
        return [QUOTE_ID, value, QUOTE_ID]
    if isinstance(value, dict):
        pieces: list[Piece] = ["{"]
        for index, (key, item) in enumerate(value.items()):
            pieces += ["," if index else "", f"{key}:", *value_pieces(item)]
        return [*pieces, "}"]
    if isinstance(value, list | tuple):
        pieces = ["["]
        for index, item in enumerate(value):
            pieces += ["," if index else "", *value_pieces(item)]
        return [*pieces, "]"]
    if isinstance(value, float) and not math.isfinite(value):
        return [QUOTE_ID, str(value), QUOTE_ID]
    return [json.dumps(value)]


def declaration_pieces(tools: Iterable[ToolSpec]) -> list[Piece]:
    """All declarations, for the end of the system turn."""
    pieces: list[Piece] = []
    for tool in tools:
        body: dict[str, Any] = {"description": tool.description} if tool.description else {}
        body["parameters"] = _declared_schema(tool.parameters)
        pieces += [TOOL_START_ID, f"declaration:{tool.name}", *value_pieces(body), TOOL_END_ID]
    return pieces


def _declared_schema(schema: Any) -> Any:
    # Gemma 4's template states JSON-schema types in upper case (STRING, OBJECT, …).
    if isinstance(schema, dict):
        return {
            key: value.upper() if key == "type" and isinstance(value, str) else _declared_schema(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_declared_schema(item) for item in schema]
    return schema


def call_pieces(part: ToolCallPart) -> list[Piece]:
    arguments = json.loads(part.arguments) if part.arguments.strip() else {}
    return [TOOL_CALL_START_ID, f"call:{part.name}", *value_pieces(arguments), TOOL_CALL_END_ID]


def result_pieces(part: ToolResultPart) -> list[Piece]:
    """A result inside the model's turn, right after its calls. JSON objects keep their structure."""
    try:
        value = json.loads(part.output)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        value = {"value": part.output}
    return [TOOL_RESPONSE_START_ID, f"response:{part.name}", *value_pieces(value), TOOL_RESPONSE_END_ID]


def parse_call(segments: Sequence[str]) -> tuple[str, str]:
    """(name, arguments JSON) from a call's text split at its quote tokens: even segments are syntax,
    odd ones the string literals, verbatim."""
    if len(segments) % 2 == 0:
        raise ToolSyntaxError("a string in the call is not closed")
    head = segments[0]
    if not head.startswith("call:") or "{" not in head:
        raise ToolSyntaxError(f"not a call: {head[:40]!r}")
    brace = head.index("{")
    name = head[len("call:") : brace].strip()
    reader = _ValueReader([head[brace:], *segments[1:]])
    arguments = reader.value()
    reader.end()
    if not name or not isinstance(arguments, dict):
        raise ToolSyntaxError("a call needs a name and an object of arguments")
    return name, json.dumps(arguments, ensure_ascii=False)


class _ValueReader:
    """Recursive descent over syntax segments, with each string literal a whole token between them."""

    def __init__(self, segments: Sequence[str]) -> None:
        self._segments = list(segments)
        self._index = 0
        self._pos = 0

    def value(self) -> Any:
        self._skip_space()
        char = self._peek()
        if char == "":
            return self._string()
        if char == "{":
            return self._collection("}", self._member)
        if char == "[":
            return self._collection("]", self.value)
        return self._literal()

    def end(self) -> None:
        self._skip_space()
        if self._peek() is not None:
            raise ToolSyntaxError("text after the call's arguments")

    def _member(self) -> tuple[str, Any]:
        text = self._segments[self._index]
        colon = text.find(":", self._pos)
        if colon < 0:
            raise ToolSyntaxError("a key without a value")
        key = text[self._pos : colon].strip()
        self._pos = colon + 1
        return key, self.value()

    def _collection(self, close: str, item: Any) -> Any:
        self._pos += 1
        items = []
        while True:
            self._skip_space()
            if self._peek() == close:
                self._pos += 1
                return dict(items) if close == "}" else items
            if items:
                if self._peek() != ",":
                    raise ToolSyntaxError(f"expected ',' or '{close}'")
                self._pos += 1
            items.append(item())

    def _string(self) -> str:
        # At the end of a syntax segment: the next segment is the literal, then syntax resumes.
        if self._index + 1 >= len(self._segments):
            raise ToolSyntaxError("a string in the call is not closed")
        literal = self._segments[self._index + 1]
        self._index += 2
        self._pos = 0
        return literal

    def _literal(self) -> Any:
        text = self._segments[self._index]
        end = self._pos
        while end < len(text) and text[end] not in ",}]":
            end += 1
        word = text[self._pos : end].strip()
        self._pos = end
        try:
            return json.loads(word)
        except ValueError:
            raise ToolSyntaxError(f"not a value: {word!r}") from None

    def _peek(self) -> str | None:
        """The next character; "" where a string literal starts, None at the very end."""
        text = self._segments[self._index]
        if self._pos < len(text):
            return text[self._pos]
        return "" if self._index + 1 < len(self._segments) else None

    def _skip_space(self) -> None:
        text = self._segments[self._index]
        while self._pos < len(text) and text[self._pos].isspace():
            self._pos += 1
