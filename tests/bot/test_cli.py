"""The ``brushwork`` command line, end to end.

The main flow runs in real subprocesses (the installed console script's code path, a fresh
interpreter, the tiny model); the many error paths run in-process through ``main(argv)``,
which is the same code without the interpreter start-up.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main
from generation.metadata import read_recipe

pytestmark = pytest.mark.slow


def run_cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BRUSHWORK_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=Path(__file__).resolve().parents[2])
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def parse_lines(stdout: str) -> list[tuple[str, int, Path]]:
    rows = []
    for line in stdout.strip().splitlines():
        public_id, seed, path = line.split("\t")
        assert seed.startswith("seed=")
        rows.append((public_id, int(seed.removeprefix("seed=")), Path(path)))
    return rows


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("BRUSHWORK_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_generate_reroll_tweak_upscale_vary_show_in_subprocesses(home, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(home, "generate", "一只猫 on a motorbike --seed 42 --n 2 --size 64x64 --steps 3 --no blurry",
                   "--out", str(out))
    assert proc.stderr.startswith("loading model tiny …\n")  # said before step 1, even without a terminal
    rows = parse_lines(proc.stdout)
    assert [seed for _, seed, _ in rows] == [42, 43]
    for public_id, seed, path in rows:
        assert path == out / f"{public_id}.png"
        recipe = read_recipe(path)
        assert recipe.request.seed == seed
        assert recipe.request.prompt == "一只猫 on a motorbike"
        assert recipe.request.negative_prompt == "blurry"
        assert f"Seed: {seed}" in recipe.infotext
        stored = home / "images"
        assert any(stored.rglob(f"{public_id}.png"))
    parent = rows[0][0]

    child = parse_lines(run_cli(home, "reroll", parent).stdout)
    assert len(child) == 1 and child[0][1] != 42

    tweaked = parse_lines(run_cli(home, "tweak", parent, "a red cat --steps 4").stdout)
    assert tweaked[0][1] == 42
    assert read_recipe(tweaked[0][2]).request.prompt == "a red cat"
    assert read_recipe(tweaked[0][2]).request.steps == 4
    assert read_recipe(tweaked[0][2]).request.negative_prompt == "blurry"

    upscaled = parse_lines(run_cli(home, "upscale", parent).stdout)
    with Image.open(upscaled[0][2]) as img:
        assert img.size == (128, 128)

    varied = parse_lines(run_cli(home, "vary", parent, "--strong").stdout)
    recipe = read_recipe(varied[0][2]).request
    assert recipe.seed == 42 and recipe.vary_seed is not None and recipe.vary_strength == 0.45

    shown = json.loads(run_cli(home, "show", varied[0][0], "--json").stdout)
    assert shown["parent"] == parent and shown["relation"] == "vary"
    assert shown["lineage"] == [varied[0][0], parent]
    assert shown["request"]["seed"] == 42

    history = run_cli(home, "history").stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in history][:4] == [varied[0][0], upscaled[0][0], tweaked[0][0],
                                                              child[0][0]]


def test_same_request_twice_gives_identical_pixels_and_png_alone_is_enough(home, tmp_path):
    first = parse_lines(run_cli(home, "generate", "a lighthouse --seed 7 --size 64x64 --steps 3").stdout)[0]
    again = parse_lines(run_cli(home, "generate", "a lighthouse --seed 7 --size 64x64 --steps 3").stdout)[0]
    with Image.open(first[2]) as a, Image.open(again[2]) as b:
        assert a.tobytes() == b.tobytes()
    assert first[0] != again[0]

    # A PNG alone, in a fresh home with an empty database, is enough to tweak it.
    other_home = tmp_path / "other"
    copy = tmp_path / "lighthouse.png"
    copy.write_bytes(first[2].read_bytes())
    tweaked = parse_lines(run_cli(other_home, "tweak", str(copy), "--cfg 5").stdout)[0]
    request = read_recipe(tweaked[2]).request
    assert request.seed == 7 and request.cfg == 5 and request.prompt == "a lighthouse"


def test_user_mistakes_exit_2_with_one_line(home, tmp_path):
    proc = run_cli(home, "generate", "a cat --stpes 30", check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0
    assert "--steps" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["generate", "a cat --steps 500"], "1–150"),
        (["generate", "--seed 3"], "prompt is empty"),
        (["generate", "a cat --sampler eulr_a"], "Euler a"),
        (["generate", "a cat --model sd3"], "sdxl"),
        (["generate", "a cat --lora ink:0.5"], "LoRA"),
        (["generate", "a cat --size 4096x4096"], "32–2048"),
        (["generate", "a", "cat", "--seed", "4"], "inside the quoted prompt"),
        (["show", "zzzzzzzz"], "No image"),
        (["show", "not an id"], "neither an image id"),
        (["reroll", "missing.png"], "no file"),
        (["upscale", "missing.webp"], "no file"),
        (["tweak", "zzzzzzzz", "--steps 4"], "No image"),
        (["history", "--limit", "0"], "1-100"),
    ],
)
def test_error_messages(home, capsys, argv, expected):
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert expected.lower() in err.lower()
    assert "Traceback" not in err


def exit_code(argv: list[str]) -> int:
    """``main``'s status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def test_not_a_png_is_refused_clearly(home, tmp_path, capsys):
    bogus = tmp_path / "x.png"
    bogus.write_bytes(b"not a png at all")
    assert main(["show", str(bogus)]) == 2
    assert "PNG" in capsys.readouterr().err


