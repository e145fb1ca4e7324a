"""Image facts and thumbnails with Pillow, off the event loop.

``describe`` is blocking and pure CPU + reading: the ``Thumbnailer`` runs it in worker processes
(see there why not threads). Safety, for images from anyone:
- the pixel count is checked from the header, before anything is decoded (``max_pixels``; Pillow's
  own ``Image.MAX_IMAGE_PIXELS`` is set to the same limit in the workers, so its check at open
  agrees); a decompression bomb gets no thumbnail, not a 500;
- JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still covers the largest thumbnail
  (``draft``), which makes a 12-megapixel photo cheap;
- the EXIF orientation is applied, the thumbnail carries no metadata (no GPS position);
- any failure (truncated file, corrupt data, an unknown mode) gives the file without thumbnails
  and a reason, never an exception: a thumbnail failure never loses the file.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import IO, Any

from PIL import Image, ImageOps, UnidentifiedImageError

SIZES = (360, 1024)
DEFAULT_MAX_PIXELS = 50_000_000
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Thumb:
    px: int
    data: bytes
    width: int
    height: int
    mime: str


@dataclass(frozen=True)
class ImageFacts:
    """Width and height as displayed (EXIF orientation applied); thumbnails, or why there are none."""

    width: int | None = None
    height: int | None = None
    thumbnails: list[Thumb] = field(default_factory=list)
    error: str | None = None


def describe(source: IO[bytes], *, sizes: Sequence[int] = SIZES, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageFacts:
    """The image's facts and thumbnails (blocking)."""
    try:
        image = Image.open(source)  # reads the header only
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        return ImageFacts(error=f"not a readable image: {_reason(exc)}")
    width, height = image.size
    if width * height > max_pixels:
        return ImageFacts(width, height, error=f"{width}x{height} is more than {max_pixels:,} pixels")
    try:
        width, height = _displayed_size(image)  # a PNG's EXIF may come after its pixels: this can decode
        return ImageFacts(width, height, _thumbnails(image, sorted(sizes)))
    except Exception as exc:  # noqa: BLE001 - whatever Pillow raises on bad data, the file is kept
        return ImageFacts(width, height, error=f"no thumbnail: {_reason(exc)}")


def _displayed_size(image: Image.Image) -> tuple[int, int]:
    orientation = image.getexif().get(_ORIENTATION)
    return (image.height, image.width) if orientation in _ROTATED else (image.width, image.height)


def _thumbnails(image: Image.Image, sizes: list[int]) -> list[Thumb]:
    image.draft("RGB", (sizes[-1], sizes[-1]))  # JPEG: decode at a reduced scale that still covers it
    image = _plain(ImageOps.exif_transpose(image))
    made: list[Thumb] = []
    for px, smaller in reversed(list(zip(sizes, [0, *sizes[:-1]], strict=True))):  # largest first
        if max(image.size) <= smaller:
            continue  # the image fits the smaller box: that thumbnail is all it needs
        image.thumbnail((px, px), Image.Resampling.LANCZOS, reducing_gap=3.0)
        made.append(_encoded(image, px))
    return made[::-1]


def _plain(image: Image.Image) -> Image.Image:
    """RGB, or RGBA when the image has transparency (first frame of an animation)."""
    alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    wanted = "RGBA" if alpha else "RGB"
    return image if image.mode == wanted else image.convert(wanted)


def _encoded(image: Image.Image, px: int) -> Thumb:
    out = io.BytesIO()
    if image.mode == "RGBA":
        image.save(out, "WEBP", quality=80, method=4)
        mime = "image/webp"
    else:
        image.save(out, "JPEG", quality=82)
        mime = "image/jpeg"
    return Thumb(px, out.getvalue(), image.width, image.height, mime)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _init_worker(max_pixels: int) -> None:
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own check at open agrees with describe()'s


def _describe_blob(source: Any, sizes: Sequence[int], max_pixels: int) -> ImageFacts:
    try:
        with source.open() as handle:
            return describe(handle, sizes=sizes, max_pixels=max_pixels)
    except OSError as exc:
        return ImageFacts(error=f"could not read the file: {_reason(exc)}")


class Thumbnailer:
    """Runs ``describe`` in ``workers`` processes of its own, started on first use ("spawn": the
    server has threads, so no fork). Untrusted images are decoded outside the server process: a
    decoder that crashes or balloons takes a worker down, not the server, and the event loop never
    competes with the decoder for the GIL (with 2 cores, one worker leaves the other to it). The
    image is read by the worker itself (``source.open()``, a picklable ``BlobSource``); only the
    thumbnails travel back."""

    def __init__(self, workers: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS, sizes: Sequence[int] = SIZES) -> None:
        self.workers = workers
        self.max_pixels = max_pixels
        self.sizes = tuple(sizes)
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.max_pixels,),
            )
        return self._pool

    async def describe(self, source: Any) -> ImageFacts:
        """Facts and thumbnails of the image ``source.open()`` opens (a blocking binary file)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), _describe_blob, source, self.sizes, self.max_pixels)
        except BrokenProcessPool as exc:
            self._pool = None  # the next image gets a fresh worker
            return ImageFacts(error=f"the image decoder crashed: {_reason(exc)}")

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
