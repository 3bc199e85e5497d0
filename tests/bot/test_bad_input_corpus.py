"""A corpus of bad input to the ``brushwork`` command line, case by case.

Every case is a user mistake, so every case must: exit with status 2, print exactly one line
on stderr (``brushwork: …``, never a traceback, never "internal error"), say the words that
name the mistake, and — for the commands that store things — store nothing: no upload file,
no upload, image or job row.  The cases run in-process through ``main(argv)`` on a fresh
home each (the tiny model; nothing is generated, since every refusal comes before any work).

Add a case here for every refusal found missing or unclear (issue 17 started it).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin
from sqlalchemy import text

from bot.cli import main

LONG_ID = "a" * 300
HUGE_ID = "k" * 10_000


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    for key in list(os.environ):
        if key.startswith("BRUSHWORK_") and key != "BRUSHWORK_DATABASE_URL":  # PostgreSQL runs keep theirs
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("BRUSHWORK_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture
def files(tmp_path) -> Path:
    """The files the cases name: a good picture, a plain file, pictures a user might send."""
    Image.effect_noise((96, 64), 60).convert("RGB").save(tmp_path / "ok.png")
    (tmp_path / "plain.txt").write_text("not a folder\n")
    Image.new("RGB", (64, 64)).save(tmp_path / "bad_exif.jpg", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05garbage")
    for name, value in (("nul.png", "a cat\x00 evil"), ("ansi.png", "a \x1b[31mred\x1b[0m cat")):
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", f"{value}\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64")
        Image.new("RGB", (64, 64)).save(tmp_path / name, pnginfo=info)
    frames = [Image.new("RGB", (64, 64), color) for color in ("red", "blue")]
    frames[0].save(tmp_path / "animated.png", save_all=True, append_images=frames[1:])
    (tmp_path / "x.safetensors").write_bytes(_empty_safetensors())
    return tmp_path


def _empty_safetensors() -> bytes:
    header = b"{}"
    return struct.pack("<Q", len(header)) + header


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own refusals
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stored(home: Path) -> dict[str, int]:
    """What the cases must not leave: upload files, and upload, image and job rows."""
    from bot.container import build_container
    from bot.settings import load_settings

    uploads = home / "uploads"
    counts = {"upload files": sum(1 for path in uploads.rglob("*") if path.is_file()) if uploads.exists() else 0}
    container = build_container(load_settings(home=home))
    try:
        with container.database.connect() as connection:
            for table in ("uploads", "images", "jobs"):
                counts[f"{table} rows"] = connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
    finally:
        container.close()
    return counts


NOTHING = {"upload files": 0, "uploads rows": 0, "images rows": 0, "jobs rows": 0}


def assert_one_line_refusal(code: int, out: str, err: str, words: tuple[str, ...]) -> None:
    assert code == 2, (code, err)
    assert err.endswith("\n") and err.count("\n") == 1, err  # exactly one line
    assert "Traceback" not in err and "internal error" not in err and "Warning" not in err, err
    for word in words:
        assert word.lower() in err.lower(), (word, err)
    assert len(err) < 1000, err  # a value typed by the user is not echoed whole


# ---------------------------------------------------------------------- requests with a picture (item 2)

#: (prompt, key words): each refused before the picture is kept.
PICTURE_REFUSALS = [
    ("a cat --steps 500", ("--steps 500", "1–150")),
    ("a cat --bogus 3", ("unknown flag", "--bogus")),
    ("a cat --image k3x9fq2a", ("--image", "twice")),
    ("a cat --chaos 50", ("--chaos", "cannot be used together")),
    ("a cat --model sd3", ("sd3",)),
    ("a cat --lora nowhere:0.5", ("nowhere",)),
    ("a cat --sampler eulr_a", ("Euler a",)),
    ("a \x1b[31mred\x1b[0m cat", ("control character", "\\x1b")),
]


@pytest.mark.parametrize(("prompt", "words"), PICTURE_REFUSALS, ids=[p for p, _ in PICTURE_REFUSALS])
def test_a_refused_request_keeps_no_picture(home, files, capsys, prompt, words):
    code, out, err = run(capsys, "generate", prompt, "--picture", str(files / "ok.png"))
    assert_one_line_refusal(code, out, err, words)
    assert out == ""
    assert stored(home) == NOTHING


@pytest.mark.parametrize(("out_place", "words"), [
    ("plain.txt", ("--out", "plain.txt", "is a file, not a folder")),
    ("plain.txt/inside", ("--out", "plain.txt is a file")),
])
def test_a_bad_out_folder_is_refused_before_the_picture_is_kept_or_anything_runs(home, files, capsys, out_place,
                                                                                 words):
    code, out, err = run(capsys, "generate", "a cat --steps 2 --size 64x64", "--picture", str(files / "ok.png"),
                         "--out", str(files / out_place))
    assert_one_line_refusal(code, out, err, words)
    assert stored(home) == NOTHING
    code, out, err = run(capsys, "generate", "a cat --steps 2 --size 64x64", "--out", str(files / out_place))
    assert_one_line_refusal(code, out, err, words)
    assert stored(home) == NOTHING  # no image, no row, no job: checked before the job


def test_an_animated_picture_is_refused_and_not_kept(home, files, capsys):
    code, out, err = run(capsys, "generate", "a cat", "--picture", str(files / "animated.png"))
    assert_one_line_refusal(code, out, err, ("animated.png", "2"))
    assert stored(home) == NOTHING


def test_a_good_picture_with_a_good_request_is_kept_once(home, files, capsys):
    """The other side of the refusals: a valid request keeps its picture (and only one)."""
    code, out, err = run(capsys, "generate", "a castle --strength 0.5 --steps 4 --size 64x64 --seed 1",
                         "--picture", str(files / "ok.png"))
    assert code == 0, err
    counts = stored(home)
    assert counts["upload files"] == 1 and counts["uploads rows"] == 1 and counts["images rows"] == 1


def test_a_damaged_exif_picture_is_kept_without_pillows_warning(home, files, capsys):
    code, out, err = run(capsys, "generate", "a castle --strength 0.5 --steps 4 --size 64x64 --seed 1",
                         "--picture", str(files / "bad_exif.jpg"))
    assert code == 0 and "EXIF" not in err and "Warning" not in err, err


# ---------------------------------------------------------------------- mistakes that were internal errors (3, 5)

#: (argv, key words).  ``{files}`` is the folder of the ``files`` fixture.
REFUSALS = [
    (["show", LONG_ID], ("neither an image id", "aaaa…")),
    (["show", f"{LONG_ID}.png"], ("no file", "…")),
    (["reroll", HUGE_ID], ("neither an image id", "kkkk…")),
    (["tweak", LONG_ID, "--steps 4"], ("neither an image id",)),
    (["upscale", LONG_ID], ("neither an image id",)),
    (["vary", LONG_ID], ("neither an image id",)),
    (["cancel", LONG_ID], ("not a job id", "…")),
    (["history", "--before", LONG_ID], ("--before", "not an image id", "…")),
    (["generate", f"a cat --image {LONG_ID}"], ("--image", "not an image id")),
    (["generate", f"a cat --sampler {LONG_ID}"], ("unknown sampler", "…")),
    (["generate", f"a cat --lora {LONG_ID}"], ("lora name", "…")),
    (["generate", "a \x1b[31mred\x1b[0m cat --steps 2"], ("control character", "\\x1b", "character 3")),
    (["generate", "a cat --no \x07blurry"], ("negative prompt", "control character", "\\x07")),
    (["generate", "a cat\x00 --steps 2"], ("control character", "\\x00")),
    (["show", "{files}/bad_exif.jpg"], ("EXIF", "damaged")),
    (["show", "{files}/nul.png"], ("control character", "\\x00", "character 6")),
    (["show", "{files}/ansi.png"], ("control character", "\\x1b")),
    (["lora", "dataset", "create", "a\nb"], ("a\\nb", "dataset name")),
    (["lora", "dataset", "create", "ink\n"], ("ink\\n", "dataset name")),
    (["lora", "dataset", "create", "in\x1bk"], ("in\\x1bk", "dataset name")),
    (["lora", "import", "{files}/x.safetensors", "--name", "a\nb"], ("a\\nb", "lora name")),
    (["lora", "--guild", "99999999999999999999999", "list"], ("--guild", "not a Discord server id")),
    (["lora", "--guild", "0", "list"], ("--guild", "not a Discord server id")),
    (["lora", "--guild", "-5", "list"], ("--guild", "not a Discord server id")),
    (["lora", "--guild", "abc", "list"], ("--guild", "not a Discord server id")),
    (["lora", "dataset", "show", "ink", "--out", "{files}/plain.txt/sheet.png"], ("--out", "is a file")),
    (["lora", "dataset", "show", "ink", "--out", "{files}"], ("--out", "is a folder")),
    (["lora", "export", "ink", "--out", "{files}/plain.txt/ink.safetensors"], ("--out", "is a file")),
    (["compare", "a cat", "--vary", "cfg", "--values", "3,7", "--out", "{files}/plain.txt"],
     ("--out", "is a file, not a folder")),
    (["--home", "{files}/plain.txt", "history"], ("data folder", "plain.txt", "is a file")),
    (["--home", "{files}/plain.txt/home", "history"], ("data folder", "plain.txt is a file")),
]


@pytest.mark.parametrize(("argv", "words"), REFUSALS, ids=[" ".join(a)[:60] for a, _ in REFUSALS])
def test_user_mistakes_are_one_line_and_exit_2(home, files, capsys, argv, words):
    argv = [arg.replace("{files}", str(files)) for arg in argv]
    code, out, err = run(capsys, *argv)
    assert_one_line_refusal(code, out, err, words)
    assert "\n" not in err.rstrip("\n")  # a name with a line break is echoed escaped, on one line


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("BRUSHWORK_CONFIG", "{files}/missing.toml", ("BRUSHWORK_CONFIG", "missing.toml", "not a file")),
    ("BRUSHWORK_CONFIG", "{files}/plain.txt", ("plain.txt", "not valid TOML", "line 1")),
    ("BRUSHWORK_DATABASE_URL", "nonsense://x", ("BRUSHWORK_DATABASE_URL", "no database driver `nonsense`")),
    ("BRUSHWORK_DATABASE_URL", "not a url at all", ("BRUSHWORK_DATABASE_URL", "not a database URL")),
    ("BRUSHWORK_HOME", "{files}/plain.txt", ("BRUSHWORK_HOME", "is a file")),
])
def test_bad_settings_are_one_line_and_exit_2(home, files, capsys, monkeypatch, variable, value, words):
    monkeypatch.setenv(variable, value.replace("{files}", str(files)))
    code, out, err = run(capsys, "history")
    assert_one_line_refusal(code, out, err, words)


def test_a_database_url_with_a_password_is_never_repeated(home, capsys, monkeypatch):
    monkeypatch.setenv("BRUSHWORK_DATABASE_URL", "nosuchdb://admin:hunter2@db.example/brushwork")
    code, out, err = run(capsys, "history")
    assert_one_line_refusal(code, out, err, ("nosuchdb",))
    assert "hunter2" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: permissions cannot refuse it")
def test_a_folder_this_user_may_not_write_is_refused(home, files, capsys):
    locked = files / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, out, err = run(capsys, "generate", "a cat --steps 2", "--out", str(locked / "out"))
        assert_one_line_refusal(code, out, err, ("--out", "may not"))
        code, out, err = run(capsys, "--home", str(locked), "history")
        assert_one_line_refusal(code, out, err, ("data folder", "may not"))
    finally:
        locked.chmod(0o700)


def test_the_echo_of_a_value_is_capped_and_on_one_line():
    from generation.errors import echo

    assert echo("k3x9fq2a") == "k3x9fq2a"
    assert echo("a" * 300) == "a" * 40 + "…"
    assert echo("a\nb\x1b[0m") == "a\\nb\\x1b[0m"
    assert echo("x" * 100, 80).endswith("…") and len(echo("x" * 100, 80)) == 81


def test_a_png_with_a_nul_in_its_brushwork_chunk_is_refused_too(tmp_path):
    """The ``brushwork`` JSON chunk can carry ``\\u0000`` too: reading it is refused, not passed on."""
    import io
    import json

    from generation.errors import MetadataError
    from generation.metadata import png_bytes, read_recipe
    from generation.request import Request

    request = Request(prompt="a cat", seed=1, steps=3, cfg=7.0, sampler="Euler a", width=8, height=8, model="tiny")
    made = Image.open(io.BytesIO(png_bytes(Image.new("RGB", (8, 8)), request=request, model_hash=None,
                                           lora_hashes={}, version="0.1.0")))
    chunk = json.loads(made.text["brushwork"])
    chunk["request"]["prompt"] = "a cat\x00 evil"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", made.text["parameters"])
    info.add_text("brushwork", json.dumps(chunk))
    path = tmp_path / "chunk.png"
    made.save(path, pnginfo=info)
    with pytest.raises(MetadataError) as refused:
        read_recipe(path)
    assert "control character" in refused.value.message() and "\\x00" in refused.value.message()


def test_the_python_api_refuses_an_animated_picture_in_the_command_lines_words(home, files, capsys):
    from generation.api import generate
    from generation.errors import BrushworkError

    code, out, err = run(capsys, "generate", "a cat", "--picture", str(files / "animated.png"))
    with pytest.raises(BrushworkError) as refused:
        generate("a cat", image=str(files / "animated.png"), engine=object())  # refused before the engine
    assert err == f"brushwork: {refused.value.message()}\n"
