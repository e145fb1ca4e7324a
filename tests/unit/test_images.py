"""Thumbnails and image facts (Pillow, no I/O beyond memory): sizes, EXIF orientation, alpha,
and every bad image giving the facts it can and a reason instead of an exception."""

from __future__ import annotations

import io
import struct
import time
import zlib

from PIL import Image

from infra.images import describe


def encoded(image: Image.Image, fmt: str, **options) -> io.BytesIO:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    out.seek(0)
    return out


def opened(data: io.BytesIO) -> Image.Image:
    return Image.open(io.BytesIO(data.getvalue()))


def test_a_photo_gets_two_thumbnails_that_fit_their_boxes() -> None:
    facts = describe(encoded(Image.new("RGB", (4000, 3000), "navy"), "JPEG"))
    assert (facts.width, facts.height, facts.error) == (4000, 3000, None)
    assert [(t.px, t.width, t.height, t.mime) for t in facts.thumbnails] == [
        (360, 360, 270, "image/jpeg"),
        (1024, 1024, 768, "image/jpeg"),
    ]
    assert opened(io.BytesIO(facts.thumbnails[1].data)).size == (1024, 768)


def test_the_exif_orientation_is_applied_and_reported() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    facts = describe(encoded(Image.new("RGB", (800, 400), "red"), "JPEG", exif=exif))
    assert (facts.width, facts.height) == (400, 800)
    thumb = opened(io.BytesIO(facts.thumbnails[-1].data))
    assert thumb.size == (400, 800)
    assert not thumb.getexif()  # no metadata in thumbnails


def test_a_small_image_gets_one_thumbnail_at_its_own_size() -> None:
    facts = describe(encoded(Image.new("RGB", (100, 50)), "PNG"))
    assert [(t.px, t.width, t.height) for t in facts.thumbnails] == [(360, 100, 50)]


def test_transparency_is_kept_in_webp_thumbnails() -> None:
    for fmt in ("PNG", "WEBP", "GIF"):
        image = Image.new("RGBA", (500, 500), (255, 0, 0, 0))
        facts = describe(
            encoded(image if fmt != "GIF" else image.convert("P"), fmt, **({"transparency": 0} if fmt == "GIF" else {}))
        )
        assert facts.error is None, (fmt, facts.error)
        assert {t.mime for t in facts.thumbnails} == {"image/webp"}, fmt
        assert opened(io.BytesIO(facts.thumbnails[0].data)).mode == "RGBA"


def test_a_truncated_image_keeps_its_size_but_gets_no_thumbnail() -> None:
    data = encoded(Image.effect_noise((1200, 900), 64).convert("RGB"), "PNG").getvalue()
    facts = describe(io.BytesIO(data[: len(data) // 2]))
    assert (facts.width, facts.height) == (1200, 900)
    assert facts.thumbnails == [] and facts.error and "truncated" in facts.error.lower()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat) - 4)
        + idat
        + struct.pack(">I", zlib.crc32(idat))
    )


def test_a_decompression_bomb_is_refused_before_it_is_decoded() -> None:
    started = time.monotonic()
    facts = describe(io.BytesIO(png_header_only(60_000, 60_000)), max_pixels=50_000_000)
    assert time.monotonic() - started < 1
    assert facts.thumbnails == [] and facts.error
    assert "pixels" in facts.error or "DecompressionBomb" in facts.error


def test_the_limit_is_the_callers() -> None:
    facts = describe(encoded(Image.new("RGB", (2000, 2000)), "PNG"), max_pixels=1_000_000)
    assert (facts.width, facts.height, facts.thumbnails) == (2000, 2000, [])
    assert facts.error == "2000x2000 is more than 1,000,000 pixels"


def test_garbage_that_looks_like_an_image_gives_a_reason() -> None:
    facts = describe(io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100))
    assert facts == type(facts)(error=facts.error) and facts.error
