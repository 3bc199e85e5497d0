"""Training datasets: uploads checked before they are trusted (Pillow only, no torch, no I/O).

* :mod:`~generation.datasets.images` — :func:`validate_image` -> :class:`CleanImage`
  (format sniffed, bomb-checked, fully decoded, EXIF-oriented, re-encoded to a bare PNG);
* :mod:`~generation.datasets.archive` — :func:`read_zip` -> :class:`ZipMember` list
  (member by member under :class:`ZipLimits`; images paired with kohya-style ``.txt`` captions),
  :func:`iter_zip` (the same, one member in memory at a time) and :func:`plan_zip` (what an
  archive holds, from its central directory: quotas are checked before anything is decoded);
* :mod:`~generation.datasets.sheet` — :func:`contact_sheet` (numbered thumbnails and captions);
* :mod:`~generation.datasets.errors` — :class:`DatasetError`: every refusal, with its code.

Nothing here knows Discord or the database: the bot downloads, storage keeps the files,
and both hand bytes to these functions.
"""

from __future__ import annotations

from generation.datasets.archive import (
    ZipLimits,
    ZipMember,
    ZipPlan,
    clean_caption,
    iter_zip,
    plan_zip,
    read_zip,
)
from generation.datasets.errors import DatasetError
from generation.datasets.images import ALLOWED_FORMATS, CleanImage, sniff_format, validate_image
from generation.datasets.sheet import contact_sheet

__all__ = [
    "ALLOWED_FORMATS", "CleanImage", "DatasetError", "ZipLimits", "ZipMember", "ZipPlan", "clean_caption",
    "contact_sheet", "iter_zip", "plan_zip", "read_zip", "sniff_format", "validate_image",
]
