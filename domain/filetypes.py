"""What a file is, from its first bytes only (never its name or the client's Content-Type), and
how it may be served.

A small table of signatures rather than a library: the decisions that matter for safety are
which files are shown inline (the four thumbnailed image types and plain UTF-8 text) and which
are markup a browser would run (HTML, XML, SVG), and those must be exact and reviewable here.
The markup rules follow the WHATWG MIME Sniffing Standard (section 7.1, the patterns browsers
themselves use); the other signatures only label attachments, which are served the same way
whatever their label. Anything unrecognised is ``application/octet-stream``.
"""

from __future__ import annotations

SNIFF_BYTES = 8192
"""How much of the start of a file ``sniff`` looks at."""
OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain"
THUMBNAILED = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_ACTIVE_EXTENSIONS = frozenset(
    {
        "htm",
        "html",
        "xhtml",
        "shtml",
        "mht",
        "mhtml",
        "svg",
        "svgz",
        "xml",
        "xsl",
        "xslt",
        "js",
        "mjs",
        "cjs",
        "css",
        "swf",
        "hta",
        "php",
        "wasm",
    }
)
"""Names that make a browser treat plain text as something active: such text is an attachment."""

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),
    (b"\x1f\x8b\x08", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"OggS\x00", "application/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
    (b"\x1a\x45\xdf\xa3", "video/webm"),
    (b"wOFF", "font/woff"),
    (b"wOF2", "font/woff2"),
    (b"\x7fELF", "application/x-executable"),
    (b"MZ", "application/x-msdownload"),
)
_RIFF = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}
_FTYP = {
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
    b"avif": "image/avif",
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
}
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}
_BINARY_BYTES = frozenset([*range(0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)])
"""WHATWG "binary data bytes": no text has them (tab, LF, FF, CR and ESC are allowed)."""
_WHITESPACE = b"\t\n\x0c\r "
_HTML_TAGS = (
    b"<!doctype html",
    b"<html",
    b"<head",
    b"<script",
    b"<iframe",
    b"<h1",
    b"<div",
    b"<font",
    b"<table",
    b"<a",
    b"<style",
    b"<title",
    b"<b",
    b"<body",
    b"<br",
    b"<p",
)


def sniff(head: bytes, *, complete: bool = False) -> str:
    """The MIME type of a file whose first bytes are ``head`` (``SNIFF_BYTES`` of them, or the
    whole file when ``complete``)."""
    return _binary(head) or _text(head, complete) or OCTET_STREAM


def _binary(head: bytes) -> str | None:
    for magic, mime in _SIGNATURES:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[4:8] == b"ftyp":
        return _FTYP.get(head[8:12], "video/mp4")
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "image/bmp"
    return None


def _text(head: bytes, complete: bool) -> str | None:
    body = head.removeprefix(b"\xef\xbb\xbf")
    if not body or not _BINARY_BYTES.isdisjoint(body):
        return None
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the end of the window is still text.
        if complete or exc.reason != "unexpected end of data":
            return None
    return _markup(body) or TEXT


def _markup(body: bytes) -> str | None:
    start = body.lstrip(_WHITESPACE)[:64].lower()
    if start.startswith(b"<?xml"):
        return "image/svg+xml" if b"<svg" in body.lower() else "application/xml"
    if start.startswith(b"<svg"):
        return "image/svg+xml"
    if start.startswith(b"<!--"):
        return "text/html"
    for tag in _HTML_TAGS:
        if start.startswith(tag) and start[len(tag) : len(tag) + 1] in (b" ", b">"):
            return "text/html"
    return None


def is_image(mime: str) -> bool:
    """An image we thumbnail and show inline (PNG, JPEG, GIF, WebP)."""
    return mime in THUMBNAILED


def shown_inline(mime: str, name: str) -> bool:
    """Images and plain text are shown in the browser; everything else (HTML, SVG, scripts,
    unknown) is downloaded as an attachment. Text named like markup or a script is downloaded too:
    the name may only make serving stricter, never looser."""
    if is_image(mime):
        return True
    extension = name.rpartition(".")[2].lower() if "." in name else ""
    return mime == TEXT and extension not in _ACTIVE_EXTENSIONS


def served_type(mime: str) -> str:
    """The Content-Type to send: text is UTF-8 (``sniff`` says so only for valid UTF-8)."""
    return f"{mime}; charset=utf-8" if mime == TEXT else mime
