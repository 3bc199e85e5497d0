"""Dataset uploads: a corpus of bad uploads, each refused with its code and the member's name.

Every file here is built in the test (bombs included): nothing is downloaded, nothing is
written outside pytest's temporary folders.
"""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFont, PngImagePlugin

from generation.datasets import (
    CleanImage,
    DatasetError,
    ZipLimits,
    ZipMember,
    contact_sheet,
    read_zip,
    validate_image,
)
from generation.datasets.archive import declared_entry_count
from generation.datasets.sheet import _text
from generation.i18n import translate

# ---------------------------------------------------------------------- builders


def picture(seed: int = 0, size: tuple[int, int] = (64, 64), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(pixels if channels > 1 else pixels[..., 0], mode)


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def png(seed: int = 0, size: tuple[int, int] = (64, 64)) -> bytes:
    return encoded(picture(seed, size))


def make_zip(members: list[tuple[str | zipfile.ZipInfo, bytes]], *,
             compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG header declaring a huge image, with a few bytes of data: a bomb."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def refused(call, code: str, *names: str) -> DatasetError:
    """Assert ``call()`` raises ``code`` and that both languages' messages name every ``names``."""
    with pytest.raises(DatasetError) as error:
        call()
    assert error.value.code == code, error.value.message()
    for locale in ("en", "zh-CN"):
        message = error.value.message(locale)
        assert "{" not in message, message  # every field was filled
        for name in names:
            assert name in message, (locale, message)
    return error.value


# ---------------------------------------------------------------------- single images


def test_a_good_image_is_re_encoded_without_metadata_or_payload():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "secret prompt")
    data = encoded(picture(1), "PNG", pnginfo=info) + b"MZ appended payload"
    clean = validate_image(data, name="cat.png")
    assert isinstance(clean, CleanImage)
    assert (clean.width, clean.height, clean.source_format) == (64, 64, "PNG")
    assert b"secret prompt" not in clean.png and b"payload" not in clean.png
    reopened = Image.open(io.BytesIO(clean.png))
    assert reopened.format == "PNG" and "parameters" not in reopened.info
    assert np.array_equal(np.asarray(clean.to_pil()), np.asarray(picture(1)))


def test_same_pixels_in_another_format_have_the_same_hash():
    lossless = encoded(picture(2), "WEBP", lossless=True)
    assert validate_image(png(2)).sha256 == validate_image(lossless).sha256
    assert validate_image(png(2)).sha256 != validate_image(png(3)).sha256


def test_exif_orientation_is_applied_and_transparency_flattened():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    upright = validate_image(encoded(picture(4, (96, 64)), "JPEG", exif=exif))
    assert (upright.width, upright.height) == (64, 96)
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    flat = validate_image(encoded(rgba)).to_pil()
    assert flat.mode == "RGB" and flat.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    grey = Image.new("I;16", (64, 64), 32896)  # mid-grey in 16 bits
    pixel = validate_image(encoded(grey)).to_pil().getpixel((0, 0))
    assert pixel == (128, 128, 128)


@pytest.mark.parametrize(("label", "data", "code"), [
    ("gif", encoded(picture(5), "GIF"), "dataset.image_format"),
    ("bmp", encoded(picture(5), "BMP"), "dataset.image_format"),
    ("tiff", encoded(picture(5), "TIFF"), "dataset.image_format"),
    ("exe", b"MZ\x90\x00" + bytes(200), "dataset.not_an_image"),
    ("text", b"just some text pretending to be a picture", "dataset.not_an_image"),
    ("zip", make_zip([("a.txt", b"x")]), "dataset.nested_archive"),
    ("empty", b"", "dataset.image_empty"),
    ("truncated-png", png(6)[:600], "dataset.image_corrupt"),
    ("truncated-jpeg", encoded(picture(6), "JPEG")[:700], "dataset.image_corrupt"),
    ("truncated-webp", encoded(picture(6), "WEBP")[:300], "dataset.image_corrupt"),
    ("bomb", png_declaring(100_000, 100_000), "dataset.image_too_many_pixels"),
    ("big-bomb", png_declaring(9_000, 9_000), "dataset.image_too_many_pixels"),
    ("tiny", png(7, (32, 32)), "dataset.image_too_small"),
])
def test_bad_single_images_are_refused_with_their_reason(label, data, code):
    refused(lambda: validate_image(data, name=f"{label}.png"), code, f"{label}.png")


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    decoded = []
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: decoded.append(1))
    refused(lambda: validate_image(png_declaring(20_000, 20_000), name="bomb.png"),
            "dataset.image_too_many_pixels", "bomb.png")
    assert decoded == []
    assert Image.MAX_IMAGE_PIXELS == 89478485  # Pillow's global limit is neither relied on nor changed


