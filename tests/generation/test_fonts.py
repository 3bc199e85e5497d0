"""Text in pictures (grids, contact sheets) reads in Chinese on a machine without any CJK font.

Pillow's built-in font has no CJK glyphs: it draws each missing character as the same empty
box ("tofu").  So the proof that a label is readable is that its characters come out as
different, non-empty glyphs.  System font lookup is pointed at an empty folder, so a CJK font
installed here cannot make the tests pass: only the one Brushwork ships can.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generation import fonts
from generation.datasets import contact_sheet
from generation.grid import labelled_grid

CHARACTERS = "一只猫"


@pytest.fixture(autouse=True)
def no_system_fonts(tmp_path, monkeypatch):
    empty = tmp_path / "no-fonts"
    empty.mkdir()
    monkeypatch.setattr(fonts, "SYSTEM_FONTS", tuple(str(empty / name) for name in ("NotoSansCJK-Regular.ttc",
                                                                                    "DejaVuSans.ttf")))
    monkeypatch.delenv(fonts.FONT_ENV, raising=False)


def _ink(image: Image.Image) -> np.ndarray:
    """Where dark text was drawn, as a boolean mask trimmed to its bounding box."""
    dark = np.asarray(image.convert("L")) < 128
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    if not len(rows):
        return dark[:0, :0]
    return dark[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _assert_distinct_glyphs(glyphs: list[np.ndarray]) -> None:
    assert all(glyph.sum() > 20 for glyph in glyphs), "a character drew nothing"
    for i in range(len(glyphs)):
        for j in range(i + 1, len(glyphs)):
            same = glyphs[i].shape == glyphs[j].shape and np.array_equal(glyphs[i], glyphs[j])
            assert not same, f"{CHARACTERS[i]} and {CHARACTERS[j]} drew the same box: no CJK glyphs"


WHITE = (255, 255, 255)


def test_grid_labels_in_chinese_are_real_glyphs_not_boxes():
    cell = Image.new("RGB", (448, 32), WHITE)  # wide cells: 32 px labels
    glyphs = []
    for character in CHARACTERS:
        grid = labelled_grid([[cell]], column_labels=[character])
        glyphs.append(_ink(grid.crop((0, 0, grid.width, grid.height - 32 - 2 * 4))))  # the label band
    _assert_distinct_glyphs(glyphs)


def test_grid_title_in_chinese_is_real_glyphs():
    cell = Image.new("RGB", (448, 32), WHITE)
    glyphs = [_ink(labelled_grid([[cell]], column_labels=[""], title=c).crop((0, 0, 456, 48))) for c in CHARACTERS]
    _assert_distinct_glyphs(glyphs)


def test_contact_sheet_captions_in_chinese_are_real_glyphs():
    picture = Image.new("RGB", (384, 384), (245, 245, 245))
    line = 384 // 12 + 4
    glyphs = []
    for character in CHARACTERS:
        sheet = contact_sheet([(picture, character)], columns=1, thumb=384, caption_lines=1)
        glyphs.append(_ink(sheet.crop((0, sheet.height - 6 - line, sheet.width, sheet.height))))  # the caption line
    _assert_distinct_glyphs(glyphs)


def test_lookup_order_operator_font_then_shipped_then_system(tmp_path, monkeypatch):
    mine = tmp_path / "mine.ttf"
    monkeypatch.setenv(fonts.FONT_ENV, str(tmp_path / "from-env.ttf"))
    assert fonts.font_candidates(mine) == [str(mine), str(tmp_path / "from-env.ttf"), str(fonts.SHIPPED_FONT),
                                           *fonts.SYSTEM_FONTS]
    monkeypatch.delenv(fonts.FONT_ENV)
    assert fonts.font_candidates() == [str(fonts.SHIPPED_FONT), *fonts.SYSTEM_FONTS]


def test_an_operator_font_is_used_and_a_missing_one_is_skipped(tmp_path, monkeypatch):
    copy = tmp_path / "operator.ttc"
    copy.write_bytes(fonts.SHIPPED_FONT.read_bytes())
    monkeypatch.setenv(fonts.FONT_ENV, str(copy))
    assert getattr(fonts.font(20), "path", None) == str(copy)
    monkeypatch.setenv(fonts.FONT_ENV, str(tmp_path / "gone.ttf"))
    assert getattr(fonts.font(20), "path", None) == str(fonts.SHIPPED_FONT)


def test_without_any_font_file_pillows_own_font_still_draws(monkeypatch, tmp_path):
    monkeypatch.setattr(fonts, "SHIPPED_FONT", tmp_path / "stripped-by-a-packager.ttc")
    face = fonts.font(16)
    assert face is not None
    grid = labelled_grid([[Image.new("RGB", (64, 64), WHITE)]], column_labels=["cfg 7"])
    assert _ink(grid.crop((0, 0, 64 + 8, 24))).sum() > 0


def test_the_shipped_font_is_package_data():
    import tomllib
    from pathlib import Path

    assert fonts.SHIPPED_FONT.is_file() and (fonts.SHIPPED_FONT.parent / "LICENSE.txt").is_file()
    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]["package-data"]
    shipped = {path for pattern in patterns["generation"] for path in (root / "generation").glob(pattern)}
    assert {fonts.SHIPPED_FONT, fonts.SHIPPED_FONT.parent / "LICENSE.txt"} <= shipped
