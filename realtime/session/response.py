"""One response's lifecycle as server events: created, the output item and its text, done."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.port import GenerationDone, Usage
from ..protocol import server_events as se
from .conversation import Content, Item

_STATUS_BY_STOP_REASON = {
    "end_of_turn": "completed",
    "max_tokens": "incomplete",
    "cancelled": "cancelled",
    "error": "failed",
}


@dataclass
class Response:
    id: str
    item: Item
    conversation_id: str | None
    max_output_tokens: int
    metadata: dict[str, str] | None
    # Set when a cancel was asked for: the engine still reports the end, with usage.
    cancel_reason: str | None = None
    text_parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def to_wire(
        self, status: str, details: se.StatusDetails | None = None, usage: Usage | None = None
    ) -> se.ResponseOut:
        return se.ResponseOut(
            id=self.id,
            status=status,  # type: ignore[arg-type]
            status_details=details,
            output=[self.item.to_wire()] if status != "in_progress" else [],
            conversation_id=self.conversation_id,
            output_modalities=["text"],
            max_output_tokens=self.max_output_tokens,
            metadata=self.metadata,
            usage=_usage_to_wire(usage) if usage else None,
        )

    def _part_ids(self) -> dict[str, object]:
        return {
            "response_id": self.id,
            "item_id": self.item.id,
            "output_index": 0,
            "content_index": 0,
        }

    def opening_events(self) -> list[se.ServerEvent]:
        """Up to the first delta. conversation.item.added sits between output_item.added and the part."""
        self.item.status = "in_progress"
        return [
            se.ResponseOutputItemAdded(response_id=self.id, output_index=0, item=self.item.to_wire()),
            se.ResponseContentPartAdded(**self._part_ids(), part=se.ContentPartOut(type="text", text="")),  # type: ignore[arg-type]
        ]

    def delta_event(self, text: str) -> se.ResponseOutputTextDelta:
        self.text_parts.append(text)
        return se.ResponseOutputTextDelta(**self._part_ids(), delta=text)  # type: ignore[arg-type]

    def finish(self, done: GenerationDone) -> tuple[list[se.ServerEvent], se.ResponseOut]:
        """The closing events of the output item, and the response as response.done states it."""
        status = _STATUS_BY_STOP_REASON[done.stop_reason]
        self.item.status = "completed" if status == "completed" else "incomplete"
        self.item.content = [Content("output_text", text=self.text)]
        text_part = se.ContentPartOut(type="text", text=self.text)
        events: list[se.ServerEvent] = [
            se.ResponseOutputTextDone(**self._part_ids(), text=self.text),  # type: ignore[arg-type]
            se.ResponseContentPartDone(**self._part_ids(), part=text_part),  # type: ignore[arg-type]
            se.ResponseOutputItemDone(response_id=self.id, output_index=0, item=self.item.to_wire()),
        ]
        return events, self.to_wire(status, self._status_details(status, done), done.usage)

    def _status_details(self, status: str, done: GenerationDone) -> se.StatusDetails | None:
        if status == "cancelled":
            return se.StatusDetails(type="cancelled", reason=self.cancel_reason or "client_cancelled")
        if status == "incomplete":
            return se.StatusDetails(type="incomplete", reason="max_output_tokens")
        if status == "failed":
            error = {
                "type": "server_error",
                "code": "engine_error",
                "message": done.error_message or "generation failed",
            }
            return se.StatusDetails(type="failed", error=error)
        return None


def _usage_to_wire(usage: Usage) -> se.UsageOut:
    return se.UsageOut(
        total_tokens=usage.input_tokens + usage.output_tokens,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        input_token_details=se.TokenDetails(
            text_tokens=usage.input_text_tokens,
            audio_tokens=usage.input_audio_tokens,
            image_tokens=usage.input_image_tokens,
            cached_tokens=usage.cached_tokens,
        ),
        output_token_details=se.OutputTokenDetails(text_tokens=usage.output_tokens, audio_tokens=0),
    )
