"""Constrained decoding of tool calls: a grammar of Gemma 4's call syntax from each tool's JSON schema,
enforced token by token with llguidance.

Enforced: the call syntax, the function names, each declared property's value type (string, integer,
number, boolean, null, enum/const, arrays, nested objects, anyOf), required properties, in declared order.
Not enforced: `pattern`, `format`, numeric ranges, `additionalProperties` beyond the declared ones.
Strings and arrays are bounded (maxLength / maxItems, else the defaults below) so that every path ends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from ..port import NamedTool, ToolChoice, ToolSpec
from .tokens import QUOTE_ID, TOOL_CALL_END_ID, TOOL_CALL_START_ID, TOOL_RESPONSE_START_ID
from .tools import value_pieces

DEFAULT_MAX_STRING_CHARS = 256
DEFAULT_MAX_ITEMS = 16
_INTEGER = r"/-?(0|[1-9][0-9]{0,17})/"
_NUMBER = r"/-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,17})?([eE][-+]?[0-9]{1,3})?/"
_KEY = r"/[A-Za-z_][A-Za-z0-9_]{0,63}/"


def _token(token_id: int) -> str:
    return f"<[{token_id}]>"


def _literal(pieces: Sequence[str | int]) -> str:
    parts = [_token(p) if isinstance(p, int) else json.dumps(p) for p in pieces if p != ""]
    return " ".join(parts) or '""'


class _GrammarWriter:
    def __init__(self) -> None:
        self.rules: list[str] = []
        self._names: dict[str, str] = {}
        self._has_any = False

    def rule(self, body: str) -> str:
        # Identical bodies share one rule, so the generic value below is written once.
        if body not in self._names:
            name = f"r{len(self._names)}"
            self._names[body] = name
            self.rules.append(f"{name}: {body}")
        return self._names[body]

    def value(self, schema: Any) -> str:
        if not isinstance(schema, dict):
            return self._any()
        choices = schema.get("enum")
        if "const" in schema:
            choices = [schema["const"]]
        if isinstance(choices, list) and choices:
            return self.rule(" | ".join(_literal(value_pieces(v)) for v in choices))
        variants = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(variants, list) and variants:
            return self.rule(" | ".join(self.value(v) for v in variants))
        kind = schema.get("type")
        if isinstance(kind, list):
            return self.rule(" | ".join(self.value({**schema, "type": k}) for k in kind))
        if kind is None and "properties" in schema:
            kind = "object"
        return self._typed(kind, schema)

    def _typed(self, kind: Any, schema: dict[str, Any]) -> str:
        if kind == "string":
            low = int(schema.get("minLength", 0))
            high = max(low, int(schema.get("maxLength", DEFAULT_MAX_STRING_CHARS)))
            return self.rule(f"{_token(QUOTE_ID)} /[^\\x00]{{{low},{high}}}/ {_token(QUOTE_ID)}")
        if kind == "integer":
            return self.rule(_INTEGER)
        if kind == "number":
            return self.rule(_NUMBER)
        if kind == "boolean":
            return self.rule('"true" | "false"')
        if kind == "null":
            return self.rule('"null"')
        if kind == "array":
            return self._array(schema)
        if kind == "object":
            return self._object(schema)
        return self._any()

    def _array(self, schema: dict[str, Any]) -> str:
        item = self.value(schema.get("items"))
        low = int(schema.get("minItems", 0))
        high = max(low, 1, int(schema.get("maxItems", DEFAULT_MAX_ITEMS)))
        more = f'("," {item}){{{max(low - 1, 0)},{high - 1}}}'
        body = f'"[" {item} {more} "]"'
        return self.rule(body if low else f'"[" "]" | {body}')

    def _object(self, schema: dict[str, Any]) -> str:
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return self._any_object()
        if not properties:
            return self.rule('"{" "}"')
        required = set(schema.get("required") or ())
        members = [
            (self.rule(f"{json.dumps(f'{key}:')} {self.value(sub)}"), key in required)
            for key, sub in properties.items()
        ]
        # Properties in declared order, optional ones skippable: `head_i` is before any member was written
        # (no comma yet), `tail_i` after one was.
        head, tail = '""', '""'
        for member, is_required in reversed(members):
            new_tail = self.rule(f'"," {member} {tail}' + ("" if is_required else f" | {tail}"))
            new_head = self.rule(f"{member} {tail}" + ("" if is_required else f" | {head}"))
            head, tail = new_head, new_tail
        return self.rule(f'"{{" {head} "}}"')

    def _any(self) -> str:
        string = self._typed("string", {})
        scalars = f'{string} | {_NUMBER} | "true" | "false" | "null"'
        # A generic value nests through its own rule name, so it is written once and referenced.
        name = "any_value"
        if not self._has_any:
            self._has_any = True
            array = f'"[" "]" | "[" {name} ("," {name}){{0,{DEFAULT_MAX_ITEMS - 1}}} "]"'
            member = f'{_KEY} ":" {name}'
            obj = f'"{{" "}}" | "{{" {member} ("," {member}){{0,{DEFAULT_MAX_ITEMS - 1}}} "}}"'
            self.rules.append(f"{name}: {scalars} | {array} | {obj}")
        return name

    def _any_object(self) -> str:
        self._any()
        member = f'{_KEY} ":" any_value'
        return self.rule(f'"{{" "}}" | "{{" {member} ("," {member}){{0,{DEFAULT_MAX_ITEMS - 1}}} "}}"')


def call_grammar(tools: Sequence[ToolSpec], choice: ToolChoice, parallel: bool = True) -> str:
    """A lark grammar for the whole answer: one call of the named tool, or one or more calls of any
    (one when not `parallel`), then `<|tool_response>`, where the answer stops for the results."""
    writer = _GrammarWriter()
    chosen = [t for t in tools if not isinstance(choice, NamedTool) or t.name == choice.name]
    calls = [
        writer.rule(
            f"{_token(TOOL_CALL_START_ID)} {json.dumps(f'call:{tool.name}')} "
            f"{writer.value(tool.parameters)} {_token(TOOL_CALL_END_ID)}"
        )
        for tool in chosen
    ]
    call = writer.rule(" | ".join(calls))
    repeat = "+" if parallel and not isinstance(choice, NamedTool) else ""
    return "\n".join([f"start: {call}{repeat} {_token(TOOL_RESPONSE_START_ID)}", *writer.rules])


class ToolCallConstraint:
    """The allowed next tokens as a mask, advanced with each sampled token."""

    def __init__(self, tokenizer: Any, grammar: str, vocab_size: int) -> None:
        import llguidance
        from llguidance.numpy import allocate_token_bitmask

        self._matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        self._check()
        self._bitmask = allocate_token_bitmask(1, vocab_size)
        self._vocab_size = vocab_size

    def allowed(self) -> mx.array:
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self._matcher, self._bitmask)
        bits = np.unpackbits(self._bitmask[0].view(np.uint8), bitorder="little")
        return mx.array(bits[: self._vocab_size].astype(bool))

    def advance(self, token_id: int) -> None:
        if not self._matcher.is_stopped():
            self._matcher.consume_token(token_id)
            self._check()

    def _check(self) -> None:
        if self._matcher.is_error():
            raise RuntimeError(f"tool-call grammar: {self._matcher.get_error()}")


def grammar_tokenizer(hf_tokenizer: Any, vocab_size: int) -> Any:
    """llguidance's view of the tokenizer; about a second to build, so built once per model."""
    import llguidance.hf

    return llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab_size)
