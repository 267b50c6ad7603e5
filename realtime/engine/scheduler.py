"""The engine step: one decode forward over every answer that is decoding, and batched prefill chunks.

Requests stay in their own generators (prompt, prefix reuse, detokenizer, stop rules); during a step they
hand the scheduler tickets (an argument for a batched call such as the audio encoder's, a chunk to
prefill, a token to feed) and read the results after it. The worker calls `run()` once per step, after
every session has had its turn: the batched calls run once each, the step's prefill chunks share one
token budget and go through the model in as few forwards as their lengths allow, each prompt end (a
cached conversation's new turn, run whole) gets one forward that gives its first answer token, then
every decoding row's token goes through one B×1 forward, then the output head and each row's sampling
(spread over the CPU's cores when there is no GPU: `row_streams.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Generic, Protocol, TypeVar

import mlx.core as mx

from .conversation_cache import ConversationCache
from .prefill import Piece, take_tokens
from .row_streams import row_groups

Sample = Callable[[mx.array], mx.array]
Arg = TypeVar("Arg")
Result = TypeVar("Result")


class Batch(Protocol):
    def step(self, tokens: mx.array) -> mx.array:
        """The last hidden states (B, hidden) after feeding one token per row; the output head makes them
        logits."""

    def split(self, n_rows: int) -> list[list]:
        """Each row's own cache layers again."""


class _Ticket(Generic[Result]):
    """Work queued for the coming step; `result()` is read after it (a direct caller's read runs it)."""

    def __init__(self, scheduler: StepScheduler) -> None:
        self._scheduler = scheduler
        self._result: Result | None = None
        self._error: BaseException | None = None
        self._settled = False

    @property
    def done(self) -> bool:
        return self._settled

    def result(self) -> Result:
        if not self._settled:
            self._scheduler.run()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    def _settle(self, result: Result | None, error: BaseException | None = None) -> None:
        self._result, self._error, self._settled = result, error, True


class DecodeTicket(_Ticket[mx.array]):
    """One row's token for the coming step; the result is the token sampled after it, not yet computed."""

    def __init__(self, scheduler: StepScheduler, cache: ConversationCache, token: mx.array, sample: Sample):
        super().__init__(scheduler)
        self.cache = cache
        self.token = token
        self.sample = sample


class PrefillTicket(_Ticket[int]):
    """A chunk offered for the coming step; the result is how many of its tokens the step prefilled."""

    def __init__(self, scheduler: StepScheduler, cache: ConversationCache, pieces: list[Piece]):
        super().__init__(scheduler)
        self.cache = cache
        self.pieces = pieces
        self.n_tokens = sum(len(p) for p in pieces)


class PromptEndTicket(_Ticket[mx.array]):
    """A continued prompt's whole rest, run in one forward of the coming step: the result is the first
    answer token sampled from its logits, not yet computed."""

    def __init__(
        self, scheduler: StepScheduler, cache: ConversationCache, pieces: list[Piece], sample: Sample
    ):
        super().__init__(scheduler)
        self.cache = cache
        self.pieces = pieces
        self.sample = sample
        self.n_tokens = sum(len(p) for p in pieces)


class CallTicket(_Ticket[Result], Generic[Arg, Result]):
    """One argument of a call that takes a list of them (an encoder pass over several sessions' audio)."""

    def __init__(self, scheduler: StepScheduler, call: Callable[[list[Arg]], list[Result]], arg: Arg):
        super().__init__(scheduler)
        self.call = call
        self.arg = arg


