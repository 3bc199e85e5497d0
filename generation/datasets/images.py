"""One uploaded image, checked and cleaned: :func:`validate_image` -> :class:`CleanImage`.

An upload is untrusted bytes.  Before anything keeps it:

* its size is checked before it is parsed;
* its format is **sniffed from the bytes** (never from the file name): only PNG, JPEG and
  WebP pass; GIF, BMP, TIFF, HEIC… are named and refused, anything else is "not an image";
* its dimensions are read from the header and checked against ``max_pixels`` *before*
  the pixels are decoded, so a decompression bomb (a tiny file declaring 100 000 × 100 000
  pixels) costs nothing.  This is a local check: Pillow's global ``MAX_IMAGE_PIXELS`` is
  neither relied on nor changed (its own, larger limit can still fire first; that is
  reported the same way);
* **animated** PNG/WebP are refused rather than cut to their first frame — a training
  image is one picture, and silently dropping frames would train on something the user
  did not choose.  Multi-picture JPEGs (phone photos with a depth map or a preview, MPO)
  are not animations: their primary picture is used;
* it is decoded completely; a truncated or damaged file is refused (Pillow's
  ``LOAD_TRUNCATED_IMAGES`` must stay ``False``, its default: Brushwork never sets it);
* the EXIF orientation is applied (a portrait phone photo stays portrait); transparency
  is flattened onto white; 16-bit greyscale is scaled to 8 bits;
* it is **re-encoded to PNG** from the decoded pixels, which drops every metadata chunk,
  EXIF/GPS data, ICC profile and any payload appended to the file;
* ``sha256`` is taken over the decoded pixels (mode, size and bytes), so the same picture
  uploaded as PNG and as lossless WebP is recognised as a duplicate.

Pillow only: no torch, no network, no files written.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field

from PIL import Image, ImageOps

from generation.datasets.errors import DatasetError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
ALLOWED_LABEL = "PNG, JPEG, WebP"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MIN_SIDE = 64
_ANIMATABLE = ("PNG", "WEBP")  # JPEG "frames" (MPO) are depth maps and previews, not animation
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, struct.error,
                  zlib.error)

# Formats recognised only to be refused by name (magic bytes -> label).
_OTHER_IMAGES = (
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"qoif", "QOI"), (b"\x76\x2f\x31\x01", "OpenEXR"),
)
_ISO_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF",
               b"avif": "AVIF", b"avis": "AVIF"}
ARCHIVE_MAGIC = (
    (b"PK\x03\x04", "ZIP"), (b"PK\x05\x06", "ZIP"), (b"Rar!\x1a\x07", "RAR"), (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"),
)


@dataclass(frozen=True, slots=True)
class CleanImage:
    """A validated image: RGB pixels re-encoded as a metadata-free PNG.

    ``sha256`` identifies the pixels (not the file), for duplicate detection.
    ``source_format`` is what was uploaded (``PNG``, ``JPEG`` or ``WEBP``).
    """

    png: bytes = field(repr=False)
    width: int
    height: int
    sha256: str
    source_format: str
    source_bytes: int

    def to_pil(self) -> Image.Image:
        """The pixels as a decoded RGB PIL image (a new object on every call)."""
        with Image.open(io.BytesIO(self.png), formats=["PNG"]) as image:
            image.load()
            return image.convert("RGB")


def sniff_format(head: bytes) -> str | None:
    """The format the first bytes announce: ``PNG``/``JPEG``/``WEBP``, another label, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in _ISO_BRANDS:
        return _ISO_BRANDS[head[8:12]]
    for magic, label in (*_OTHER_IMAGES, *ARCHIVE_MAGIC):
        if head.startswith(magic):
            return label
    return None


def archive_kind(head: bytes) -> str | None:
    """``ZIP``, ``RAR``, ``7z``… when the bytes are an archive or a compressed stream."""
    return next((label for magic, label in ARCHIVE_MAGIC if head.startswith(magic)), None)


