"""Decode an input image (data URI or bare base64) once, on arrival, into a bounded RGB picture."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from ..protocol.errors import quote

ImageErrorCode = Literal[
    "invalid_image_url",
    "image_url_not_supported",
    "invalid_base64",
    "unsupported_image_format",
    "image_too_large",
    "image_too_many_pixels",
    "invalid_image",
]

# Only these Pillow plugins are ever asked to parse untrusted bytes.
_ACCEPTED_FORMATS = ["JPEG", "PNG", "WEBP"]
# Pillow's JPEG plugin reports a multi-picture JPEG (common from phone cameras) as MPO.
_MIME_BY_FORMAT = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# image/jpg is not registered, but browsers and SDK samples send it.
_ACCEPTED_MIMES = {"image/jpeg", "image/jpg", "image/png", "image/webp"}
_WHITE = (255, 255, 255, 255)


class ImageError(Exception):
    def __init__(self, code: ImageErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ImageErrorCode = code
        self.message = message


@dataclass(frozen=True)
class ImageLimits:
    max_image_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_side_px: int = 1024

    def __post_init__(self) -> None:
        if min(self.max_image_bytes, self.max_pixels, self.max_side_px) < 1:
            raise ValueError(f"image limits must be positive: {self}")


# eq=False: comparing PIL images compares every pixel; sha256 is the identity to compare.
@dataclass(frozen=True, eq=False)
class DecodedImage:
    image: Image.Image
    sha256: str
    source_mime: str

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    def thumbnail_data_uri(self, max_side_px: int = 160) -> str:
        small = self.image.copy()
        small.thumbnail((max_side_px, max_side_px))
        jpeg = io.BytesIO()
        small.save(jpeg, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode("ascii")


def decode_image(value: str, limits: ImageLimits) -> DecodedImage:
    """Decode, orient, convert to RGB and downscale one image.

    Transparency is composited on white, as a browser shows it on a plain page; black would
    hide dark line art. Animated WebP/PNG give their first frame. The declared MIME type only
    screens out other formats early; the bytes decide which decoder runs.
    """
    payload = _base64_payload(value)
    data = _decode_base64(payload, limits.max_image_bytes)
    image, source_mime = _load_bounded(data, limits)
    image = _to_rgb(image)
    image.thumbnail((limits.max_side_px, limits.max_side_px))
    return DecodedImage(image=image, sha256=_pixel_sha256(image), source_mime=source_mime)


def _base64_payload(value: str) -> str:
    scheme = value[:8].lower()
    if scheme.startswith(("http://", "https://")):
        # The server fetches nothing on a client's behalf: no SSRF into its network, no slow
        # third-party hosts stalling a session. Clients inline images as data URIs.
        raise ImageError(
            "image_url_not_supported",
            "remote image URLs are not fetched; send the image as a data:image/...;base64 URI",
        )
    if scheme.startswith("data:"):
        return _data_uri_payload(value)
    if ":" in value:  # never in base64, so this is some other URL scheme
        raise ImageError(
            "invalid_image_url", "expected a data:image/...;base64 URI or bare base64 image data"
        )
    return value


def _data_uri_payload(uri: str) -> str:
    # RFC 2397: data:[<mediatype>][;parameter=value]*[;base64],<data>
    header, comma, payload = uri[len("data:") :].partition(",")
    mime, *params = (part.strip().lower() for part in header.split(";"))
    if not comma or "base64" not in params:
        raise ImageError("invalid_image_url", "image data URI must be base64: data:<mime>;base64,")
    if mime and not mime.startswith("image/"):
        raise ImageError("invalid_image_url", f"data URI type {quote(mime)} is not an image")
    if mime and mime not in _ACCEPTED_MIMES:
        raise ImageError("unsupported_image_format", f"{quote(mime)} is not supported; send JPEG, PNG, WebP")
    return payload


def _decode_base64(payload: str, max_image_bytes: int) -> bytes:
    n_padding = len(payload) - len(payload.rstrip("="))
    n_bytes = len(payload) * 3 // 4 - n_padding
    if n_bytes > max_image_bytes:
        raise ImageError("image_too_large", f"image is {n_bytes} bytes; the limit is {max_image_bytes} bytes")
    try:
        # binascii reads an ASCII str in place; base64.b64decode would first copy all of it to bytes.
        return binascii.a2b_base64(payload, strict_mode=True)
    except ValueError as exc:  # binascii.Error, or a non-ASCII character
        raise ImageError("invalid_base64", f"image data is not valid base64: {exc}") from None


# Pillow raises many exception types on hostile bytes (OSError, ValueError, SyntaxError, ...);
# each of them means "not a usable image", so both Pillow calls below catch Exception.


def _open_header(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=_ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError("image_too_many_pixels", str(exc)) from None
    except UnidentifiedImageError:
        raise _unaccepted(data) from None
    except Exception as exc:
        raise _invalid(exc) from None


def _load_bounded(data: bytes, limits: ImageLimits) -> tuple[Image.Image, str]:
    image = _open_header(data)
    # Image.open parsed only the header; this guard runs before any pixel is decoded and
    # whatever Image.MAX_IMAGE_PIXELS another library may have set.
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageError(
            "image_too_many_pixels",
            f"image is {width}x{height}; the limit is {limits.max_pixels} pixels",
        )
    source_mime = _MIME_BY_FORMAT[image.format or ""]
    if source_mime == "image/jpeg":
        # DCT scaling decodes a big camera JPEG at 1/2..1/8 size, at most down to max_side_px.
        image.draft("RGB", (limits.max_side_px, limits.max_side_px))
    try:
        # load() is where a truncated file fails (ImageFile.LOAD_TRUNCATED_IMAGES stays False).
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as exc:
        raise _invalid(exc) from None
    return image, source_mime


def _invalid(exc: Exception) -> ImageError:
    return ImageError("invalid_image", f"image data could not be decoded: {exc}")


def _unaccepted(data: bytes) -> ImageError:
    # Any Pillow plugin may name the format for the error message; none of them decodes pixels.
    try:
        with Image.open(io.BytesIO(data)) as other:
            found = other.format
    except Exception:
        return ImageError("invalid_image", "image data is not a JPEG, PNG or WebP image")
    return ImageError("unsupported_image_format", f"{found} is not supported; send JPEG, PNG or WebP")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if not image.has_transparency_data:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")


def _pixel_sha256(image: Image.Image) -> str:
    # Hash what the model sees, so the prompt cache key ignores container and encoder details.
    digest = hashlib.sha256(f"{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()
