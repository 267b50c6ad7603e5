"""Gemma 4 tool syntax over the demo tokenizer: calls written and read back, and the call grammar."""

import json

import pytest

from realtime.engine.demo_model import build_tokenizer
from realtime.engine.gemma4.call_stream import CallStream, ParsedCall
from realtime.engine.gemma4.tokens import QUOTE_ID, TOOL_CALL_START_ID, TOOL_RESPONSE_START_ID
from realtime.engine.gemma4.tool_grammar import ToolCallConstraint, call_grammar, grammar_tokenizer
from realtime.engine.gemma4.tools import (
    ToolSyntaxError,
    call_pieces,
    declaration_pieces,
    parse_call,
    result_pieces,
)
from realtime.engine.port import NamedTool, ToolCallPart, ToolResultPart, ToolSpec

VOCAB_SIZE = 262_144
TRICKY = {
    "text": 'He said "hi", then {left}: [a, b] ü 日本 <|"|> \\ end',
    "nested": {"list": [1, -2.5, "x,y", {"deep": [True, False, None]}], "empty": {}, "none": []},
    "n": 42,
}
SCHEMA = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "nested": {
            "type": "object",
            "properties": {
                "list": {"type": "array", "items": {}},
                "empty": {"type": "object"},
                "none": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["list"],
        },
        "n": {"type": "integer"},
        "unit": {"enum": ["c", "f"]},
    },
    "required": ["text", "n"],
}
TOOLS = (ToolSpec("lookup", "Find things.", SCHEMA), ToolSpec("ping", "", {"type": "object", "properties": {}}))


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = build_tokenizer()
    # As the prompt renderer (split_special_tokens): text never spells a control token.
    tokenizer.encode_special_tokens = True
    return tokenizer


@pytest.fixture(scope="module")
def ll_tokenizer(tokenizer):
    from transformers import PreTrainedTokenizerFast

    return grammar_tokenizer(PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>"), VOCAB_SIZE)


def token_ids(tokenizer, pieces) -> list[int]:
    ids = []
    for piece in pieces:
        ids += [piece] if isinstance(piece, int) else tokenizer.encode(piece, add_special_tokens=False).ids
    return ids


def read_back(tokenizer, ids):
    stream = CallStream(lambda chunk: tokenizer.decode(chunk, skip_special_tokens=True))
    routed = [stream.route(i) for i in ids]
    assert routed[:-1] == [False] * (len(ids) - 1)
    return routed[-1]


def test_a_call_with_quotes_commas_braces_and_unicode_reads_back_exactly(tokenizer):
    part = ToolCallPart("c1", "lookup", json.dumps(TRICKY))
    ids = token_ids(tokenizer, call_pieces(part))
    # Every string literal sits between quote tokens; the user's literal `<|"|>` is plain text inside one.
    assert ids.count(QUOTE_ID) == 2 * 2
    parsed = read_back(tokenizer, ids)
    assert isinstance(parsed, ParsedCall) and parsed.name == "lookup"
    assert json.loads(parsed.arguments) == TRICKY


def test_text_around_calls_passes_and_a_broken_call_comes_out_as_text(tokenizer):
    stream = CallStream(lambda chunk: tokenizer.decode(chunk, skip_special_tokens=True))
    assert stream.route(tokenizer.encode("hi").ids[0]) is True
    broken = [TOOL_CALL_START_ID, *tokenizer.encode("call:x{a:}", add_special_tokens=False).ids, 49]
    routed = [stream.route(i) for i in broken]
    assert routed[-1] == "call:x{a:}" and not stream.inside_call
    with pytest.raises(ToolSyntaxError):
        parse_call(["call:x{a:", "open"])


def test_declarations_and_results_are_in_gemma_notation(tokenizer):
    text = tokenizer.decode(token_ids(tokenizer, declaration_pieces(TOOLS[:1])), skip_special_tokens=False)
    assert text.startswith('<|tool>declaration:lookup{description:<|"|>Find things.<|"|>,parameters:{')
    assert 'type:<|"|>OBJECT<|"|>' in text and text.endswith("<tool|>")
    result = token_ids(tokenizer, result_pieces(ToolResultPart("c1", "lookup", '{"temp": 21}')))
    assert result[0] == TOOL_RESPONSE_START_ID
    assert tokenizer.decode(result, skip_special_tokens=False) == "<|tool_response>response:lookup{temp:21}<tool_response|>"
    plain = tokenizer.decode(token_ids(tokenizer, result_pieces(ToolResultPart("c1", "ping", "pong"))), skip_special_tokens=False)
    assert plain == '<|tool_response>response:ping{value:<|"|>pong<|"|>}<tool_response|>'


def accepts(ll_tokenizer, grammar, ids) -> bool:
    constraint = ToolCallConstraint(ll_tokenizer, grammar, VOCAB_SIZE)
    for token_id in ids:
        if not constraint.allowed()[token_id].item():
            return False
        constraint.advance(token_id)
    return True


def test_the_grammar_accepts_valid_calls_and_refuses_invalid_ones(tokenizer, ll_tokenizer):
    def call(name, arguments):
        return token_ids(tokenizer, call_pieces(ToolCallPart("c", name, json.dumps(arguments))))

    required = call_grammar(TOOLS, "required")
    stop = [TOOL_RESPONSE_START_ID]
    assert accepts(ll_tokenizer, required, call("lookup", TRICKY) + stop)
    assert accepts(ll_tokenizer, required, call("ping", {}) + call("lookup", {"text": "", "n": 0, "unit": "f"}) + stop)
    assert not accepts(ll_tokenizer, required, call("lookup", {"n": 1}))  # `text` is required
    assert not accepts(ll_tokenizer, required, call("lookup", {"text": "a", "n": "1"}))  # n is an integer
    assert not accepts(ll_tokenizer, required, call("lookup", {"text": "a", "n": 1, "unit": "k"}))
    assert not accepts(ll_tokenizer, required, call("other", {}))
    assert not accepts(ll_tokenizer, required, tokenizer.encode("plain text").ids)
    named = call_grammar(TOOLS, NamedTool("ping"))
    assert accepts(ll_tokenizer, named, call("ping", {}) + stop)
    assert not accepts(ll_tokenizer, named, call("lookup", TRICKY))
    assert not accepts(ll_tokenizer, named, call("ping", {}) + call("ping", {}))
