"""How one step's prefill budget is split between the sessions offering chunks, and grouped into forwards."""

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


def test_a_chunk_whose_request_is_closed_before_its_step_is_not_prefilled():
    prefilled: list[list[ConversationCache]] = []
    scheduler = StepScheduler(
        make_batch=None,
        step_alone=None,
        output_head=None,
        row_streams=[],
        prefill_together=lambda caches, chunks: prefilled.append(list(caches)),
        prefill_to_logits=None,
        prefill_tokens_per_step=8,
        prefill_alone_tokens=8,
    )
    kept, dropped = ConversationCache(list), ConversationCache(list)
    steps = {
        cache: prefill_in_steps(scheduler, cache, [TokenPiece((1, 2, 3))], lambda: False)
        for cache in (kept, dropped)
    }
    for generator in steps.values():
        next(generator)  # each offers its chunk for the coming step
    steps[dropped].close()
    scheduler.run()
    assert prefilled == [[kept]]
