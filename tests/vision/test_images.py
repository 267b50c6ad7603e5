import base64
import io
import random
import time

import pytest
from PIL import Image

from realtime.vision.images import ImageError, ImageLimits, decode_image
from tests.conftest import data_uri, png_of_size

LIMITS = ImageLimits()
RED = (255, 0, 0)
BLUE = (0, 0, 255)


def encode(image: Image.Image, format: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format, **options)
    return out.getvalue()


def random_rgb(width: int, height: int) -> Image.Image:
    return Image.frombytes("RGB", (width, height), random.Random(width).randbytes(width * height * 3))


def error_code(value: str, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(ImageError) as caught:
        decode_image(value, limits)
    return caught.value.code


def assert_close(pixel, expected, tolerance: int) -> None:
    assert all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True)), pixel


def test_png_decodes_to_the_exact_pixels():
    original = random_rgb(16, 12)
    decoded = decode_image(data_uri(encode(original, "PNG"), "image/png"), LIMITS)
    assert (decoded.width, decoded.height, decoded.source_mime) == (16, 12, "image/png")
    assert decoded.image.mode == "RGB"
    assert decoded.image.tobytes() == original.tobytes()


def test_lossless_webp_and_bare_base64_png_share_the_pixel_hash():
    original = random_rgb(16, 12)
    webp = decode_image(data_uri(encode(original, "WEBP", lossless=True), "image/webp"), LIMITS)
    bare_png = decode_image(base64.b64encode(encode(original, "PNG")).decode(), LIMITS)
    assert webp.source_mime == "image/webp"
    assert webp.image.tobytes() == original.tobytes()
    assert webp.sha256 == bare_png.sha256
    other = decode_image(data_uri(encode(random_rgb(16, 13), "PNG"), "image/png"), LIMITS)
    assert other.sha256 != bare_png.sha256


def test_solid_jpeg_keeps_its_colour():
    solid = Image.new("RGB", (32, 24), (200, 120, 40))
    decoded = decode_image(data_uri(encode(solid, "JPEG", quality=90), "image/jpeg"), LIMITS)
    assert decoded.source_mime == "image/jpeg"
    assert_close(decoded.image.getpixel((16, 12)), (200, 120, 40), tolerance=4)


def test_multi_picture_jpeg_from_a_phone_gives_its_first_picture():
    first, second = Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)
    mpo = encode(first, "MPO", save_all=True, append_images=[second])
    decoded = decode_image(data_uri(mpo, "image/jpeg"), LIMITS)
    assert decoded.source_mime == "image/jpeg"
    assert_close(decoded.image.getpixel((4, 4)), RED, tolerance=4)


def test_format_comes_from_the_bytes_not_the_declared_type():
    png = encode(Image.new("RGB", (4, 4), RED), "PNG")
    assert decode_image(data_uri(png, "image/jpeg"), LIMITS).source_mime == "image/png"


def test_exif_orientation_is_applied():
    # Stored 40x20, left half red; orientation 6 means "rotate 90° clockwise to display".
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    decoded = decode_image(data_uri(jpeg, "image/jpeg"), LIMITS)
    assert (decoded.width, decoded.height) == (20, 40)
    assert_close(decoded.image.getpixel((10, 8)), RED, tolerance=30)
    assert_close(decoded.image.getpixel((10, 32)), BLUE, tolerance=30)


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(0, 0, 255, 255), (255, 0, 0, 0), (0, 0, 0, 128)])
    decoded = decode_image(data_uri(encode(rgba, "PNG"), "image/png"), LIMITS)
    pixels = [decoded.image.getpixel((x, 0)) for x in range(3)]
    assert pixels[:2] == [BLUE, (255, 255, 255)]
    assert_close(pixels[2], (127, 127, 127), tolerance=1)


def test_palette_transparency_is_composited_on_white():
    palette = Image.new("P", (2, 1))
    palette.putpalette([*RED, *BLUE])
    palette.putdata([0, 1])
    decoded = decode_image(data_uri(encode(palette, "PNG", transparency=1), "image/png"), LIMITS)
    assert [decoded.image.getpixel((x, 0)) for x in range(2)] == [RED, (255, 255, 255)]


def test_large_image_is_downscaled_keeping_aspect_ratio():
    big = Image.new("RGB", (2048, 1536), (10, 200, 30))
    decoded = decode_image(data_uri(encode(big, "JPEG"), "image/jpeg"), LIMITS)
    assert (decoded.width, decoded.height) == (1024, 768)
    assert_close(decoded.image.getpixel((512, 384)), (10, 200, 30), tolerance=4)
    tall = Image.new("RGB", (300, 1200), RED)
    small = decode_image(data_uri(encode(tall, "PNG"), "image/png"), ImageLimits(max_side_px=100))
    assert (small.width, small.height) == (25, 100)