def test_animated_images_are_refused_not_cut_to_a_frame():
    frames = [picture(8), picture(9)]
    for fmt in ("PNG", "WEBP"):
        data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:])
        error = refused(lambda d=data: validate_image(d, name="anim.png"), "dataset.image_animated", "anim.png")
        assert error.params["frames"] == 2


def test_image_size_limit_is_checked_before_anything_else():
    refused(lambda: validate_image(png(1), max_bytes=100, name="big.png"), "dataset.image_too_large", "big.png")


# ---------------------------------------------------------------------- archives: good


def test_a_kohya_style_zip_pairs_images_with_captions_by_stem():
    data = make_zip([
        ("ink/10.png", png(10)), ("ink/10.txt", b"  an ink  wash\npainting "),
        ("ink/2.JPG", encoded(picture(2), "JPEG")), ("ink/2.TXT", "\ufeff水墨 山水".encode()),
        ("ink/", b""), ("__MACOSX/ink/._10.png", b"junk"), ("ink/.DS_Store", b"junk"),
        ("ink/3.webp", encoded(picture(3), "WEBP")), ("ink/3.txt", b""),
        ("windows\\4.png", png(4)),
    ])
    members = read_zip(data)
    assert [m.stem for m in members] == ["2", "3", "4", "10"]  # natural order
    assert all(isinstance(m, ZipMember) for m in members)
    assert [m.caption for m in members] == ["水墨 山水", None, None, "an ink wash painting"]
    assert members[0].name == "ink/2.JPG" and members[0].image.source_format == "JPEG"


def test_zip_from_a_path_and_a_file_object(tmp_path):
    data = make_zip([("a.png", png(1)), ("a.txt", b"caption")])
    path = tmp_path / "set.zip"
    path.write_bytes(data)
    assert read_zip(path)[0].caption == "caption"
    assert read_zip(io.BytesIO(data))[0].stem == "a"


# ---------------------------------------------------------------------- archives: the bad-upload corpus