class StepScheduler:
    """Keeps the decoding rows merged in one batch cache while the set of rows stays the same: merging
    copies every row's KV, so it happens when a row joins or leaves, not every token."""

    def __init__(
        self,
        make_batch: Callable[[Sequence[ConversationCache]], Batch],
        step_alone: Callable[[ConversationCache, mx.array], mx.array],
        output_head: Callable[[mx.array], mx.array],
        row_streams: Sequence[mx.Stream],
        prefill_together: Callable[[Sequence[ConversationCache], Sequence[list[Piece]]], None],
        prefill_to_logits: Callable[[ConversationCache, list[Piece]], mx.array],
        prefill_tokens_per_step: int,
        prefill_alone_tokens: int,
    ) -> None:
        self._make_batch = make_batch
        self._step_alone = step_alone
        self._output_head = output_head
        self._row_streams = row_streams
        self._prefill_together = prefill_together
        self._prefill_to_logits = prefill_to_logits
        self._prefill_tokens_per_step = prefill_tokens_per_step
        # A step with one prefill and nothing decoding delays no one: its chunk may be longer.
        self._prefill_alone_tokens = prefill_alone_tokens
        self._pending: list[DecodeTicket] = []
        self._prefills: list[PrefillTicket] = []
        self._prompt_ends: list[PromptEndTicket] = []
        self._calls: list[CallTicket] = []
        self._rows: list[ConversationCache] = []
        self._batch: Batch | None = None
        self.n_steps = 0

    @property
    def max_chunk_tokens(self) -> int:
        return max(self._prefill_alone_tokens, self._prefill_tokens_per_step)

    @property
    def max_prompt_end_tokens(self) -> int:
        """The longest rest `end_prompt` takes: one step's prefill budget."""
        return self._prefill_tokens_per_step

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

    def prefill(self, cache: ConversationCache, pieces: list[Piece]) -> PrefillTicket:
        ticket = PrefillTicket(self, cache, pieces)
        self._prefills.append(ticket)
        return ticket

    def end_prompt(self, cache: ConversationCache, pieces: list[Piece], sample: Sample) -> PromptEndTicket:
        ticket = PromptEndTicket(self, cache, pieces, sample)
        self._prompt_ends.append(ticket)
        return ticket

    def together(self, call: Callable[[list[Arg]], list[Result]], arg: Arg) -> CallTicket[Arg, Result]:
        """Queues arg for the step's one call of `call` over every argument queued for it; the ticket's
        result is the call's result for this one. These calls run first in the step."""
        ticket: CallTicket[Arg, Result] = CallTicket(self, call, arg)
        self._calls.append(ticket)
        return ticket

    def withdraw(self, ticket: PrefillTicket) -> None:
        """Takes back a chunk offered for the coming step."""
        self._prefills = [t for t in self._prefills if t is not ticket]

    def release(self, cache: ConversationCache) -> None:
        """The conversation stops decoding: its cache holds its own layers again when this returns."""
        self._pending = [t for t in self._pending if t.cache is not cache]
        self._prompt_ends = [t for t in self._prompt_ends if t.cache is not cache]
        if any(row is cache for row in self._rows):
            self._unbatch()

    def run(self) -> None:
        self.n_steps += 1
        calls, self._calls = self._calls, []
        self._run_calls(calls)
        prefills, self._prefills = self._prefills, []
        tickets, self._pending = self._in_row_order(self._pending), []
        alone = not tickets and not self._prompt_ends and len(prefills) == 1
        budget = self._prefill_alone_tokens if alone else self._prefill_tokens_per_step
        prompt_ends = self._admit_prompt_ends(budget)
        self._run_prefills(prefills, max(0, budget - sum(t.n_tokens for t in prompt_ends)))
        for ticket in prompt_ends:
            self._run_prompt_end(ticket)
        if tickets:
            self._run_decode(tickets)

    def _admit_prompt_ends(self, budget: int) -> list[PromptEndTicket]:
        """The prompt ends this step runs, in the order they came, within its prefill budget (at least the
        first); the others wait for the next step. Each runs whole, and they take the budget before the
        chunks do: the answer a prompt end starts is what someone waits for now."""
        admitted: list[PromptEndTicket] = []
        while self._prompt_ends and (
            not admitted or sum(t.n_tokens for t in admitted) + self._prompt_ends[0].n_tokens <= budget
        ):
            admitted.append(self._prompt_ends.pop(0))
        return admitted

    def _run_calls(self, tickets: list[CallTicket]) -> None:
        by_call: dict[Callable, list[CallTicket]] = {}
        for ticket in tickets:
            by_call.setdefault(ticket.call, []).append(ticket)
        for call, group in by_call.items():
            try:
                results = call([t.arg for t in group])
            except Exception as exc:  # noqa: BLE001 - handed to each caller, which fails on its own
                for ticket in group:
                    ticket._settle(None, exc)
                continue
            for ticket, result in zip(group, results, strict=True):
                ticket._settle(result)

    def _run_prefills(self, tickets: list[PrefillTicket], budget: int) -> None:
        shares = fair_shares([t.n_tokens for t in tickets], budget)
        for ticket, share in zip(tickets, shares, strict=True):
            if not share:
                ticket._settle(0)
        for n_tokens, group in equal_groups(shares):
            rows = [tickets[i] for i in group]
            try:
                self._prefill_together(
                    [t.cache for t in rows], [take_tokens(t.pieces, n_tokens)[0] for t in rows]
                )
            except Exception as exc:  # noqa: BLE001 - handed to each row's request, which fails on its own
                for ticket in rows:
                    ticket._settle(None, exc)
                continue
            for ticket in rows:
                ticket._settle(n_tokens)

    def _run_prompt_end(self, ticket: PromptEndTicket) -> None:
        try:
            token = ticket.sample(self._prefill_to_logits(ticket.cache, ticket.pieces))
            # One wait for the prefill and the first token, when the token is read.
            mx.async_eval(token, [layer.state for layer in ticket.cache.layers])
        except Exception as exc:  # noqa: BLE001 - handed to the row's request, which fails on its own
            ticket._settle(None, exc)
            return
        ticket._settle(token)

    def _run_decode(self, tickets: list[DecodeTicket]) -> None:
        try:
            hidden = self._forward(tickets)
            next_tokens = []
            for stream, rows in row_groups(len(tickets), self._row_streams):
                with mx.stream(stream):
                    logits = self._output_head(hidden[rows.start : rows.stop])
                    next_tokens += [tickets[i].sample(logits[j : j + 1]) for j, i in enumerate(rows)]
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
            for cache in caches:
                # The batch holds a copy of every row's KV: the rows' own would double each session's
                # memory for as long as the batch lasts. Leaving the batch gives each row its layers back.
                cache.layers = []
        assert self._batch is not None
        return self._batch.step(mx.concatenate([t.token.reshape(1) for t in tickets]))

    def _in_row_order(self, tickets: list[DecodeTicket]) -> list[DecodeTicket]:
        # The same rows in another order would look like a new batch.
        index = {id(row): i for i, row in enumerate(self._rows)}
        return sorted(tickets, key=lambda t: index.get(id(t.cache), len(index)))

    def _unbatch(self) -> None:
        if self._batch is not None:
            for cache, layers in zip(self._rows, self._batch.split(len(self._rows)), strict=True):
                cache.layers = layers
        self._batch, self._rows = None, []


