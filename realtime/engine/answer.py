"""One answer being decoded: sampled tokens to text deltas, stop rules, and its row in the step's batch."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import mlx.core as mx

from .conversation_cache import ConversationCache
from .decoding import StreamingDetokenizer, ThinkingFilter, TokenRules
from .port import StopReason, TextDelta
from .prompt import Reply
from .sampling import Sampler
from .scheduler import StepScheduler

# A unit of work without new text (a prefill chunk, an encoded clip, a hidden token) still yields None, so
# the worker can step the next session.
Step = TextDelta | None


class Answer:
    """The answer's tokens and visible text; `extra_mask` (vocab-sized, True = banned), when set, joins the
    suppression mask for the next token sampled, e.g. a grammar constraint."""

    def __init__(self, tokenizer: Any, rules: TokenRules) -> None:
        self.token_ids: list[int] = []
        self.text = ""
        self.extra_mask: mx.array | None = None
        self._thinking = ThinkingFilter(rules.hidden_span)
        self._detokenizer = StreamingDetokenizer(tokenizer)

    def add(self, token_id: int) -> str:
        self.token_ids.append(token_id)
        delta = self._detokenizer.add(token_id) if self._thinking.visible(token_id) else ""
        self.text += delta
        return delta

    def flush(self) -> str:
        tail = self._detokenizer.flush()
        self.text += tail
        return tail

    def reply(self) -> Reply:
        return Reply(tuple(self.token_ids), self.text)


def decode_answer(
    scheduler: StepScheduler,
    response_id: str,
    first_token: mx.array,
    sampler: Sampler,
    cache: ConversationCache,
    answer: Answer,
    rules: TokenRules,
    limit: int,
    should_stop: Callable[[], bool],
) -> Generator[Step, None, StopReason]:
    """Decodes until a stop token, the limit or cancellation; the cache leaves the batch when it ends."""

    def sample(logits: mx.array) -> mx.array:
        return sampler(logits, answer.extra_mask)

    token, output = first_token, None
    try:
        while True:
            last = len(answer.token_ids) + 1 >= limit
            # As mlx-lm: the token goes into the step's forward before it is read, so the device computes
            # the next one while this thread filters and yields. A stop token is thus fed too (for
            # <turn|>, the next turn's prompt has it there anyway).
            ticket = None if last else scheduler.decode(cache, token, sample)
            yield output
            token_id = int(token.item())
            if not last:
                cache.keys.append(token_id)
            if should_stop():
                # Fed but never shown: the answer keeps its id (the cache holds it), not its text.
                answer.token_ids.append(token_id)
                return "cancelled"
            delta = "" if token_id in rules.stop_ids else answer.add(token_id)
            if token_id in rules.stop_ids or ticket is None:
                text = delta + answer.flush()
                if text:
                    yield TextDelta(response_id, text)
                return "end_of_turn" if token_id in rules.stop_ids else "max_tokens"
            output = TextDelta(response_id, delta) if delta else None
            token = ticket.result()
    finally:
        scheduler.release(cache)
