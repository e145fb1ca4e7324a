"""Content sniffing: the type comes from the bytes, and only images and plain text are inline."""

from __future__ import annotations

import pytest

from domain.filetypes import OCTET_STREAM, served_type, shown_inline, sniff


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"PK\x03\x04\x14\x00", "application/zip"),
        (b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
        (b"\x00\x00\x00\x18ftypheic", "image/heic"),
        (b"\x7fELF\x02\x01", "application/x-executable"),
        (b"BM" + b"\x00" * 12 + (40).to_bytes(4, "little"), "image/bmp"),
        (b"BMW drivers wanted\n", "text/plain"),  # "BM" alone is not a bitmap
        (b"hello\nworld\t\r\n", "text/plain"),
        ("na\u00efve caf\u00e9 \u2603\n".encode(), "text/plain"),
        (b"\xef\xbb\xbfwith a BOM", "text/plain"),
        (b"  \n<!DOCTYPE html><html>", "text/html"),
        (b"<HTML>", "text/html"),
        (b"<script>alert(1)</script>", "text/html"),
        (b"<p>para", "text/html"),
        (b"<!-- comment", "text/html"),
        (b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        (b"<svg onload=alert(1)>", "image/svg+xml"),
        (b"<?xml version='1.0'?><feed/>", "application/xml"),
        (b"<pre>not html per WHATWG", "text/plain"),
        (b"text with a NUL\x00 byte", OCTET_STREAM),
        (b"\xff\xfe\x00\x00 latin-1 \xe9\xe9 is not UTF-8", OCTET_STREAM),
        (b"", OCTET_STREAM),
    ],
)
def test_sniffing_reads_the_bytes(head: bytes, mime: str) -> None:
    assert sniff(head, complete=True) == mime


def test_a_character_cut_by_the_window_is_still_text() -> None:
    head = ("x" * 8190 + "\u00e9").encode()[:8191]  # the window ends inside the two-byte character
    assert sniff(head) == "text/plain"
    assert sniff(head, complete=True) == OCTET_STREAM  # but a whole file that ends so is not UTF-8


@pytest.mark.parametrize(
    ("mime", "name", "inline"),
    [
        ("image/png", "cat.png", True),
        ("image/png", "cat.html", True),  # the bytes are a PNG, and it is served as one (nosniff)
        ("text/plain", "notes.txt", True),
        ("text/plain", "README", True),
        ("text/plain", "app.js", False),
        ("text/plain", "page.HTML", False),
        ("text/html", "page.txt", False),
        ("image/svg+xml", "logo.svg", False),
        ("application/pdf", "doc.pdf", False),
        (OCTET_STREAM, "x.png", False),
    ],
)
def test_only_images_and_plain_text_are_inline(mime: str, name: str, inline: bool) -> None:
    assert shown_inline(mime, name) is inline


def test_text_is_served_as_utf8() -> None:
    assert served_type("text/plain") == "text/plain; charset=utf-8"
    assert served_type("image/png") == "image/png"
