"""How one step's prefill budget is split between the sessions offering chunks, and grouped into forwards."""

from realtime.engine.scheduler import equal_groups, fair_shares


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
