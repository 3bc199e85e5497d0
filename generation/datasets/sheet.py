"""A contact sheet of a dataset: numbered thumbnails with their captions, one PIL image."""

from __future__ import annotations

import os
from collections.abc import Sequence

from PIL import Image, ImageDraw

from generation.fonts import font as _font

_PAD = 6
_BACKGROUND = (245, 245, 245)
_TEXT = (30, 30, 30)
_MUTED = (120, 120, 120)


def contact_sheet(
    items: Sequence[tuple[Image.Image, str | None]],
    *,
    columns: int = 5,
    thumb: int = 160,
    caption_lines: int = 3,
    font_path: str | os.PathLike[str] | None = None,
) -> Image.Image:
    """A grid of ``thumb``×``thumb`` cells, each image fitted inside (aspect kept) above
    its number and up to ``caption_lines`` lines of caption (cut with ``…``).

    Fonts: ``font_path`` if given, else :func:`generation.fonts.font`'s order
    (``$BRUSHWORK_FONT``, the shipped CJK-capable face, system fonts, Pillow's own), so
    Chinese captions read as words.  Should Pillow lack FreeType, its bitmap font shows the
    characters it cannot encode as ``?`` instead of crashing the sheet.
    """
    if not items:
        raise ValueError("contact_sheet needs at least one image")
    if columns < 1 or thumb < 32 or caption_lines < 0:
        raise ValueError("columns must be ≥ 1, thumb ≥ 32 and caption_lines ≥ 0")
    font_size = max(10, thumb // 12)
    font = _font(font_size, font_path)
    line_height = font_size + 4
    cell_w = thumb + 2 * _PAD
    cell_h = thumb + 2 * _PAD + line_height * (1 + caption_lines)
    columns = min(columns, len(items))
    rows = -(-len(items) // columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, (image, caption) in enumerate(items):
        x0 = (index % columns) * cell_w + _PAD
        y0 = (index // columns) * cell_h + _PAD
        small = image.convert("RGB")
        small.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
        sheet.paste(small, (x0 + (thumb - small.width) // 2, y0 + (thumb - small.height) // 2))
        y = y0 + thumb + 2
        _text(draw, (x0, y), f"#{index + 1}", font, _MUTED)
        for line in _wrap(draw, caption or "", font, thumb, caption_lines):
            y += line_height
            _text(draw, (x0, y), line, font, _TEXT)
    return sheet


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font, fill) -> None:
    try:
        draw.text(xy, text, font=font, fill=fill)
    except UnicodeEncodeError:  # the bitmap font knows Latin-1 only
        draw.text(xy, text.encode("latin-1", "replace").decode("latin-1"), font=font, fill=fill)


def _width(draw: ImageDraw.ImageDraw, text: str, font) -> float:
    try:
        return draw.textlength(text, font=font)
    except UnicodeEncodeError:
        return draw.textlength(text.encode("latin-1", "replace").decode("latin-1"), font=font)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int, lines: int) -> list[str]:
    """Greedy wrapping that breaks after spaces when it can and anywhere otherwise (CJK has no spaces)."""
    if lines <= 0 or not text:
        return []
    out: list[str] = []
    rest = text
    while rest and len(out) < lines:
        end = len(rest)
        while end > 1 and _width(draw, rest[:end], font) > width:
            end -= 1
        if end < len(rest):
            space = rest.rfind(" ", 0, end + 1)
            if space > 0:
                end = space
        out.append(rest[:end].rstrip())
        rest = rest[end:].lstrip()
    if rest and out:
        last = out[-1]
        while last and _width(draw, last + "…", font) > width:
            last = last[:-1]
        out[-1] = last + "…"
    return out