def megabytes(size: int) -> str:
    """A size for messages: ``20 MB``, ``0.3 MB`` (MiB, written MB as users read it)."""
    value = size / (1024 * 1024)
    return f"{value:.0f} MB" if value >= 10 else f"{value:.1f} MB"


def validate_image(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    name: str = "image",
) -> CleanImage:
    """Check, decode and re-encode one uploaded image (see the module docstring).

    ``name`` (the attachment's or archive member's name) goes into every message.
    Raises :class:`DatasetError` with one of the ``dataset.image_*`` codes, or
    ``dataset.not_an_image`` / ``dataset.nested_archive``.
    """
    size = len(data)
    if size > max_bytes:
        raise DatasetError("dataset.image_too_large", name=name, size=megabytes(size), limit=megabytes(max_bytes))
    if size == 0:
        raise DatasetError("dataset.image_empty", name=name)
    data = bytes(data)
    fmt = sniff_format(data[:32])
    if fmt not in ALLOWED_FORMATS:
        if archive_kind(data[:16]) is not None:
            raise DatasetError("dataset.nested_archive", name=name, kind=fmt)
        if fmt is not None:
            raise DatasetError("dataset.image_format", name=name, format=fmt, allowed=ALLOWED_LABEL)
        raise DatasetError("dataset.not_an_image", name=name, allowed=ALLOWED_LABEL)
    try:
        with warnings.catch_warnings():
            # damaged EXIF only loses the orientation: Pillow's warning about it is not printed
            warnings.filterwarnings("ignore", message="Corrupt EXIF", category=UserWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as opened:
                width, height = opened.size
                check_dimensions(name, width, height, max_pixels=max_pixels, min_side=min_side)
                frames: int = getattr(opened, "n_frames", 1) if fmt in _ANIMATABLE else 1
                if frames > 1:
                    raise DatasetError("dataset.image_animated", name=name, frames=frames)
                opened.load()
                image = _upright(opened)
                rgb = _to_rgb(image)
    except DatasetError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own (larger) limit fired while opening
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise DatasetError("dataset.image_too_many_pixels", name=name,
                           pixels=_megapixels(int(found.group(1))) if found else "?",
                           limit=_megapixels(max_pixels)) from None
    except _DECODE_ERRORS as exc:
        raise DatasetError("dataset.image_corrupt", name=name, format=fmt, detail=_detail(exc)) from None
    if rgb.size != (width, height):  # rotated by its EXIF orientation: the limits hold either way
        width, height = rgb.size
    pixels = rgb.tobytes()
    digest = hashlib.sha256(f"RGB {width}x{height}\n".encode("ascii"))
    digest.update(pixels)
    out = io.BytesIO()
    rgb.save(out, format="PNG")  # no pnginfo, no exif, no icc_profile: nothing but pixels
    return CleanImage(png=out.getvalue(), width=width, height=height, sha256=digest.hexdigest(),
                      source_format=fmt, source_bytes=size)


def check_dimensions(name: str, width: int, height: int, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                     min_side: int = DEFAULT_MIN_SIDE) -> None:
    """The size rule of every picture people give (uploads, start pictures, the Python API's)."""
    if width * height > max_pixels:
        raise DatasetError("dataset.image_too_many_pixels", name=name, pixels=f"{width}×{height}",
                           limit=_megapixels(max_pixels))
    if min(width, height) < min_side:
        raise DatasetError("dataset.image_too_small", name=name, width=width, height=height, min_side=min_side)


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; unreadable EXIF means "no orientation", as browsers treat it."""
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if mode.startswith("I;16") or mode == "I":  # 16-bit greyscale PNG: 0–65535 -> 0–255
        return image.point(lambda v: v / 257).convert("L").convert("RGB")
    return image.convert("RGB")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.1f}".rstrip("0").rstrip(".") + " MP"


def _detail(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
