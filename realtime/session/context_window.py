"""Which conversation items the model sees: the newest that fit its context, moved in large steps."""

from __future__ import annotations

from collections.abc import Sequence

from ..engine.port import ENGINE_SAMPLE_RATE_HZ, Usage
from .conversation import Item
from .truncation import Truncation

# A prior for text before the engine's usage has shown the real rate: generous for most tokenizers, so an
# early estimate errs towards cutting a little more, never towards overflowing.
PRIOR_TEXT_TOKENS_PER_CHAR = 0.5


class ContextWindow:
    """Hides the oldest items from the model when the conversation would overflow its context.

    Hidden items stay in the conversation (retrieve still finds them); only requests leave them out. Token
    costs are learned from the engine's usage, never assumed per model: audio tokens per second and tokens
    per image from the usage's per-modality counts, an answer's size from its own output tokens, text and
    per-item markup from what a request that extends the previous one costs more, and the rest
    (instructions, the prompt's frame, estimate error) as one overhead measured on the last request.
    """

    def __init__(self, context_tokens: int | None) -> None:
        self._context_tokens = context_tokens
        self._hidden: set[str] = set()
        self._answer_tokens: dict[str, int] = {}
        self._audio_tokens_per_s: float | None = None
        self._tokens_per_image: float | None = None
        self._text_tokens_per_char = PRIOR_TEXT_TOKENS_PER_CHAR
        self._markup_tokens_per_item = 0.0
        self._overhead_tokens = 0
        # The last request learned from: the ids it carried and its input tokens.
        self._last_sent: tuple[tuple[str, ...], int] | None = None
        self._largest_user_item_tokens = 0

    def visible(
        self, items: Sequence[Item], truncation: Truncation, max_output_tokens: int, upcoming_tokens: int = 0
    ) -> list[Item]:
        """The items the next request carries; the window moves first if they, and `upcoming_tokens` for
        an item still to come, would not fit."""
        if truncation.mode == "disabled":
            return list(items)
        shown = [item for item in items if item.id not in self._hidden]
        limit = self.conversation_limit(truncation, max_output_tokens)
        if limit is None:
            return shown
        costs = [self.estimate(item) for item in shown]
        total = sum(costs)
        if total + upcoming_tokens <= limit:
            return shown
        # Down to the retained share at once, so the next turns extend the engine's cache instead of each
        # cutting one more item and making it prefill the whole conversation again. The newest item stays.
        target = limit * truncation.retention_ratio
        n_dropped = 0
        while n_dropped < len(shown) - 1 and total > target:
            total -= costs[n_dropped]
            n_dropped += 1
        self._hidden.update(item.id for item in shown[:n_dropped])
        return shown[n_dropped:]

    def conversation_limit(self, truncation: Truncation, max_output_tokens: int) -> int | None:
        """Tokens the items may take: the context less room for the answer and the overhead, or the
        client's cap, whichever is lower."""
        limits = []
        if self._context_tokens is not None:
            limits.append(self._context_tokens - max_output_tokens - self._overhead_tokens)
        if truncation.post_instructions_tokens is not None:
            limits.append(truncation.post_instructions_tokens)
        return max(0, min(limits)) if limits else None

    def estimate(self, item: Item) -> int:
        return round(self._markup_tokens_per_item + self._content_estimate(item, with_text=True))

    def _content_estimate(self, item: Item, *, with_text: bool) -> float:
        answer_tokens = self._answer_tokens.get(item.id)
        if answer_tokens is not None:
            return answer_tokens
        audio_s, n_images, n_chars = _measure(item)
        tokens = n_chars * self._text_tokens_per_char if with_text else 0.0
        tokens += audio_s * (self._audio_tokens_per_s or 0.0)
        return tokens + n_images * (self._tokens_per_image or 0.0)

    def learn(self, sent: Sequence[Item], usage: Usage) -> None:
        """The engine's exact counts for a request that carried `sent` (with the session's instructions)."""
        if usage.input_tokens == 0:
            return
        audio_s = n_images = n_chars = 0
        for item in sent:
            item_audio_s, item_images, item_chars = _measure(item)
            audio_s += item_audio_s
            n_images += item_images
            if item.id not in self._answer_tokens:
                n_chars += item_chars
        if audio_s > 0 and usage.input_audio_tokens:
            self._audio_tokens_per_s = usage.input_audio_tokens / audio_s
        if n_images and usage.input_image_tokens:
            self._tokens_per_image = usage.input_image_tokens / n_images
        ids = tuple(item.id for item in sent)
        last = self._last_sent
        if last is not None and len(ids) > len(last[0]) and ids[: len(last[0])] == last[0]:
            self._learn_text(sent[len(last[0]) :], usage.input_tokens - last[1])
        self._last_sent = (ids, usage.input_tokens)
        self._overhead_tokens = usage.input_tokens - sum(self.estimate(item) for item in sent)
        user_costs = [self.estimate(item) for item in sent if item.role == "user"]
        self._largest_user_item_tokens = max(user_costs, default=0)

    @property
    def upcoming_turn_tokens(self) -> int:
        """What the next user turn will likely cost: the largest in the last request."""
        return self._largest_user_item_tokens

    def _learn_text(self, added: Sequence[Item], n_added_tokens: int) -> None:
        """What items added since the last request cost beyond their media and answers is markup and text."""
        rest = n_added_tokens - sum(self._content_estimate(item, with_text=False) for item in added)
        n_chars = sum(_measure(item)[2] for item in added if item.id not in self._answer_tokens)
        if n_chars == 0:
            self._markup_tokens_per_item = max(0.0, rest / len(added))
        else:
            rest -= self._markup_tokens_per_item * len(added)
            self._text_tokens_per_char = max(0.0, rest / n_chars)

    def record_answer(self, item_id: str, output_tokens: int) -> None:
        """An answer is replayed as the tokens the engine produced: its size is known exactly."""
        self._answer_tokens[item_id] = output_tokens

    def forget(self, item_id: str) -> None:
        self._hidden.discard(item_id)
        self._answer_tokens.pop(item_id, None)


def _measure(item: Item) -> tuple[float, int, int]:
    """Seconds of audio, images and characters of text the item holds."""
    audio_s, n_images, n_chars = 0.0, 0, 0
    for content in item.content:
        if content.audio is not None:
            audio_s += len(content.audio) / ENGINE_SAMPLE_RATE_HZ
        elif content.image is not None:
            n_images += 1
        elif content.text:
            n_chars += len(content.text)
    return audio_s, n_images, n_chars
