"""Labelled image grids (``/compare``'s X/Y plots, contact sheets).

Text is drawn with :func:`generation.fonts.font` (the shipped CJK-capable face unless the
operator chose another), so Chinese labels read as words, not boxes.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from generation.fonts import Face, font


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, size: int) -> tuple[str, Face]:
    """The label shortened with … until it fits ``width`` pixels."""
    face = font(size)
    if draw.textlength(text, font=face) <= width:
        return text, face
    while text and draw.textlength(text + "…", font=face) > width:
        text = text[:-1]
    return text + "…", face


def labelled_grid(
    rows: list[list[Image.Image]],
    *,
    column_labels: list[str],
    row_labels: list[str] | None = None,
    title: str | None = None,
    gap: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Images in rows and columns, with a label over each column (and left of each row)."""
    if not rows or not rows[0]:
        raise ValueError("a grid needs at least one image")
    columns = len(rows[0])
    if len(column_labels) != columns or any(len(r) != columns for r in rows):
        raise ValueError("every row needs one image per column label")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError("one row label per row")
    cell_w = max(img.width for row in rows for img in row)
    cell_h = max(img.height for row in rows for img in row)
    text_size = max(12, min(32, cell_w // 14))
    line = int(text_size * 1.5)
    left = 0
    if row_labels:
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        left = min(cell_w, int(max(probe.textlength(label, font=font(text_size))
                                   for label in row_labels)) + 2 * gap)
    top = line + (line if title else 0)
    width = left + columns * cell_w + (columns + 1) * gap
    height = top + len(rows) * cell_h + (len(rows) + 1) * gap
    canvas = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(canvas)
    if title:
        text, face = _fit(draw, title, width - 2 * gap, text_size)
        draw.text((gap, gap // 2), text, fill=(0, 0, 0), font=face)
    label_y = top - line + (line - text_size) // 2
    for c, label in enumerate(column_labels):
        x = left + gap + c * (cell_w + gap)
        text, face = _fit(draw, label, cell_w, text_size)
        offset = (cell_w - draw.textlength(text, font=face)) // 2
        draw.text((x + offset, label_y), text, fill=(0, 0, 0), font=face)
    for r, row in enumerate(rows):
        y = top + gap + r * (cell_h + gap)
        if row_labels:
            text, face = _fit(draw, row_labels[r], left - 2 * gap, text_size)
            draw.text((gap, y + (cell_h - text_size) // 2), text, fill=(0, 0, 0), font=face)
        for c, image in enumerate(row):
            x = left + gap + c * (cell_w + gap)
            canvas.paste(image.convert("RGB"), (x + (cell_w - image.width) // 2, y + (cell_h - image.height) // 2))
    return canvas