def _same_rows(caches: list[ConversationCache], rows: list[ConversationCache]) -> bool:
    return len(caches) == len(rows) and all(a is b for a, b in zip(caches, rows, strict=True))


def fair_shares(offered: Sequence[int], budget: int) -> list[int]:
    """How many of its offered tokens each row prefills this step: the most equal split of the budget
    (water-filling), so a long prompt never starves a short one; rows first in the step come first when
    the budget is smaller than the number of rows."""
    shares = [0] * len(offered)
    waiting = sorted(range(len(offered)), key=lambda i: offered[i])
    while waiting and budget > 0:
        cap = budget // len(waiting)
        if cap == 0:
            for i in sorted(waiting)[:budget]:
                shares[i] = 1
            break
        smallest = waiting[0]
        if offered[smallest] <= cap:
            shares[smallest] = offered[smallest]
            budget -= offered[smallest]
            waiting.pop(0)
            continue
        for i in waiting:
            shares[i] = cap
        break
    return shares


def equal_groups(shares: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Rows with the same share, which one forward prefills together without padding."""
    groups: dict[int, list[int]] = {}
    for i, n_tokens in enumerate(shares):
        if n_tokens:
            groups.setdefault(n_tokens, []).append(i)
    return list(groups.items())


def prefill_in_steps(
    scheduler: StepScheduler,
    cache: ConversationCache,
    pieces: Sequence[Piece],
    should_stop: Callable[[], bool],
) -> Generator[None, None, bool]:
    """Offers the pieces to the scheduler a chunk per step until all are prefilled; False when stopped."""
    rest = [p for p in pieces if len(p)]
    while rest:
        if should_stop():
            return False
        ticket = scheduler.prefill(cache, take_tokens(rest, scheduler.max_chunk_tokens)[0])
        try:
            yield from scheduler.end_of_unit()
        except GeneratorExit:
            # Closed before its step ran (its session went): the step need not prefill a cache no one reads.
            scheduler.withdraw(ticket)
            raise
        rest = take_tokens(rest, ticket.result())[1]
    return True