def test_a_jpeg_copy_made_for_discord_still_shows_its_recipe(home, tmp_path, capsys):
    from bot.attachments import fit_image
    from generation.metadata import png_bytes
    from generation.request import Request

    request = Request(prompt="a lighthouse", seed=7, steps=3, cfg=7.0, sampler="Euler a", width=256, height=256,
                      model="tiny")
    noise = Image.frombytes("RGB", (256, 256), random.Random(7).randbytes(256 * 256 * 3))
    png = png_bytes(noise, request=request, model_hash="0123456789", lora_hashes={}, version="0.1.0")
    copy = fit_image("k3x9fq2a.png", png, limit=len(png) // 4)
    path = tmp_path / copy.filename
    path.write_bytes(copy.data)
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "a lighthouse" in out and "--seed 7" in out and "Steps: 3" in out


def test_db_check_lists_stray_files_and_clean_deletes_them(home, capsys):
    assert main(["db", "upgrade"]) == 0
    stray = home / "images" / "2000" / "01" / "zzzzzzzz.png"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"\x89PNG" + b"0" * 2044)
    old = time.time() - 3 * 3600
    for path in (stray, stray.parent, stray.parent.parent):  # written (and its folders made) long ago
        os.utime(path, (old, old))
    capsys.readouterr()
    assert main(["db", "check"]) == 0
    out = capsys.readouterr().out
    assert "images" in out and "1 stray (2 KB)" in out and f"stray\t{stray}" in out
    assert "--clean" in out and stray.exists()  # nothing changes without --clean
    assert main(["db", "check", "--grace-minutes", "600"]) == 0  # younger than the grace: not judged
    assert "1 newer than 600 min" in capsys.readouterr().out
    assert main(["db", "check", "--clean"]) == 0
    assert "Deleted 1 stray" in capsys.readouterr().out and not stray.exists()
    assert not (home / "images" / "2000").exists()  # emptied folders go too (not ones made just now)


def test_db_check_says_how_many_young_files_it_skipped(home, capsys):
    """After a crash the stray files are young: the summary must not end at "no stray files"."""
    assert main(["db", "upgrade"]) == 0
    young = home / "images" / "2026" / "01" / "yyyyyyyy.png"
    young.parent.mkdir(parents=True)
    young.write_bytes(b"\x89PNG" + b"0" * 100)  # written just now, no row: a crash between file and row
    capsys.readouterr()
    assert main(["db", "check"]) == 0
    last = capsys.readouterr().out.strip().splitlines()
    assert last[-2] == "No stray files older than 60 min."
    assert last[-1].startswith("Skipped 1 unreferenced file(s) or folder(s) younger than 60 min")
    assert "again in 60 min" in last[-1] and young.exists()
    assert main(["db", "check", "--grace-minutes", "0"]) == 0  # judged now: a stray, nothing skipped
    out = capsys.readouterr().out
    assert "1 stray" in out and "Skipped" not in out


