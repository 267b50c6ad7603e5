"""One response's lifecycle as server events: created, its output items (a message, function calls), done."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..engine.port import GenerationDone, ToolCall, Usage
from ..protocol import server_events as se
from .conversation import Content, Item

_STATUS_BY_STOP_REASON = {
    "end_of_turn": "completed",
    "max_tokens": "incomplete",
    "cancelled": "cancelled",
    "error": "failed",
}

# The session's side of an item's life in the conversation: conversation.item.added / .done (or nothing,
# out of band).
ItemHook = Callable[[Item], list[se.ServerEvent]]


@dataclass
class Response:
    id: str
    # The first output item takes this id: the engine stores its answer under it for replay.
    first_item_id: str
    new_item_id: Callable[[], str]
    conversation_id: str | None
    max_output_tokens: int
    metadata: dict[str, str] | None
    item_added: ItemHook
    item_done: ItemHook
    # Set when a cancel was asked for: the engine still reports the end, with usage.
    cancel_reason: str | None = None
    outputs: list[Item] = field(default_factory=list)
    _message: Item | None = None
    _text_parts: list[str] = field(default_factory=list)

    def to_wire(
        self, status: str, details: se.StatusDetails | None = None, usage: Usage | None = None
    ) -> se.ResponseOut:
        return se.ResponseOut(
            id=self.id,
            status=status,  # type: ignore[arg-type]
            status_details=details,
            output=[item.to_wire() for item in self.outputs] if status != "in_progress" else [],
            conversation_id=self.conversation_id,
            output_modalities=["text"],
            max_output_tokens=self.max_output_tokens,
            metadata=self.metadata,
            usage=_usage_to_wire(usage) if usage else None,
        )

    def text_delta(self, text: str) -> list[se.ServerEvent]:
        events = [] if self._message is not None else self._open_message()
        self._text_parts.append(text)
        return [*events, se.ResponseOutputTextDelta(**self._part_ids(), delta=text)]  # type: ignore[arg-type]

    def tool_call(self, call: ToolCall) -> list[se.ServerEvent]:
        """A call arrives whole: its item opens, its arguments stream as one delta, and it closes."""
        events = self._close_message("completed")
        item = Item(
            id=self._next_item_id(),
            role="assistant",
            status="in_progress",
            type="function_call",
            call_id=call.call_id,
            name=call.name,
        )
        index = self._add_output(item)
        ids = {"response_id": self.id, "item_id": item.id, "output_index": index, "call_id": call.call_id}
        events += [se.ResponseOutputItemAdded(response_id=self.id, output_index=index, item=item.to_wire())]
        events += self.item_added(item)
        item.arguments, item.status = call.arguments, "completed"
        events += [
            se.ResponseFunctionCallArgumentsDelta(**ids, delta=call.arguments),  # type: ignore[arg-type]
            se.ResponseFunctionCallArgumentsDone(**ids, name=call.name, arguments=call.arguments),  # type: ignore[arg-type]
            se.ResponseOutputItemDone(response_id=self.id, output_index=index, item=item.to_wire()),
            *self.item_done(item),
        ]
        return events

    def finish(self, done: GenerationDone) -> tuple[list[se.ServerEvent], se.ResponseOut]:
        """The closing events of the open item, and the response as response.done states it."""
        status = _STATUS_BY_STOP_REASON[done.stop_reason]
        # A response that said nothing still has its (empty) message, as before tools existed.
        events = self._open_message() if not self.outputs else []
        events += self._close_message("completed" if status == "completed" else "incomplete")
        return events, self.to_wire(status, self._status_details(status, done), done.usage)

    def _open_message(self) -> list[se.ServerEvent]:
        """Up to the first delta. conversation.item.added sits between output_item.added and the part."""
        self._message = Item(id=self._next_item_id(), role="assistant", status="in_progress")
        self._text_parts = []
        index = self._add_output(self._message)
        return [
            se.ResponseOutputItemAdded(response_id=self.id, output_index=index, item=self._message.to_wire()),
            *self.item_added(self._message),
            se.ResponseContentPartAdded(**self._part_ids(), part=se.ContentPartOut(type="text", text="")),  # type: ignore[arg-type]
        ]

    def _close_message(self, status: str) -> list[se.ServerEvent]:
        message = self._message
        if message is None:
            return []
        self._message = None
        text = "".join(self._text_parts)
        ids = self._part_ids(message)
        message.status = status  # type: ignore[assignment]
        message.content = [Content("output_text", text=text)]
        return [
            se.ResponseOutputTextDone(**ids, text=text),  # type: ignore[arg-type]
            se.ResponseContentPartDone(**ids, part=se.ContentPartOut(type="text", text=text)),  # type: ignore[arg-type]
            se.ResponseOutputItemDone(
                response_id=self.id, output_index=self.outputs.index(message), item=message.to_wire()
            ),
            *self.item_done(message),
        ]

    def _part_ids(self, message: Item | None = None) -> dict[str, object]:
        message = message or self._message
        assert message is not None
        return {
            "response_id": self.id,
            "item_id": message.id,
            "output_index": self.outputs.index(message),
            "content_index": 0,
        }

    def _next_item_id(self) -> str:
        return self.first_item_id if not self.outputs else self.new_item_id()

    def _add_output(self, item: Item) -> int:
        self.outputs.append(item)
        return len(self.outputs) - 1

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