def zipinfo(name: str, *, mode: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    if mode is not None:
        info.create_system = 3
        info.external_attr = mode << 16
    return info


def with_flag_bit(data: bytes, bit: int) -> bytes:
    """Set a general-purpose flag bit in every local header and central directory entry."""
    raw = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        while at >= 0:
            flags = struct.unpack_from("<H", raw, at + offset)[0]
            struct.pack_into("<H", raw, at + offset, flags | bit)
            at = raw.find(signature, at + 4)
    return bytes(raw)


def with_declared_size(data: bytes, name: bytes, size: int) -> bytes:
    """Make the central directory lie about a member's uncompressed size."""
    raw = bytearray(data)
    at = raw.find(b"PK\x01\x02")
    while at >= 0:
        name_length = struct.unpack_from("<H", raw, at + 28)[0]
        if bytes(raw[at + 46:at + 46 + name_length]) == name:
            struct.pack_into("<I", raw, at + 24, size)
        at = raw.find(b"PK\x01\x02", at + 4)
    return bytes(raw)


def with_declared_count(data: bytes, count: int) -> bytes:
    raw = bytearray(data)
    at = raw.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", raw, at + 8, count, count)
    return bytes(raw)


GOOD = ("good.png", png(0))
SMALL = ZipLimits(max_member_bytes=64 * 1024, max_archive_bytes=256 * 1024, max_total_bytes=200 * 1024,
                  max_entries=20, max_images=3, max_caption_chars=50)

CORPUS = [
    # (label, archive bytes, limits, code, names the message must contain)
    ("not-a-zip", b"PK\x03\x04 definitely not a zip archive", None, "dataset.zip_invalid", ()),
    ("traversal", make_zip([GOOD, ("../evil.png", png(1))]), None, "dataset.zip_unsafe_name", ("../evil.png",)),
    ("absolute", make_zip([GOOD, ("/etc/evil.png", png(1))]), None, "dataset.zip_unsafe_name", ("/etc/evil.png",)),
    ("backslash-traversal", make_zip([GOOD, ("..\\..\\evil.png", png(1))]), None, "dataset.zip_unsafe_name",
     ("..\\..\\evil.png",)),
    ("drive-letter", make_zip([GOOD, ("C:\\evil.png", png(1))]), None, "dataset.zip_unsafe_name",
     ("C:\\evil.png",)),
    ("symlink", make_zip([GOOD, (zipinfo("link.png", mode=stat.S_IFLNK | 0o777), b"/etc/passwd")]), None,
     "dataset.zip_symlink", ("link.png",)),
    ("fifo", make_zip([GOOD, (zipinfo("pipe.png", mode=stat.S_IFIFO | 0o644), b"")]), None,
     "dataset.zip_special_file", ("pipe.png",)),
    ("encrypted", with_flag_bit(make_zip([GOOD]), 0x1), None, "dataset.zip_encrypted", ("good.png",)),
    ("bzip2", make_zip([GOOD], compression=zipfile.ZIP_BZIP2), None, "dataset.zip_compression", ("good.png",)),
    ("nested-by-name", make_zip([GOOD, ("more.zip", make_zip([GOOD]))]), None, "dataset.nested_archive",
     ("more.zip",)),
    ("nested-by-content", make_zip([GOOD, ("sneaky.png", make_zip([GOOD]))]), None, "dataset.nested_archive",
     ("sneaky.png",)),
    ("exe", make_zip([GOOD, ("setup.exe", b"MZ" + bytes(100))]), None, "dataset.zip_unsupported_member",
     ("setup.exe",)),
    ("exe-named-png", make_zip([GOOD, ("photo.png", b"MZ\x90\x00" + bytes(100))]), None, "dataset.not_an_image",
     ("photo.png",)),
    ("gif", make_zip([GOOD, ("anim.gif", encoded(picture(3), "GIF"))]), None, "dataset.image_format",
     ("anim.gif",)),
    ("bmp-named-png", make_zip([GOOD, ("old.png", encoded(picture(3), "BMP"))]), None, "dataset.image_format",
     ("old.png",)),
    ("truncated-member-image", make_zip([GOOD, ("cut.png", png(3)[:500])]), None, "dataset.image_corrupt",
     ("cut.png",)),
    ("bomb-image", make_zip([GOOD, ("bomb.png", png_declaring(50_000, 50_000))]), None,
     "dataset.image_too_many_pixels", ("bomb.png",)),
    ("zip-bomb", make_zip([GOOD, ("zeros.png", bytes(4 * 1024 * 1024))]), None, "dataset.zip_ratio",
     ("zeros.png",)),
    ("lying-size", with_declared_size(make_zip([GOOD, ("liar.png", png(5))]), b"liar.png", 100), None,
     "dataset.zip_corrupt_member", ("liar.png",)),
    ("oversize-member", make_zip([GOOD, ("huge.png", png(6, (256, 256)))]), SMALL,
     "dataset.zip_member_too_large", ("huge.png",)),
    ("oversize-archive", make_zip([(f"{i}.png", png(i, (128, 128))) for i in range(8)],
                                  compression=zipfile.ZIP_STORED), SMALL, "dataset.zip_too_large", ()),
    ("total-too-large", make_zip([(f"{i}.png", png(i, (120, 120))) for i in range(5)]),
     ZipLimits(max_total_bytes=100 * 1024), "dataset.zip_total_too_large", ("2.png",)),
    ("too-many-images", make_zip([(f"{i}.png", png(i)) for i in range(4)]), SMALL, "dataset.too_many_images", ()),
    ("too-many-entries", make_zip([(f"{i}.txt", b"x") for i in range(25)]), SMALL,
     "dataset.zip_too_many_entries", ()),
    ("lying-entry-count", with_declared_count(make_zip([GOOD]), 65000), None, "dataset.zip_too_many_entries", ()),
    ("duplicate-pixels", make_zip([GOOD, ("copy.webp", encoded(picture(0), "WEBP", lossless=True))]), None,
     "dataset.duplicate_image", ("copy.webp", "good.png")),
    ("duplicate-stem", make_zip([("a/cat.png", png(1)), ("b/cat.jpg", encoded(picture(2), "JPEG"))]), None,
     "dataset.zip_duplicate_image_name", ("a/cat.png", "b/cat.jpg")),
    ("duplicate-caption", make_zip([("cat.png", png(1)), ("a/cat.txt", b"x"), ("b/CAT.txt", b"y")]), None,
     "dataset.zip_duplicate_caption_name", ("a/cat.txt", "b/CAT.txt")),
    ("unpaired-caption", make_zip([GOOD, ("dog.txt", b"a dog")]), None, "dataset.caption_unpaired",
     ("dog.txt",)),
    ("long-caption", make_zip([GOOD, ("good.txt", b"word " * 20)]), SMALL, "dataset.caption_too_long",
     ("good.txt",)),
    ("oversize-caption", make_zip([GOOD, ("good.txt", b"w" * 500)]), SMALL, "dataset.zip_member_too_large",
     ("good.txt",)),
    ("latin1-caption", make_zip([GOOD, ("good.txt", "café".encode("latin-1"))]), None, "dataset.caption_encoding",
     ("good.txt",)),
    ("binary-caption", make_zip([GOOD, ("good.txt", b"ok\x00\x01\x02")]), None, "dataset.caption_not_text",
     ("good.txt",)),
    ("no-images", make_zip([("readme/", b""), ("__MACOSX/._x", b"")]), None, "dataset.zip_empty", ()),
]


@pytest.mark.parametrize(("label", "data", "limits", "code", "names"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_upload_corpus_is_refused_with_its_reason(label, data, limits, code, names):
    refused(lambda: read_zip(data, limits=limits), code, *names)


def test_the_entry_count_is_read_before_zipfile_lists_the_entries(monkeypatch):
    data = with_declared_count(make_zip([GOOD]), 65000)
    assert declared_entry_count(io.BytesIO(data)) == 65000
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: pytest.fail("zipfile was reached"))
    refused(lambda: read_zip(data), "dataset.zip_too_many_entries")


def test_archive_size_is_checked_before_the_file_is_opened(tmp_path, monkeypatch):
    path = tmp_path / "big.zip"
    path.write_bytes(b"PK" + bytes(5000))
    monkeypatch.setattr("builtins.open", lambda *a, **k: pytest.fail("the file was opened"))
    refused(lambda: read_zip(path, limits=ZipLimits(max_archive_bytes=1000)), "dataset.zip_too_large")


def test_control_characters_in_member_names_are_not_echoed():
    error = refused(lambda: read_zip(make_zip([GOOD, ("bad\u202ename.exe", b"x")])),
                    "dataset.zip_unsupported_member")
    assert "\u202e" not in error.message() and "bad?name.exe" in error.message()


def test_every_dataset_code_reads_naturally_in_both_languages():
    import json
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "generation" / "locales"
    en = json.loads((folder / "en" / "datasets.json").read_text("utf-8"))
    zh = json.loads((folder / "zh-CN" / "datasets.json").read_text("utf-8"))
    assert set(en) == set(zh)
    for code in en:
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh[code]), code  # really Chinese, not a copy
        assert translate(code, "zh-CN") == zh[code] or "{" in zh[code]


# ---------------------------------------------------------------------- contact sheet


def test_contact_sheet_lays_out_thumbnails_with_captions():
    items = [(picture(i, (96 if i % 2 else 64, 64)), caption) for i, caption in enumerate(
        ["an ink wash painting of mountains and a very long caption that must be cut", "水墨山水，云雾缭绕的山峰",
         None, "short"])]
    sheet = contact_sheet(items, columns=3, thumb=96, caption_lines=2)
    assert sheet.mode == "RGB"
    assert sheet.width == 3 * (96 + 12)
    line = max(10, 96 // 12) + 4
    assert sheet.height == 2 * (96 + 12 + line * 3)  # two rows: thumb, padding, number + 2 caption lines
    cell = np.asarray(sheet.crop((6, 6, 102, 102)))
    assert cell.std() > 20  # the first thumbnail is there, not background


def test_contact_sheet_survives_without_any_cjk_font(tmp_path):
    missing = tmp_path / "no-such-font.ttf"
    sheet = contact_sheet([(picture(1), "中文标注 mixed text")], font_path=missing)
    assert sheet.width > 0
    bitmap = ImageFont.load_default_imagefont()  # Pillow's Latin-1 bitmap font, as without FreeType
    canvas = Image.new("RGB", (200, 40))
    from PIL import ImageDraw

    _text(ImageDraw.Draw(canvas), (0, 0), "水墨 ink", bitmap, (255, 255, 255))
    assert np.asarray(canvas).max() > 0  # drew "?? ink" instead of raising UnicodeEncodeError
