"""The one place that chooses the face for text drawn into pictures (grids, contact sheets).

Labels, titles and captions are whatever people type, in any script, so the face must cover
CJK as well as Latin.  Pillow's built-in font has no CJK glyphs (every Chinese character
comes out as the same empty box), so Brushwork ships one that does: WenQuanYi Micro Hei
(``wqy-microhei.ttc``, ~5 MB, all CJK Unified Ideographs, kana, Hangul, Latin, Greek and
Cyrillic; Apache-2.0, see ``LICENSE.txt`` beside it).

Lookup order, first found wins: a path the caller passes → ``$BRUSHWORK_FONT`` (the
operator's choice) → the shipped font → common system fonts → Pillow's built-in font.
Paths are checked on every call (cheap ``stat``\\ s), so a changed setting applies at once;
loaded faces are cached by path and size.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from PIL import ImageFont

FONT_ENV = "BRUSHWORK_FONT"  # a font file (TTF/OTF/TTC) to use instead of the shipped one
SHIPPED_FONT = Path(__file__).with_name("wqy-microhei.ttc")
#: Used only if the shipped file was removed (e.g. a distribution package that depends on its
#: own font package instead): CJK faces first (Linux packages, macOS, Windows), then Latin ones.
SYSTEM_FONTS: tuple[str, ...] = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/wenquanyi/wqy-microhei/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/arial.ttf",
)

Face = ImageFont.FreeTypeFont | ImageFont.ImageFont


def font_candidates(path: str | os.PathLike[str] | None = None) -> list[str]:
    """The font files to try, in order (see the module docstring)."""
    chosen = [str(path)] if path else []
    configured = os.environ.get(FONT_ENV)
    if configured:
        chosen.append(configured)
    return [*chosen, str(SHIPPED_FONT), *SYSTEM_FONTS]


def font(size: int, path: str | os.PathLike[str] | None = None) -> Face:
    """A face of ``size`` pixels from the first readable candidate, else Pillow's own font."""
    for candidate in font_candidates(path):
        if Path(candidate).is_file():
            face = _load(candidate, size)
            if face is not None:
                return face
    return _builtin(size)


@cache
def _load(path: str, size: int) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(path, size)
    except OSError:  # unreadable, not a font, or Pillow without FreeType: try the next one
        return None


@cache
def _builtin(size: int) -> Face:
    try:
        return ImageFont.load_default(size)
    except (OSError, TypeError, ImportError):  # very old Pillow or no FreeType: the bitmap font
        return ImageFont.load_default()


__all__ = ["FONT_ENV", "SHIPPED_FONT", "SYSTEM_FONTS", "Face", "font", "font_candidates"]
