"""The engine step: one decode forward over every answer that is decoding, and a prefill token budget.

Requests stay in their own generators (prompt, prefix reuse, detokenizer, stop rules); they hand the
scheduler a token to feed and get back the next one, lazily, and take prefill room before each chunk.
The worker calls `run()` once per step, after every session has had its turn, so the step's tokens go
through the model together and its prefill chunks together stay under the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Protocol

import mlx.core as mx

from .conversation_cache import ConversationCache
from .prefill import Piece, take_tokens

Sample = Callable[[mx.array], mx.array]


class Batch(Protocol):
    def step(self, tokens: mx.array) -> mx.array:
        """Logits (B, vocab) after feeding one token per row."""

    def extract(self, row: int) -> list: ...


class DecodeTicket:
    """One row's token for the coming step; `result()` is the token sampled after it, not yet computed."""

    def __init__(self, scheduler: StepScheduler, cache: ConversationCache, token: mx.array, sample: Sample):
        self.cache = cache
        self.token = token
        self.sample = sample
        self._scheduler = scheduler
        self._next: mx.array | None = None
        self._error: BaseException | None = None

    def result(self) -> mx.array:
        if self._next is None and self._error is None:
            # Stepped outside the worker (a direct caller): run the step now.
            self._scheduler.run()
        if self._error is not None:
            raise self._error
        assert self._next is not None
        return self._next

    def _settle(self, next_token: mx.array | None, error: BaseException | None = None) -> None:
        self._next, self._error = next_token, error


class StepScheduler:
    """Keeps the decoding rows merged in one batch cache while the set of rows stays the same: merging
    copies every row's KV, so it happens when a row joins or leaves, not every token."""

    def __init__(
        self,
        make_batch: Callable[[Sequence[ConversationCache]], Batch],
        step_alone: Callable[[ConversationCache, mx.array], mx.array],
        prefill_tokens_per_step: int,
    ) -> None:
        self._make_batch = make_batch
        self._step_alone = step_alone
        self._pending: list[DecodeTicket] = []
        self._rows: list[ConversationCache] = []
        self._batch: Batch | None = None
        self._prefill_tokens_per_step = prefill_tokens_per_step
        self._prefill_used = 0
        self.n_steps = 0

    def prefill_room(self, n_wanted: int) -> Generator[None, None, int]:
        """How many of n_wanted prefill tokens this step still takes, at least one: waits for a later
        step (yielding) while this one's budget is spent."""
        while True:
            room = min(n_wanted, self._prefill_tokens_per_step - self._prefill_used)
            if room > 0:
                self._prefill_used += room
                return room
            yield from self.end_of_unit()

    def end_of_unit(self) -> Generator[None, None, None]:
        """Yields to the worker, whose step ends with run(); a direct caller's next() ends it here."""
        step = self.n_steps
        yield None
        if self.n_steps == step:
            self.run()

    @property
    def n_batched(self) -> int:
        return len(self._rows)

    def decode(self, cache: ConversationCache, token: mx.array, sample: Sample) -> DecodeTicket:
        ticket = DecodeTicket(self, cache, token, sample)
        self._pending.append(ticket)
        return ticket

    def release(self, cache: ConversationCache) -> None:
        """The conversation stops decoding: its cache holds its own layers again when this returns."""
        self._pending = [t for t in self._pending if t.cache is not cache]
        if any(row is cache for row in self._rows):
            self._unbatch()

    def run(self) -> None:
        self.n_steps += 1
        self._prefill_used = 0
        tickets, self._pending = self._in_row_order(self._pending), []
        if not tickets:
            return
        try:
            logits = self._forward(tickets)
            next_tokens = [t.sample(logits[i : i + 1]) for i, t in enumerate(tickets)]
            mx.async_eval(next_tokens)
        except Exception as exc:  # noqa: BLE001 - handed to every row's request, which fails on its own
            self._batch, self._rows = None, []
            for ticket in tickets:
                ticket._settle(None, exc)
            return
        for ticket, next_token in zip(tickets, next_tokens, strict=True):
            ticket._settle(next_token)

    def _forward(self, tickets: list[DecodeTicket]) -> mx.array:
        caches = [t.cache for t in tickets]
        if not _same_rows(caches, self._rows):
            self._unbatch()
            if len(caches) == 1:
                return self._step_alone(caches[0], tickets[0].token)
            self._batch, self._rows = self._make_batch(caches), caches
        assert self._batch is not None
        return self._batch.step(mx.concatenate([t.token.reshape(1) for t in tickets]))

    def _in_row_order(self, tickets: list[DecodeTicket]) -> list[DecodeTicket]:
        # The same rows in another order would look like a new batch.
        index = {id(row): i for i, row in enumerate(self._rows)}
        return sorted(tickets, key=lambda t: index.get(id(t.cache), len(index)))

    def _unbatch(self) -> None:
        if self._batch is not None:
            for row, cache in enumerate(self._rows):
                cache.layers = self._batch.extract(row)
        self._batch, self._rows = None, []


def _same_rows(caches: list[ConversationCache], rows: list[ConversationCache]) -> bool:
    return len(caches) == len(rows) and all(a is b for a, b in zip(caches, rows, strict=True))


def prefill_in_steps(
    scheduler: StepScheduler,
    pieces: Sequence[Piece],
    forward: Callable[[list[Piece]], mx.array],
    should_stop: Callable[[], bool],
    max_chunk_tokens: int,
) -> Generator[None, None, mx.array | None]:
    """Feeds pieces through `forward` a chunk at a time, within each step's budget; yields after each
    chunk. The last chunk's logits, or None when stopped (or given nothing)."""
    rest, logits = [p for p in pieces if len(p)], None
    while rest:
        if should_stop():
            return None
        room = yield from scheduler.prefill_room(min(max_chunk_tokens, sum(len(p) for p in rest)))
        if should_stop():
            return None
        chunk, rest = take_tokens(rest, room)
        logits = forward(chunk)
        yield from scheduler.end_of_unit()
    return logits
