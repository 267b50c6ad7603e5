"""Input audio transcription: one engine request per committed user audio turn, and the events it yields."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.port import (
    ENGINE_SAMPLE_RATE_HZ,
    AudioPart,
    EngineCommand,
    EngineOutput,
    GenerationDone,
    StartTranscription,
    TextDelta,
    TranscriptionRequest,
    Usage,
)
from ..protocol import server_events as se
from ..protocol.ids import IdFactory
from .content import to_turn
from .conversation import Item
from .settings import Transcription

# Speech runs about 3 words (4-5 tokens) a second; a transcript far longer than that is a model
# repeating itself, and must not hold the engine for its whole token budget.
_TOKENS_PER_SECOND = 8
_MIN_TOKENS = 32


@dataclass
class _Running:
    item: Item
    content_index: int
    text_parts: list[str] = field(default_factory=list)


class Transcriber:
    """Requests wait in `pending` until the session releases them, once the answer to their turn has
    begun to stream or no answer runs: a transcription must never stand between the user and the
    answer's first delta."""

    def __init__(self, session_id: str, ids: IdFactory) -> None:
        self._session_id = session_id
        self._ids = ids
        self._pending: list[EngineCommand] = []
        self._running: dict[str, _Running] = {}

    def request(self, item: Item, settings: Transcription) -> None:
        content_index = next(i for i, c in enumerate(item.content) if c.type == "input_audio")
        clips = tuple(part for part in to_turn(item).parts if isinstance(part, AudioPart))
        request_id = self._ids.new("transcription")
        n_seconds = sum(len(clip.samples) for clip in clips) // ENGINE_SAMPLE_RATE_HZ
        request = TranscriptionRequest(
            session_id=self._session_id,
            request_id=request_id,
            clips=clips,
            language=settings.language,
            prompt=settings.prompt,
            max_output_tokens=_MIN_TOKENS + _TOKENS_PER_SECOND * n_seconds,
        )
        self._pending.append(StartTranscription(request))
        self._running[request_id] = _Running(item, content_index)

    def release(self) -> list[EngineCommand]:
        pending, self._pending = self._pending, []
        return pending

    def owns(self, output: EngineOutput) -> bool:
        return output.response_id in self._running

    def on_output(self, output: EngineOutput) -> tuple[list[se.ServerEvent], Item | None]:
        """The events for one engine output, and the item once its transcription has ended."""
        running = self._running[output.response_id]
        ids = {"item_id": running.item.id, "content_index": running.content_index}
        if isinstance(output, TextDelta):
            running.text_parts.append(output.text)
            return [se.ConversationItemInputAudioTranscriptionDelta(**ids, delta=output.text)], None
        assert isinstance(output, GenerationDone)
        del self._running[output.response_id]
        if output.stop_reason in ("end_of_turn", "max_tokens"):
            transcript = "".join(running.text_parts).strip()
            running.item.content[running.content_index].transcript = transcript
            usage = _usage_to_wire(output.usage)
            event: se.ServerEvent = se.ConversationItemInputAudioTranscriptionCompleted(
                **ids, transcript=transcript, usage=usage
            )
        else:
            message = output.error_message or f"The transcription was {output.stop_reason}."
            error = se.TranscriptionError(type="server_error", code="transcription_failed", message=message)
            event = se.ConversationItemInputAudioTranscriptionFailed(**ids, error=error)
        return [event], running.item


def _usage_to_wire(usage: Usage) -> se.TranscriptionUsage:
    return se.TranscriptionUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        input_token_details=se.TranscriptionTokenDetails(
            text_tokens=usage.input_text_tokens, audio_tokens=usage.input_audio_tokens
        ),
    )
