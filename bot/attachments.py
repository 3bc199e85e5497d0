"""Fitting result images into Discord's upload limits without ever dropping one.

Discord refuses a file above the channel's ``filesize_limit`` (10 MiB by default, more in
boosted servers) and more than 10 attachments per message.  The original PNG — the one that
carries the recipe — is uploaded whenever it fits; otherwise the image is re-encoded (high
quality WebP, then JPEG at falling quality, then halved in size) until it does, and the
message says which images were re-encoded so users know the full PNG is in `/info`/history.
A re-encoded copy keeps the recipe's A1111 text in its EXIF ``UserComment`` (where A1111
writes it for JPEG and WebP), so `brushwork show` and A1111's PNG Info still read it.
Files are spread over as many messages as needed, at most 10 per message and within the
total request size Discord accepts.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from generation.metadata import recipe_exif

MAX_FILES_PER_MESSAGE = 10
REQUEST_OVERHEAD = 64 * 1024  # multipart framing and the JSON payload
JPEG_EXIF_LIMIT = 65_533  # one APP1 segment; a recipe is far below it (prompts are ≤ 4000 characters)


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str
    data: bytes
    original: bool  # the PNG with its recipe, byte for byte

    @property
    def size(self) -> int:
        return len(self.data)


def fit_image(filename: str, png: bytes, limit: int) -> Upload:
    """The PNG if it fits ``limit`` bytes, else the best re-encoding that does."""
    if len(png) <= limit:
        return Upload(filename, png, original=True)
    stem = filename.rsplit(".", 1)[0]
    exif = recipe_exif(png) or b""
    with Image.open(io.BytesIO(png)) as source:
        image = source.convert("RGB")
    attempts = [("WEBP", {"quality": 95, "method": 4}), ("JPEG", {"quality": 92, "optimize": True}),
                ("JPEG", {"quality": 85, "optimize": True}), ("JPEG", {"quality": 75, "optimize": True})]
    while True:
        for fmt, options in attempts:
            buffer = io.BytesIO()
            fits = fmt == "WEBP" or len(exif) <= JPEG_EXIF_LIMIT
            image.save(buffer, format=fmt, exif=exif if fits else b"", **options)
            if buffer.tell() <= limit:
                extension = "webp" if fmt == "WEBP" else "jpg"
                return Upload(f"{stem}.{extension}", buffer.getvalue(), original=False)
        if min(image.size) <= 64:
            raise ValueError(f"cannot fit {filename} into {limit} bytes")
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.LANCZOS)


def plan_messages(uploads: list[Upload], limit: int) -> list[list[Upload]]:
    """Group uploads into messages: ≤ 10 files each and a total Discord will accept."""
    total_limit = max(limit, 25 * 1024 * 1024)  # Discord's request cap is at least 25 MiB
    messages: list[list[Upload]] = []
    current: list[Upload] = []
    size = REQUEST_OVERHEAD
    for upload in uploads:
        if current and (len(current) == MAX_FILES_PER_MESSAGE or size + upload.size > total_limit):
            messages.append(current)
            current, size = [], REQUEST_OVERHEAD
        current.append(upload)
        size += upload.size
    if current:
        messages.append(current)
    return messages


def prepare(images: list[tuple[str, bytes]], limit: int) -> list[list[Upload]]:
    """Every image, fitted and grouped into messages."""
    return plan_messages([fit_image(name, data, limit) for name, data in images], limit)
