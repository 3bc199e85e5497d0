"""``/history``: a user's own images, newest first, in pages that stay put while new ones arrive.

A page is addressed by an *anchor* (the public id of the newest image when the user opened
the list) and a page number: page ``p`` shows the images at or older than the anchor, from
``p × size`` on.  Both fit in a button's ``custom_id``, so the prev/next buttons need no
memory and survive restarts; images made after the anchor do not shift the pages (deleted
ones may shift them by one).  If the anchor itself is gone (deleted) the list starts again
from the newest image.

Scope: the images the caller made in *this* server (or, in direct messages, their direct
messages' images) — never another server's, whatever a ``custom_id`` says.

Each page comes with a contact strip (:meth:`HistoryService.strip`): its images side by side,
small, numbered as in the list — so a user finds an image by eye, not by its prompt.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from storage.errors import NotFound, UnsafePath
from storage.files import ImageStore
from storage.ids import is_public_id
from storage.records import ImageRecord, Scope
from storage.unit_of_work import UnitOfWork

PAGE_SIZE = 5
MAX_PAGE = 10_000
THUMB = 192  # the longest side of a thumbnail in the strip, pixels
MISSING = (64, 64, 72)  # the tile of an image whose file is gone


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: tuple[ImageRecord, ...]
    anchor: str | None  # None: the user has no images here
    page: int
    has_next: bool
    size: int = PAGE_SIZE
    restarted: bool = False  # the requested anchor was gone: this is the first page again

    @property
    def has_prev(self) -> bool:
        return self.page > 0

    @property
    def first_number(self) -> int:
        """The 1-based position of the first entry in the whole list."""
        return self.page * self.size + 1


def message_link(record: ImageRecord) -> str | None:
    """``https://discord.com/channels/<guild or @me>/<channel>/<message>`` when the image's message is known."""
    if record.message_id is None or record.channel_id is None:
        return None
    where = "@me" if record.guild_id is None else str(record.guild_id)
    return f"https://discord.com/channels/{where}/{record.channel_id}/{record.message_id}"


class HistoryService:
    def __init__(self, uow_factory: Callable[[], UnitOfWork], store: ImageStore | None = None) -> None:
        self._uow = uow_factory
        self._store = store

    def strip(self, page: HistoryPage, *, thumb: int = THUMB) -> bytes | None:
        """The page's images side by side, each labelled with its number in the list, as a
        JPEG (small enough for any upload limit); ``None`` for an empty page or without a store.
        A file that is gone shows as a dark tile: the list still says which image it was."""
        if not page.entries or self._store is None:
            return None
        from PIL import Image, ImageOps

        from generation.grid import labelled_grid

        tiles = []
        for record in page.entries:
            try:
                with Image.open(self._store.absolute(record.file_path)) as source:
                    if max(source.size) > thumb:  # shrink while decoding (reducing_gap): fast on 2048² PNGs
                        source.thumbnail((thumb, thumb), Image.Resampling.LANCZOS, reducing_gap=2.0)
                    tile = ImageOps.contain(source.convert("RGB"), (thumb, thumb), Image.Resampling.LANCZOS)
            except (OSError, ValueError, UnsafePath, Image.DecompressionBombError):
                tile = Image.new("RGB", (thumb, thumb), MISSING)
            tiles.append(tile)
        labels = [f"{page.first_number + index}. {record.public_id}" for index, record in enumerate(page.entries)]
        grid = labelled_grid([tiles], column_labels=labels)
        out = io.BytesIO()
        grid.save(out, format="JPEG", quality=85, optimize=True)
        return out.getvalue()

    def page(self, scope: Scope, *, anchor: str | None = None, page: int = 0, size: int = PAGE_SIZE) -> HistoryPage:
        """Page ``page`` of the caller's images in ``scope`` (their own only), anchored at ``anchor``."""
        page = max(0, min(int(page), MAX_PAGE))
        with self._uow() as uow:
            if anchor is not None:
                try:
                    if not is_public_id(anchor):
                        raise NotFound("image", anchor)
                    top = uow.images.get(anchor, scope)
                    if top.owner_id != scope.user_id or top.deleted:
                        raise NotFound("image", anchor)
                    older = uow.images.history(scope, user_id=scope.user_id, before=anchor,
                                               offset=max(0, page * size - 1), limit=size + 1)
                except NotFound:
                    return self._first(uow, scope, size, restarted=True)
                rows = ([top] + older) if page == 0 else older
                return HistoryPage(entries=tuple(rows[:size]), anchor=anchor, page=page, has_next=len(rows) > size,
                                   size=size)
            return self._first(uow, scope, size)

    @staticmethod
    def _first(uow: UnitOfWork, scope: Scope, size: int, *, restarted: bool = False) -> HistoryPage:
        rows = uow.images.history(scope, user_id=scope.user_id, limit=size + 1)
        return HistoryPage(entries=tuple(rows[:size]), anchor=rows[0].public_id if rows else None, page=0,
                           has_next=len(rows) > size, size=size, restarted=restarted)


__all__ = ["PAGE_SIZE", "HistoryPage", "HistoryService", "message_link"]
