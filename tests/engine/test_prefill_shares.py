"""How one step's prefill budget is split between the sessions offering chunks, and grouped into forwards."""

import mlx.core as mx

from realtime.engine.conversation_cache import ConversationCache
from realtime.engine.prefill import TokenPiece
from realtime.engine.scheduler import StepScheduler, equal_groups, fair_shares, prefill_in_steps


def test_everyone_gets_all_they_offer_when_the_budget_allows():
    assert fair_shares([10, 300, 20], 512) == [10, 300, 20]


def test_a_long_prompt_takes_what_the_short_ones_leave():
    assert fair_shares([2048, 10], 512) == [502, 10]


def test_long_prompts_split_the_budget_evenly():
    assert fair_shares([900, 700, 10, 600], 64) == [18, 18, 10, 18]


def test_more_rows_than_tokens_serves_the_first_rows():
    assert fair_shares([5, 5, 5], 2) == [1, 1, 0]


def test_equal_shares_go_through_one_forward():
    assert equal_groups([8, 8, 3, 8, 0]) == [(8, [0, 1, 3]), (3, [2])]


def prefill_only_scheduler(prefilled: list, ended: list | None = None) -> StepScheduler:
    """Records each prefill forward's caches and tokens per row, and each prompt end's tokens; no model."""

    def end(cache, pieces):
        ended.append(sum(len(p) for p in pieces))
        return mx.zeros((1, 4))

    return StepScheduler(
        make_batch=None,
        step_alone=None,
        output_head=None,
        row_streams=[],
        prefill_together=lambda caches, chunks: prefilled.append(
            (list(caches), sum(len(p) for p in chunks[0]))
        ),
        prefill_to_logits=end,
        prefill_tokens_per_step=8,
        prefill_alone_tokens=8,
    )


def test_prompt_ends_share_a_step_s_budget_and_the_rest_wait_for_the_next():
    prefilled, ended = [], []
    scheduler = prefill_only_scheduler(prefilled, ended)
    sample = lambda logits: mx.argmax(logits, axis=-1)  # noqa: E731
    tickets = [
        scheduler.end_prompt(ConversationCache(list), [TokenPiece((1, 2, 3))], sample) for _ in range(3)
    ]
    scheduler.prefill(ConversationCache(list), [TokenPiece(tuple(range(20)))])
    scheduler.run()
    # Two prompt ends (6 tokens) fit the budget of 8; the chunk offered gets what they leave.
    assert ended == [3, 3] and [n_tokens for _, n_tokens in prefilled] == [2]
    assert [t.done for t in tickets] == [True, True, False]
    scheduler.run()
    assert ended == [3, 3, 3] and tickets[2].done


def test_a_chunk_whose_request_is_closed_before_its_step_is_not_prefilled():
    prefilled: list[tuple[list[ConversationCache], int]] = []
    scheduler = prefill_only_scheduler(prefilled)
    kept, dropped = ConversationCache(list), ConversationCache(list)
    steps = {
        cache: prefill_in_steps(scheduler, cache, [TokenPiece((1, 2, 3))], lambda: False)
        for cache in (kept, dropped)
    }
    for generator in steps.values():
        next(generator)  # each offers its chunk for the coming step
    steps[dropped].close()
    scheduler.run()
    assert prefilled == [([kept], 3)]
