"""Issue 17.11: nothing is written outside the home — importing diffusers used to create an empty
``${TMPDIR:-/tmp}/torchinductor_<user>``; torch's caches now live in ``$BRUSHWORK_HOME/cache``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.container import TORCH_CACHES, point_torch_caches

pytestmark = pytest.mark.slow


def test_a_generation_writes_nothing_in_the_temporary_folder(tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    home = tmp_path / "home"
    env = {key: value for key, value in os.environ.items() if key not in TORCH_CACHES}
    env.update(BRUSHWORK_HOME=str(home), HF_HUB_OFFLINE="1", TMPDIR=str(temporary), PYTHONIOENCODING="utf-8")
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "generate", "a cat --steps 2 --size 64x64 --model tiny"],
                          capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in temporary.iterdir()) == []  # no torchinductor_<user>, nothing else
    assert (home / "cache" / "torchinductor").is_dir()  # where TorchInductor keeps it now


def test_what_the_user_chose_is_kept(tmp_path):
    environ = {"TORCHINDUCTOR_CACHE_DIR": "/somewhere/mine", "TRITON_CACHE_DIR": ""}
    chosen = point_torch_caches(tmp_path / "cache", environ)
    assert environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/mine"
    assert environ["TRITON_CACHE_DIR"] == str(tmp_path / "cache" / "triton")  # empty counts as unset
    assert set(chosen) == set(TORCH_CACHES) - {"TORCHINDUCTOR_CACHE_DIR"}
