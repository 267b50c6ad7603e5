from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.engine.decoding import StreamingDetokenizer, ThinkingFilter
from realtime.engine.demo_model import build_tokenizer
from realtime.engine.gemma4.tokens import CHANNEL_END_ID, CHANNEL_START_ID, token_rules

CHANNEL_START, CHANNEL_END = 100, 101


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def byte_tokens(tokenizer, text: str) -> list[int]:
    return [tokenizer.token_to_id(f"<0x{b:02X}>") for b in text.encode("utf-8")]


def stream(tokenizer, ids: list[int]) -> list[str]:
    detokenizer = StreamingDetokenizer(tokenizer)
    return [detokenizer.add(i) for i in ids] + [detokenizer.flush()]


def test_a_character_split_over_byte_tokens_comes_out_whole(tokenizer):
    ids = [tokenizer.token_to_id("▁yes"), *byte_tokens(tokenizer, "€"), tokenizer.token_to_id("▁no")]
    assert stream(tokenizer, ids) == [" yes", "", "", "€", " no", ""]


def test_an_invalid_byte_run_is_released_after_four_tokens(tokenizer):
    # 0xE2 0x82 then plain ASCII bytes can never complete; holding them forever would stall the answer.
    ids = byte_tokens(tokenizer, "€")[:2] + byte_tokens(tokenizer, "ab")
    deltas = stream(tokenizer, ids)
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
    assert deltas[3] != ""


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(st.characters(exclude_characters="\ufffd"), min_size=1, max_size=3),
            st.sampled_from(["▁yes", "▁hello", "▁the", "\n"]),
        ),
        max_size=12,
    )
)
def test_deltas_join_to_the_full_decode_and_never_split_a_character(tokenizer, pieces):
    ids = []
    for piece in pieces:
        vocab_id = tokenizer.token_to_id(piece)
        ids += (
            [vocab_id]
            if vocab_id is not None and piece.startswith(("▁", "\n"))
            else byte_tokens(tokenizer, piece)
        )
    deltas = stream(tokenizer, ids)
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
    assert not any("\ufffd" in d for d in deltas)


def test_thinking_filter_hides_the_channel_and_what_is_inside():
    thinking = ThinkingFilter((CHANNEL_START_ID, CHANNEL_END_ID))
    ids = [7, CHANNEL_START, 8, 9, CHANNEL_END, 10, CHANNEL_START, 11]
    assert [i for i in ids if thinking.visible(i)] == [7, 10]


def test_token_rules_stop_at_end_of_turn_and_eos_and_suppress_media_markers():
    config = SimpleNamespace(
        eos_token_id=[1, 106],
        image_token_id=258_880,
        audio_token_id=258_881,
        video_token_id=258_884,
        boi_token_id=255_999,
        eoi_token_id=258_882,
        boa_token_id=256_000,
        eoa_token_id=258_883,
    )
    rules = token_rules(config)
    # <|tool_response> (50): after its calls the model stops where the results go.
    assert rules.stop_ids == {1, 50, 106}
    assert {255_999, 256_000, 258_880, 258_881, 258_882, 258_883, 258_884} <= rules.suppressed_ids
    assert not rules.stop_ids & rules.suppressed_ids
