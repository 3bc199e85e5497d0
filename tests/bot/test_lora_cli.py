"""``brushwork lora …`` end to end: datasets, training with the queue, use, export, import, delete —
in-process through ``main(argv)`` (the same code as the console script), plus a subprocess smoke test."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from bot.cli import main
from bot.container import Container
from generation.metadata import read_recipe
from generation.training.lora_files import KOHYA_KEY

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def picture(seed: int, path: Path, size=(64, 64)) -> Path:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    image.save(path)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch, tiny_engine) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("BRUSHWORK_HOME", str(home))
    monkeypatch.setenv("BRUSHWORK_TRAINING_CHUNK_STEPS", "2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(Container, "_make_engine", lambda self, device: tiny_engine)  # no second model build
    return home


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_dataset_train_use_export_import_delete(home, tmp_path, capsys):
    files = [picture(i, tmp_path / f"{i}.png") for i in range(2)]
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        buffer = io.BytesIO()
        Image.open(picture(7, tmp_path / "z.png")).save(buffer, format="PNG")
        handle.writestr("07.png", buffer.getvalue())
        handle.writestr("07.txt", "a river at dawn")

    assert run(capsys, "lora", "dataset", "create", "ink")[0] == 0
    code, out, err = run(capsys, "lora", "dataset", "add", "ink", *map(str, files), str(archive), "--caption",
                         "a mountain")
    assert code == 0, err
    lines = [line.split("\t") for line in out.strip().splitlines()]
    assert [(row[0], row[3], row[4]) for row in lines] == [("#1", "0.png", "a mountain"), ("#2", "1.png", "a mountain"),
                                                          ("#3", "07.png", "a river at dawn")]
    assert "ink: 3 images" in err
    code, out, err = run(capsys, "lora", "dataset", "add", "ink", str(files[0]))  # the same picture again
    assert code == 2 and "same picture as image #1" in err
    assert run(capsys, "lora", "dataset", "caption", "ink", "#2", "a", "quiet", "lake")[1].strip().endswith("a quiet lake")
    sheet = tmp_path / "sheet.png"
    code, out, _ = run(capsys, "lora", "dataset", "show", "ink", "--out", str(sheet))
    assert code == 0 and "a quiet lake" in out and Image.open(sheet).format == "PNG"
    assert run(capsys, "lora", "dataset", "list")[1].startswith("ink\t3 images")

    code, out, err = run(capsys, "lora", "train", "ink", "--dataset", "ink", "--trigger", "inkwash", "--steps", "4",
                         "--resolution", "64", "--rank", "4", "--lr", "0.01", "--no-progress")
    assert code == 0, err
    assert "training ink on tiny: 4 steps, rank 4, 64 px" in err
    first, before, after = (line.split("\t") for line in out.strip().splitlines())
    assert first[:2] == ["ink", "ready"] and len(first[2]) == 12 and Path(first[3]).is_file()
    assert before[0] == "before" and Path(before[1]).name == "step_000000.png"
    assert after[0] == "after" and Path(after[1]).name == "step_000004.png"
    short_hash = first[2]

    code, out, _ = run(capsys, "lora", "list")
    assert out.split("\t")[:2] == ["ink", "ready"] and short_hash in out
    code, out, _ = run(capsys, "lora", "info", "ink")
    assert "trigger words: inkwash" in out and "dataset:       ink (3 images)" in out and "before:" in out

    code, out, _ = run(capsys, "generate", "inkwash, a lake --seed 3 --size 64x64 --steps 2 --lora ink:0.8",
                       "--no-progress")
    assert code == 0
    image_path = Path(out.strip().split("\t")[2])
    assert read_recipe(image_path).lora_hashes == {"ink": short_hash}

    kohya = tmp_path / "out" / "ink-kohya.safetensors"
    assert run(capsys, "lora", "export", "ink", "--kohya", "--out", str(kohya))[0] == 0
    with safe_open(str(kohya), "pt") as handle:
        assert all(KOHYA_KEY.match(key) for key in handle.keys())
    folder = tmp_path / "plain"
    folder.mkdir()
    code, out, _ = run(capsys, "lora", "export", "ink", "--out", str(folder))
    assert code == 0 and (folder / "ink.safetensors").is_file() and "kohya keys" in out  # trained here: kohya

    code, out, err = run(capsys, "lora", "import", str(kohya), "--name", "ink-k")
    assert code == 0, err
    assert out.split("\t")[:2] == ["ink-k", "ready"]
    code, out, err = run(capsys, "lora", "--guild", "123", "list")  # another server's namespace: empty
    assert code == 0 and out == "" and "no LoRAs yet" in err
    assert run(capsys, "lora", "delete", "ink-k")[0] == 0
    assert "ink-k" not in run(capsys, "lora", "list")[1]

    # mistakes: one line, exit status 2
    for argv, expected in (
        (("lora", "info", "nope"), "no LoRA named `nope` here"),
        (("lora", "train", "x", "--dataset", "nope"), "no dataset named `nope`"),
        (("lora", "train", "x", "--dataset", "ink", "--resolution", "100"), "not a multiple of 64"),
        (("lora", "dataset", "add", "ink", str(tmp_path / "missing.png")), "is not a file"),
        (("lora", "dataset", "create", "ink"), "already exists"),
        (("lora", "import", str(tmp_path / "missing.safetensors")), "is not a file"),
        (("lora", "export", "ink", "--out"), "expected one argument"),
    ):
        if argv[-1] == "--out":
            with pytest.raises(SystemExit) as exit_info:
                main(list(argv))
            assert exit_info.value.code == 2
            assert expected in capsys.readouterr().err
            continue
        code, out, err = run(capsys, *argv)
        assert code == 2, argv
        assert expected in err.lower() or expected in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
    pickled = tmp_path / "style.ckpt"
    pickled.write_bytes(b"\x80\x04K\x01.")
    code, _, err = run(capsys, "lora", "import", str(pickled))
    assert code == 2 and "pickled" in err

    assert run(capsys, "lora", "dataset", "remove", "ink", "1")[0] == 0
    assert run(capsys, "lora", "dataset", "delete", "ink")[1].startswith("ink\tdeleted")
    assert run(capsys, "lora", "delete", "ink")[0] == 0
    assert run(capsys, "lora", "list")[1] == ""


def test_lora_commands_in_a_subprocess(tmp_path):
    env = {**os.environ, "BRUSHWORK_HOME": str(tmp_path / "home"), "PYTHONIOENCODING": "utf-8"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=env,
                              timeout=300, cwd=ROOT)

    created = cli("lora", "dataset", "create", "水墨")
    assert created.returncode == 0, created.stderr
    listed = cli("lora", "dataset", "list")
    assert listed.returncode == 0 and listed.stdout.startswith("水墨\t0 images")
    refused = cli("lora", "dataset", "create", "two words")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "cannot be a dataset name" in refused.stderr
