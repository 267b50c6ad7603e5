"""One answer being decoded: its row in each step's batched forward, stop rules, and what it yields."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

import mlx.core as mx

from .conversation_cache import ConversationCache
from .decoding import TokenRules
from .port import StopReason, TextDelta, ToolCall
from .prompt import Key
from .sampling import Constraint, Sampler
from .scheduler import StepScheduler

# A unit of work without new text (a prefill chunk, an encoded clip, a hidden token) still yields None, so
# the worker can step the next session.
Step = TextDelta | ToolCall | None


class AnswerTokens(Protocol):
    """What the request keeps of its answer (the model adapter's token router)."""

    token_ids: list[int]
    text: str

    def add(self, token_id: int) -> Any: ...

    def flush(self) -> str: ...


@dataclass(frozen=True)
class PromptEnd:
    """The prompt's last token, fed in a step's decode forward with the answers decoding then: the logits
    after it give the first answer token, so a starting answer costs no forward of its own."""

    token: mx.array
    key: Key


@dataclass(frozen=True)
class AnswerPolicy:
    response_id: str
    rules: TokenRules
    limit: int
    # What one token added becomes on the wire: a TextDelta, a ToolCall, or nothing yet.
    to_output: Callable[[Any], Step]
    # An answer that may make one call only ends at it.
    stop_after_call: bool


def decode_answer(
    scheduler: StepScheduler,
    first: mx.array | PromptEnd,
    sampler: Sampler,
    constraint: Constraint | None,
    cache: ConversationCache,
    answer: AnswerTokens,
    policy: AnswerPolicy,
    should_stop: Callable[[], bool],
) -> Generator[Step, None, StopReason]:
    """Decodes from the first answer token (or the prompt's end) until a stop token, the limit, a single
    call or cancellation; the cache leaves the batch when it ends."""
    output, shown = None, False
    try:
        if isinstance(first, PromptEnd):
            ticket = scheduler.decode(cache, first.token, sampler)
            yield None
            token = ticket.result()
            cache.keys.append(first.key)
            if should_stop():
                return "cancelled"
        else:
            token = first
        # The first token's text goes out with the unit that feeds it, a step earlier than the others': the
        # engine waits once for the forward that made it, and the time to first token loses a whole step.
        token_id = int(token.item())
        if token_id not in policy.rules.stop_ids and len(answer.token_ids) + 1 < policy.limit:
            output, shown = policy.to_output(answer.add(token_id)), True
        while True:
            last = len(answer.token_ids) + (not shown) >= policy.limit
            if constraint is not None:
                # The next token's mask depends on this one, so it is read before that step is queued.
                constraint.advance(int(token.item()))
            # As mlx-lm: the token goes into the step's forward before it is read, so the device computes
            # the next one while this thread filters and yields. A stop token is thus fed too (for
            # <turn|>, the next turn's prompt has it there anyway).
            ticket = None if last else scheduler.decode(cache, token, sampler)
            yield output
            # The step ran (the worker's, or here for a direct caller): the token is in the cache.
            next_token = None if ticket is None else ticket.result()
            token_id = int(token.item())
            if not last:
                cache.keys.append(token_id)
            if should_stop():
                if not shown:
                    # Fed but never shown: the answer keeps the token (the cache holds it), not its text,
                    # so the replayed ids match the cache and the replayed text matches what was said.
                    said = answer.text
                    answer.add(token_id)
                    answer.text = said
                return "cancelled"
            if shown:
                # Added and yielded before its step; a call it completed ends the answer now it is fed.
                if isinstance(output, ToolCall) and policy.stop_after_call:
                    return "end_of_turn"
                output = None
            else:
                if token_id in policy.rules.stop_ids or ticket is None:
                    return (yield from _finish(answer, policy, token_id))
                output = policy.to_output(answer.add(token_id))
                if isinstance(output, ToolCall) and policy.stop_after_call:
                    yield output
                    return "end_of_turn"
            token, shown = next_token, False
    finally:
        scheduler.release(cache)


def _finish(answer: AnswerTokens, policy: AnswerPolicy, token_id: int) -> Generator[Step, None, StopReason]:
    if token_id in policy.rules.stop_ids:
        tail = answer.flush()
        if tail:
            yield TextDelta(policy.response_id, tail)
        return "end_of_turn"
    # The limit: the last token still counts, then whatever text the detokenizer held back.
    output = policy.to_output(answer.add(token_id))
    if output is not None:
        yield output
    tail = answer.flush()
    if tail:
        yield TextDelta(policy.response_id, tail)
    return "max_tokens"
