"""Gemma 4 token ids (public tokenizer files), in one place, and the decoding rules they imply."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..decoding import TokenRules

PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
THINK_ID = 98
CHANNEL_START_ID = 100
CHANNEL_END_ID = 101
TURN_START_ID = 105
END_OF_TURN_ID = 106
TOOL_START_ID = 46
TOOL_END_ID = 47
TOOL_CALL_START_ID = 48
TOOL_CALL_END_ID = 49
TOOL_RESPONSE_START_ID = 50
TOOL_RESPONSE_END_ID = 51
# Wraps every string literal in a tool call, declaration or result.
QUOTE_ID = 52
TOOL_TOKEN_IDS = frozenset(range(TOOL_START_ID, QUOTE_ID + 1))
BEGIN_IMAGE_ID = 255_999
BEGIN_AUDIO_ID = 256_000
IMAGE_ID = 258_880
AUDIO_ID = 258_881
END_IMAGE_ID = 258_882
END_AUDIO_ID = 258_883

# pad, bos, <|think|> (system-turn only), <|turn> (a model turn must end with <turn|> first), and the
# multimodal markers and placeholders: a model can emit the end markers by mistake, and none of these
# belongs in an answer.
NEVER_EMITTED_IDS = frozenset(
    {
        PAD_ID,
        BOS_ID,
        THINK_ID,
        TURN_START_ID,
        BEGIN_IMAGE_ID,
        BEGIN_AUDIO_ID,
        IMAGE_ID,
        AUDIO_ID,
        END_IMAGE_ID,
        END_AUDIO_ID,
    }
)
_MEDIA_ID_FIELDS = (
    "image_token_id",
    "audio_token_id",
    "video_token_id",
    "boi_token_id",
    "eoi_token_id",
    "boa_token_id",
    "eoa_token_id",
)


def token_rules(config: Any, extra_suppressed: Iterable[int] = ()) -> TokenRules:
    """Stop at the config's eos ids (106 <turn|> among them), eos, and <|tool_response> (after its calls
    the model stops where the results go); hide the reasoning channel."""
    eos = getattr(config, "eos_token_id", None) or []
    eos_ids = {eos} if isinstance(eos, int) else set(eos)
    media_ids = {getattr(config, name, None) for name in _MEDIA_ID_FIELDS} - {None}
    suppressed = NEVER_EMITTED_IDS | media_ids | set(extra_suppressed)
    return TokenRules(
        stop_ids=frozenset(eos_ids | {EOS_ID, END_OF_TURN_ID, TOOL_RESPONSE_START_ID}),
        suppressed_ids=frozenset(suppressed),
        hidden_span=(CHANNEL_START_ID, CHANNEL_END_ID),
    )