def test_thumbnail_data_uri_is_a_small_jpeg():
    decoded = decode_image(data_uri(encode(random_rgb(400, 200), "PNG"), "image/png"), LIMITS)
    thumbnail = decode_image(decoded.thumbnail_data_uri(), LIMITS)
    assert thumbnail.source_mime == "image/jpeg"
    assert (thumbnail.width, thumbnail.height) == (160, 80)


def test_remote_and_unknown_urls_are_rejected():
    assert error_code("https://example.com/cat.png") == "image_url_not_supported"
    assert error_code("HTTP://10.0.0.1/admin") == "image_url_not_supported"
    assert error_code("file:///etc/passwd") == "invalid_image_url"
    assert error_code("data:image/png,rawbytes") == "invalid_image_url"
    assert error_code("data:text/plain;base64,aGVsbG8=") == "invalid_image_url"


def test_bad_base64_and_non_images_are_rejected():
    assert error_code("data:image/png;base64,@@@@") == "invalid_base64"
    assert error_code("iVBORw0KGgo") == "invalid_base64"  # missing padding
    text = base64.b64encode(b"this is plain text, not a picture").decode()
    assert error_code(text) == "invalid_image"
    assert error_code("data:image/png;base64,") == "invalid_image"


def test_truncated_jpeg_is_an_error():
    jpeg = encode(random_rgb(64, 64), "JPEG", quality=90)
    assert error_code(data_uri(jpeg[: len(jpeg) * 6 // 10], "image/jpeg")) == "invalid_image"


def test_other_formats_are_unsupported():
    gif = encode(Image.new("RGB", (4, 4), RED), "GIF")
    bmp = encode(Image.new("RGB", (4, 4), RED), "BMP")
    assert error_code(data_uri(gif, "image/gif")) == "unsupported_image_format"
    assert error_code(data_uri(gif, "image/png")) == "unsupported_image_format"
    assert error_code(base64.b64encode(bmp).decode()) == "unsupported_image_format"


def test_payload_size_is_checked_on_the_base64_length():
    png = encode(random_rgb(8, 8), "PNG")
    assert decode_image(data_uri(png, "image/png"), ImageLimits(max_image_bytes=len(png)))
    over = ImageLimits(max_image_bytes=len(png) - 1)
    assert error_code(data_uri(png, "image/png"), over) == "image_too_large"
    # 50 MiB of characters that are not base64: decoding first would say invalid_base64.
    assert error_code("data:image/png;base64," + "!" * (50 * 2**20)) == "image_too_large"


def test_pixel_limit_is_ours_not_pillows(monkeypatch):
    png = encode(Image.new("RGB", (20, 20), RED), "PNG")
    assert error_code(data_uri(png, "image/png"), ImageLimits(max_pixels=399)) == ("image_too_many_pixels")
    assert decode_image(data_uri(png, "image/png"), ImageLimits(max_pixels=400))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert error_code(data_uri(png, "image/png"), ImageLimits(max_pixels=399)) == ("image_too_many_pixels")


@pytest.mark.parametrize("pillow_guard", ["default", "disabled"])
def test_decompression_bomb_is_refused_before_decoding(monkeypatch, pillow_guard):
    bomb = data_uri(png_of_size(20_000, 20_000), "image/png")
    assert len(bomb) < 200_000
    if pillow_guard == "disabled":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    started = time.perf_counter()
    # Decoding 400 MP would take seconds and over 1 GB as RGB; the header check takes ms.
    assert error_code(bomb) == "image_too_many_pixels"
    assert time.perf_counter() - started < 2


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        ImageLimits(max_side_px=0)


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP"])
def test_corrupted_files_fail_only_with_image_error(format):
    rng = random.Random(format)
    original = encode(random_rgb(16, 16), format)
    for _ in range(300):
        corrupted = bytearray(original[: rng.randint(1, len(original))])
        for _ in range(rng.randint(0, 3)):
            corrupted[rng.randrange(min(len(corrupted), 64))] = rng.randrange(256)
        try:
            decode_image(base64.b64encode(corrupted).decode(), LIMITS)
        except ImageError as error:
            assert error.code in {"invalid_image", "unsupported_image_format"}
