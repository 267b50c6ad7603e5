"""One answer being decoded: its row in each step's batched forward, stop rules, and what it yields."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

import mlx.core as mx

from .conversation_cache import ConversationCache
from .decoding import TokenRules
from .port import StopReason, TextDelta, ToolCall
from .prefill import Piece, TokenPiece
from .sampling import Constraint, Sampler
from .scheduler import DecodeTicket, PromptEndTicket, StepScheduler

# A unit of work without new text (a prefill chunk, an encoded clip, a hidden token) still yields None, so
# the worker can step the next session.
Step = TextDelta | ToolCall | None


class AnswerTokens(Protocol):
    """What the request keeps of its answer (the model adapter's token router)."""

    token_ids: list[int]
    text: str

    def add(self, token_id: int) -> Any: ...

    def flush(self) -> str: ...

    def keep_unshown(self, token_id: int) -> None:
        """Keeps a token for the replay that no output will show (the answer ends cancelled)."""


@dataclass(frozen=True)
class PromptEnd:
    """The rest of the prompt, fed in the step that samples the first answer token from the logits after it.

    One token goes into the step's decode forward with the answers decoding then, so a starting answer
    costs no forward of its own. A longer rest (a new turn of a cached conversation) runs in one forward
    of its own, rather than a prefill forward and then the last token's.
    """

    pieces: tuple[Piece, ...]

    @property
    def one_token(self) -> TokenPiece | None:
        piece, *more = self.pieces
        return piece if not more and len(piece) == 1 and isinstance(piece, TokenPiece) else None

    def queue(
        self, scheduler: StepScheduler, cache: ConversationCache, sampler: Sampler
    ) -> DecodeTicket | PromptEndTicket:
        token = self.one_token
        if token is None:
            return scheduler.end_prompt(cache, list(self.pieces), sampler)
        return scheduler.decode(cache, mx.array(token.ids), sampler)


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
    row = _Row(scheduler, sampler, constraint, cache, answer, policy, should_stop)
    try:
        token = first
        if isinstance(first, PromptEnd):
            ticket = first.queue(scheduler, cache, sampler)
            # A prompt end that did not fit this step's budget runs in a later one.
            while not ticket.done:
                yield from scheduler.end_of_unit()
            token = ticket.result()
            if first.one_token is not None:
                # A decode step does not record what it fed; the prefill of a longer rest did.
                cache.keys.extend(first.one_token.keys)
            if should_stop():
                return "cancelled"
        return (yield from _decode_from(row, token))
    finally:
        scheduler.release(cache)


@dataclass(frozen=True)
class _Row:
    scheduler: StepScheduler
    sampler: Sampler
    constraint: Constraint | None
    cache: ConversationCache
    answer: AnswerTokens
    policy: AnswerPolicy
    should_stop: Callable[[], bool]


def _decode_from(row: _Row, token: mx.array) -> Generator[Step, None, StopReason]:
    answer, policy = row.answer, row.policy
    output, shown = _shown_early(row, token)
    while True:
        last = len(answer.token_ids) + (not shown) >= policy.limit
        if row.constraint is not None:
            # The next token's mask depends on this one, so it is read before that step is queued.
            row.constraint.advance(int(token.item()))
        # As mlx-lm: the token goes into the step's forward before it is read, so the device computes the
        # next one while this thread filters and yields. A stop token is thus fed too (for <turn|>, the
        # next turn's prompt has it there anyway).
        ticket = None if last else row.scheduler.decode(row.cache, token, row.sampler)
        yield output
        # The step ran (the worker's, or here for a direct caller): the token is in the cache.
        next_token = None if ticket is None else ticket.result()
        token_id = int(token.item())
        if not last:
            row.cache.keys.append(token_id)
        if row.should_stop():
            # Fed but never shown: the answer keeps the token (the cache holds it), not its text, so the
            # replayed ids match the cache and the replayed text what was said. Not a stop token: the
            # next prompt closes the turn itself, as after an answer that ended.
            if not shown and token_id not in policy.rules.stop_ids:
                answer.keep_unshown(token_id)
            return "cancelled"
        if shown:
            # Added and yielded before its step: a call it completed ends the answer now that it is fed.
            if _ends_answer(output, policy):
                return "end_of_turn"
            output = None
        else:
            if token_id in policy.rules.stop_ids or ticket is None:
                return (yield from _finish(answer, policy, token_id))
            output = policy.to_output(answer.add(token_id))
            if _ends_answer(output, policy):
                yield output
                return "end_of_turn"
        token, shown = next_token, False


def _shown_early(row: _Row, token: mx.array) -> tuple[Step, bool]:
    """The first token's output, to go out with the unit that feeds it, a step earlier than the others':
    the engine waits once for the forward that made it, and the time to first token loses a step.
    A stop token or the limit's last token take the usual path."""
    token_id = int(token.item())
    if token_id in row.policy.rules.stop_ids or len(row.answer.token_ids) + 1 >= row.policy.limit:
        return None, False
    return row.policy.to_output(row.answer.add(token_id)), True


def _ends_answer(output: Step, policy: AnswerPolicy) -> bool:
    return isinstance(output, ToolCall) and policy.stop_after_call


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
