"""Client items in, decoded conversation items out; and conversation items as engine turns."""

from __future__ import annotations

import json

import numpy as np

from ..audio.formats import AudioFormat, pcm16_to_float32
from ..audio.ingest import AudioIngest
from ..engine.port import AudioPart, ImagePart, Part, TextPart, ToolCallPart, ToolResultPart, Turn
from ..protocol import client_events as ce
from ..protocol.codec import decode_base64
from ..protocol.errors import ProtocolError, quote
from ..vision.images import DecodedImage, ImageError, ImageLimits, decode_image
from .conversation import Content, Item

_PART_TYPES = {
    "user": {"input_text", "input_audio", "input_image"},
    "system": {"input_text"},
    # `text` is the beta name of output_text.
    "assistant": {"output_text", "text"},
}


def parse_item(
    spec: ce.Item, item_id: str, audio_format: AudioFormat, image_limits: ImageLimits, param: str
) -> Item:
    """Decode every part once, on arrival; raises ProtocolError naming the part at fault.

    A function_call_output's `name` is left for the session to fill from the call it answers."""
    if spec.type == "function_call":
        return _parse_function_call(spec, item_id, param)
    if spec.type == "function_call_output":
        call_id = _required(spec.call_id, "call_id", param)
        output = _required(spec.output, "output", param)
        return Item(id=item_id, role="tool", type="function_call_output", call_id=call_id, output=output)
    if spec.type != "message":
        raise ProtocolError(
            "unsupported_item_type",
            f"Item type {quote(spec.type)} is not supported; "
            "send message, function_call or function_call_output.",
            param=f"{param}.type",
        )
    if spec.role not in _PART_TYPES:
        raise ProtocolError(
            "invalid_value",
            "A message needs a role: user, assistant or system.",
            param=f"{param}.role",
        )
    if not spec.content:
        raise ProtocolError(
            "missing_required_parameter", "A message needs content.", param=f"{param}.content"
        )
    content = [
        _parse_part(part, spec.role, audio_format, image_limits, f"{param}.content[{index}]")
        for index, part in enumerate(spec.content)
    ]
    return Item(id=item_id, role=spec.role, content=content)  # type: ignore[arg-type]


def check_call_item(item: Item, earlier: list[Item], param: str) -> None:
    """A result must answer a call made earlier, whose name it takes; call ids are unique."""
    calls = {i.call_id: i for i in earlier if i.type == "function_call"}
    if item.type == "function_call" and item.call_id in calls:
        raise ProtocolError(
            "duplicate_call_id", f"A function_call with call_id {quote(item.call_id)} exists.", param=param
        )
    if item.type == "function_call_output":
        call = calls.get(item.call_id)
        if call is None:
            raise ProtocolError(
                "unknown_call_id",
                f"No function_call with call_id {quote(item.call_id)} is in the conversation.",
                param=param,
            )
        item.name = call.name


def _parse_function_call(spec: ce.Item, item_id: str, param: str) -> Item:
    name = _required(spec.name, "name", param)
    arguments = spec.arguments or "{}"
    try:
        is_object = isinstance(json.loads(arguments), dict)
    except ValueError:
        is_object = False
    if not is_object:
        raise ProtocolError(
            "invalid_value", "`arguments` must be a JSON object, as text.", param=f"{param}.arguments"
        )
    return Item(
        id=item_id,
        role="assistant",
        type="function_call",
        call_id=spec.call_id or f"call_{item_id}",
        name=name,
        arguments=arguments,
    )


def _parse_part(
    part: ce.ContentPart,
    role: str,
    audio_format: AudioFormat,
    image_limits: ImageLimits,
    param: str,
) -> Content:
    if part.type not in _PART_TYPES[role]:
        allowed = ", ".join(sorted(_PART_TYPES[role]))
        raise ProtocolError(
            "invalid_value",
            f"A {role} message cannot hold {quote(part.type)} content; use {allowed}.",
            param=f"{param}.type",
        )
    if part.type == "input_audio":
        return Content(
            "input_audio",
            audio=decode_audio(_required(part.audio, "audio", param), audio_format, param),
        )
    if part.type == "input_image":
        image = decode_image_param(
            _required(part.image_url, "image_url", param), image_limits, f"{param}.image_url"
        )
        return Content("input_image", image=image, detail=part.detail or "auto")
    text = _required(part.text, "text", param)
    return Content("output_text" if role == "assistant" else "input_text", text=text)


def decode_audio(audio_b64: str, audio_format: AudioFormat, param: str) -> np.ndarray:
    data = decode_base64(audio_b64, param=f"{param}.audio")
    if audio_format.kind == "audio/pcm" and len(data) % 2:
        raise ProtocolError(
            "invalid_value",
            "PCM16 audio must have an even number of bytes.",
            param=f"{param}.audio",
        )
    ingest = AudioIngest(audio_format)
    return np.concatenate([ingest.push(data), ingest.flush()])


def decode_image_param(value: str, limits: ImageLimits, param: str) -> DecodedImage:
    try:
        return decode_image(value, limits)
    except ImageError as exc:
        raise ProtocolError(exc.code, exc.message, param=param) from None


def _required(value: str | None, name: str, param: str) -> str:
    if value is None:
        raise ProtocolError(
            "missing_required_parameter",
            f"This needs `{name}`.",
            param=f"{param}.{name}",
        )
    return value


def audio_key(item_id: str, content_index: int) -> str:
    """The prompt cache's identity of one audio part: where it sits in the conversation."""
    return f"{item_id}/{content_index}"


def image_part(image: DecodedImage) -> ImagePart:
    return ImagePart(image.image, image.sha256)


def to_turn(item: Item) -> Turn:
    if item.type == "function_call":
        return Turn("assistant", (ToolCallPart(item.call_id, item.name, item.arguments),), item.id)
    if item.type == "function_call_output":
        return Turn("tool", (ToolResultPart(item.call_id, item.name, item.output),), item.id)
    parts: list[Part] = []
    for index, content in enumerate(item.content):
        if content.type == "input_audio" and content.audio is not None:
            parts.append(AudioPart(pcm16_to_float32(content.audio), audio_key(item.id, index)))
        elif content.type == "input_image" and content.image is not None:
            parts.append(image_part(content.image))
        elif content.text:
            parts.append(TextPart(content.text))
    return Turn(role=item.role, parts=tuple(parts), item_id=item.id)