NO_CUDA = "brushwork: Device `cuda` is not available on this machine. Leave the device setting out to use what is there."


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine has no CUDA (whatever it really has), and the settings ask for it."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("BRUSHWORK_DEVICE", "cuda")


@pytest.mark.parametrize("command", [["generate", "a cat --steps 2 --size 64x64"],
                                     ["compare", "a cat --steps 2 --size 64x64", "--vary", "seed",
                                      "--values", "1,2"]])
def test_a_device_that_is_not_there_exits_2_at_once_and_queues_nothing(home, capsys, no_cuda, command,
                                                                       make_container):
    assert main(command) == 2
    assert capsys.readouterr().err.splitlines() == [NO_CUDA]
    container = make_container(home=home)
    assert container.queue.jobs() == []  # no job left for a later worker to run by surprise


def test_the_bot_refuses_to_start_its_worker_on_a_device_that_is_not_there(home, capsys, no_cuda, monkeypatch):
    import logging

    import bot.discord_app.client as client

    root = logging.getLogger()  # `brushwork run` configures logging for the process: undone after
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)

    def serve(*_args, **_kwargs):
        raise AssertionError("the bot connected to Discord without a worker that can run")

    monkeypatch.setattr(client, "serve", serve)
    monkeypatch.setenv("BRUSHWORK_DISCORD_TOKEN", "not.a.real.token")
    assert main(["run"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == NO_CUDA


def test_db_purge_removes_files_of_deleted_images_only(home, capsys, make_container):
    from storage.archive import save_image
    from storage.records import NewImage, Scope

    container = make_container(home=home)
    try:
        new = NewImage(owner_id=5, prompt="p", seed=1, steps=2, cfg=7.0, sampler="Euler a", width=8, height=8,
                       model="tiny", request={"prompt": "p"}, canonical="p")
        kept, deleted = (save_image(container.unit_of_work, container.store, b"\x89PNG" + b"0" * 3000, new)
                         for _ in range(2))
        with container.unit_of_work() as uow:
            uow.images.soft_delete(deleted.public_id, Scope(user_id=5))
            uow.commit()
        paths = [container.store.absolute(r.file_path) for r in (kept, deleted)]
    finally:
        container.close()
    assert main(["db", "purge"]) == 0  # deleted just now: kept for 30 days by default
    assert "Removed the files of 0 image(s)" in capsys.readouterr().out and paths[1].exists()
    assert main(["db", "purge", "--days", "0"]) == 0
    assert "Removed the files of 1 image(s) deleted more than 0 day(s) ago (3 KB)" in capsys.readouterr().out
    assert paths[0].exists() and not paths[1].exists()


def test_generate_from_a_picture_file(home, tmp_path, capsys):
    picture = tmp_path / "holiday.webp"
    Image.effect_noise((96, 64), 60).convert("RGB").save(picture, "WEBP")
    assert main(["generate", "a castle in the fog --strength 0.5 --steps 4 --size 64x64 --seed 1",
                 "--picture", str(picture)]) == 0
    public_id, seed, path = capsys.readouterr().out.strip().split("\t")
    request = read_recipe(path).request
    assert request.image is not None and request.hires.strength == 0.5 and seed == "seed=1"
    assert (home / "uploads" / f"{request.image}.png").is_file()
    assert main(["generate", "x", "--picture", str(tmp_path / "missing.png")]) == 2
    assert "no file" in capsys.readouterr().err


def test_help_everywhere(capsys):
    for argv in (["--help"], ["generate", "--help"], ["show", "--help"], ["reroll", "--help"],
                 ["tweak", "--help"], ["upscale", "--help"], ["vary", "--help"], ["history", "--help"],
                 ["samplers", "--help"], ["models", "--help"], ["db", "--help"], ["db", "upgrade", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert "usage: brushwork" in capsys.readouterr().out


def test_samplers_models_and_db(home, capsys, database_server):
    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    for name in ("Euler a", "DPM++ 2M Karras", "DPM++ SDE", "DDIM", "UniPC", "LMS", "Heun", "DPM2"):
        assert name in out
    assert main(["models"]) == 0
    assert "tiny (default)" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    from storage.migrate import head_revision

    assert f"revision: {head_revision()}" in out
    assert (home / "brushwork.db").is_file() or database_server is not None  # SQLite by default


def test_show_prints_infotext_and_python(home, capsys):
    assert main(["generate", "a boat --seed 5 --size 64x64 --steps 2"]) == 0
    public_id = capsys.readouterr().out.split("\t")[0]
    assert main(["show", public_id]) == 0
    out = capsys.readouterr().out
    assert "Steps: 2, Sampler: DPM++ 2M, Schedule type: Karras" in out
    assert "from generation import generate" in out
    assert "--seed 5" in out


def test_progress_bar_on_request(home, capsys):
    assert main(["generate", "a boat --seed 5 --size 64x64 --steps 3", "--progress"]) == 0
    err = capsys.readouterr().err
    assert "3/3" in err and "step 3/3" in err and err.endswith("\n")


def test_loading_the_model_is_said_before_the_first_step(home, capsys):
    assert main(["generate", "a boat --seed 5 --size 64x64 --steps 3", "--progress"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("loading model tiny …\n") and err.index("loading model") < err.index("step 1/3")


def test_the_queued_line_numbers_places_like_the_queue_listing():
    import io

    from bot.cli import Progress
    from generation.queue import JobQueued

    stream = io.StringIO()
    progress = Progress(stream, enabled=False)
    progress(JobQueued("k3x9fq2a", position=0, eta_s=3.0))  # next in line: nothing to say
    progress(JobQueued("k3x9fq2a", position=1, eta_s=12.0))
    assert stream.getvalue() == ("job k3x9fq2a: position 2 in the queue, done in about 12 s "
                                 "(brushwork cancel k3x9fq2a to drop it)\n")


DISCORD_WORDS = ("server", "/history", "direct message", "discord", "channel")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["generate", "a cat --image zzzzzzzz"],
         "brushwork: --image zzzzzzzz: no image `zzzzzzzz` here to start from. Use the id of one of your images "
         "(printed after each result, listed by `brushwork history`), or start from a file with --picture FILE.\n"),
        (["generate", "a cat --image"],
         "brushwork: --image needs the id of one of your images to start from, e.g. `--image k3x9fq2a` (ids are "
         "printed after each result and listed by `brushwork history`).\n"),
        (["generate", "a cat --image ../x"],
         "brushwork: --image `../x` is not an image id: ids are 8 letters and digits, e.g. `k3x9fq2a` (printed "
         "after each result and listed by `brushwork history`).\n"),
        (["show", "zzzzzzzz"], "brushwork: No image `zzzzzzzz` here. `brushwork history` lists your images and "
                               "their ids.\n"),
    ],
)
def test_image_errors_speak_the_command_line_not_discord(home, capsys, argv, expected):
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert err == expected
    assert not any(word in err.lower() for word in DISCORD_WORDS)


def test_a_missing_start_image_in_a_real_run_of_the_command(home):
    proc = run_cli(home, "generate", "a cat --image zzzzzzzz", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("brushwork: --image zzzzzzzz: no image `zzzzzzzz` here to start from.")
    assert "brushwork history" in proc.stderr
    assert not any(word in proc.stderr.lower() for word in DISCORD_WORDS)


def test_the_command_lines_words_carry_the_same_data_and_discord_keeps_its_own():
    import re

    from bot.cli import CLI_TEXTS
    from generation.errors import ImageNotFound
    from generation.i18n import register_catalogue, translate

    register_catalogue("bot")
    for code, template in CLI_TEXTS.items():
        shared = translate(code)
        assert shared != code, f"{code} is not in the catalogue"
        assert set(re.findall(r"{(\w+)}", template)) <= set(re.findall(r"{(\w+)}", shared)), code
        assert not any(word in template.lower() for word in DISCORD_WORDS), code
    assert "in this server" in ImageNotFound("image.start_not_found", id="zzzzzzzz").message()  # Discord's words
