"""The conversation: ordered items with their decoded content, and how each looks on the wire."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..audio.formats import AudioFormat, encode_for_format
from ..protocol.codec import encode_base64
from ..protocol.errors import ProtocolError, quote
from ..protocol.server_events import (
    ContentPartOut,
    FunctionCallItemOut,
    FunctionCallOutputItemOut,
    InputAudioPartOut,
    ItemOut,
    MessageItemOut,
)
from ..vision.images import DecodedImage

ROOT = "root"


@dataclass
class Content:
    type: Literal["input_text", "input_audio", "input_image", "output_text"]
    text: str | None = None
    # 16 kHz int16: what the model hears, kept once per item.
    audio: np.ndarray | None = None
    image: DecodedImage | None = None
    detail: str = "auto"


@dataclass
class Item:
    id: str
    # A function_call is the assistant's, a function_call_output the tool's.
    role: Literal["user", "assistant", "system", "tool"]
    content: list[Content] = field(default_factory=list)
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    type: Literal["message", "function_call", "function_call_output"] = "message"
    call_id: str = ""
    # The function called; on a function_call_output, the name its call stated.
    name: str = ""
    arguments: str = ""
    output: str = ""

    def to_wire(self, audio_format: AudioFormat | None = None) -> ItemOut:
        """With audio_format, audio content is included (retrieve); otherwise left out, as OpenAI does."""
        if self.type == "function_call":
            return FunctionCallItemOut(
                id=self.id, status=self.status, call_id=self.call_id, name=self.name, arguments=self.arguments
            )
        if self.type == "function_call_output":
            return FunctionCallOutputItemOut(
                id=self.id, status=self.status, call_id=self.call_id, output=self.output
            )
        return MessageItemOut(
            id=self.id,
            role=self.role,
            status=self.status,
            content=[_content_to_wire(c, audio_format) for c in self.content],
        )


def _content_to_wire(
    content: Content, audio_format: AudioFormat | None
) -> ContentPartOut | InputAudioPartOut:
    if content.type == "input_audio":
        audio = None
        if audio_format is not None and content.audio is not None:
            audio = encode_base64(encode_for_format(content.audio, audio_format))
        return InputAudioPartOut(audio=audio)
    if content.type == "input_image":
        assert content.image is not None
        # Echo a thumbnail: the full frame already reached the model and need not cross the wire again.
        return ContentPartOut(
            type="input_image", image_url=content.image.thumbnail_data_uri(), detail=content.detail
        )
    return ContentPartOut(type=content.type, text=content.text or "")


class Conversation:
    def __init__(self) -> None:
        self._items: list[Item] = []

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def last_id(self) -> str | None:
        return self._items[-1].id if self._items else None

    def add(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Insert after previous_item_id (None: at the end, "root": first); return the id before it."""
        if self.find(item.id) is not None:
            raise ProtocolError(
                "duplicate_item_id", f"An item with id {quote(item.id)} already exists.", param="item.id"
            )
        if previous_item_id is None:
            index = len(self._items)
        elif previous_item_id == ROOT:
            index = 0
        else:
            index = self._index(previous_item_id, "previous_item_id", "previous_item_id_not_found") + 1
        self._items.insert(index, item)
        return self._items[index - 1].id if index > 0 else None

    def find_call(self, call_id: str) -> Item | None:
        return next(
            (item for item in self._items if item.type == "function_call" and item.call_id == call_id), None
        )

    def find(self, item_id: str) -> Item | None:
        return next((item for item in self._items if item.id == item_id), None)

    def get(self, item_id: str, code: str) -> Item:
        return self._items[self._index(item_id, "item_id", code)]

    def delete(self, item_id: str) -> None:
        del self._items[self._index(item_id, "item_id", "item_delete_invalid_item_id")]

    def previous_id(self, item_id: str) -> str | None:
        index = self._index(item_id, "item_id", "item_not_found")
        return self._items[index - 1].id if index > 0 else None

    def _index(self, item_id: str, param: str, code: str) -> int:
        for index, item in enumerate(self._items):
            if item.id == item_id:
                return index
        raise ProtocolError(code, f"Item with id {quote(item_id)} does not exist.", param=param)
