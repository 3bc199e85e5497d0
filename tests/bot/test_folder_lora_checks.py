"""Issue 17.4 through the command line and the services: a bad LoRA in ``$BRUSHWORK_HOME/loras/`` is
one line and exit 2 — never a traceback, never ``queue.internal`` — and is refused at planning once
its verdict is known (NaN weights at once: they need no model); an import refuses NaN weights too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bot.container import build_container
from bot.settings import load_settings
from generation.training import LoraFileError
from storage.records import Scope

pytestmark = pytest.mark.slow

ATTN = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"  # a 64×64 projection of the tiny UNet
REQUEST = "a cat --steps 2 --size 64x64 --model tiny --seed 3 --lora {}"


def _random(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def _kohya(module: str = ATTN, down: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    return {f"{module}.lora_down.weight": _random(4, 64) if down is None else down,
            f"{module}.lora_up.weight": _random(64, 4), f"{module}.alpha": torch.tensor(4.0)}


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "home"
    folder = home / "loras"
    folder.mkdir(parents=True)
    # every key names a layer the model lacks: diffusers loaded nothing, then "Adapter name(s) not in the list"
    save_file({k.replace("mid_block", "middle_block"): v for k, v in _kohya().items()}, str(folder / "renamed.safetensors"))
    save_file(_kohya(down=_random(4, 67)), str(folder / "shapes.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) for k, v in _kohya().items()}, str(folder / "nan.safetensors"))
    save_file(_kohya(), str(folder / "good.safetensors"))
    return home


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BRUSHWORK_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=Path(__file__).resolve().parents[2])


def jobs(home: Path) -> list[tuple[str, str | None]]:
    """The job rows of that home's database (SQLite there, or the test's PostgreSQL)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(load_settings(home=home).effective_database_url)
    try:
        with engine.connect() as connection:
            if not sqlalchemy.inspect(connection).has_table("jobs"):
                return []
            return [(row[0], row[1]) for row in connection.execute(
                sqlalchemy.text("SELECT status, error FROM jobs ORDER BY id"))]
    finally:
        engine.dispose()


def refusal_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line and not line.startswith("loading model")]


@pytest.mark.parametrize(("name", "says"), [("renamed", "middle_block"), ("shapes", "[4, 64]")])
def test_keys_or_shapes_of_another_model_fail_in_one_line_then_are_refused_at_planning(home, name, says):
    first = run_cli(home, "generate", REQUEST.format(name))
    assert first.returncode == 2, first.stderr
    assert "Traceback" not in first.stderr and "Adapter name" not in first.stderr
    assert len(refusal_lines(first)) == 1 and f"`{name}`" in first.stderr and says in first.stderr
    assert len(jobs(home)) == 1 and "internal" not in (jobs(home)[0][1] or "")  # the job failed with that line
    again = run_cli(home, "generate", REQUEST.format(name))  # a new process: the verdict is remembered
    assert again.returncode == 2 and again.stderr.strip() == refusal_lines(first)[0]
    assert len(jobs(home)) == 1  # refused at planning: no job, no model loaded


def test_nan_weights_are_refused_at_planning_at_once(home):
    proc = run_cli(home, "generate", REQUEST.format("nan"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "NaN" in proc.stderr and "RuntimeWarning" not in proc.stderr
    assert jobs(home) == []
    good = run_cli(home, "generate", REQUEST.format("good"))
    assert good.returncode == 0, good.stderr


def test_an_import_refuses_nan_weights(tmp_path, tiny_engine):
    container = build_container(load_settings(home=tmp_path / "home"))
    try:
        container._engine = tiny_engine
        bad = tmp_path / "bad.safetensors"
        tensors = _kohya()
        tensors[f"{ATTN}.lora_up.weight"][5, 1] = float("inf")
        save_file(tensors, str(bad))
        scope = Scope(user_id=1, guild_id=77)
        with pytest.raises(LoraFileError) as error:
            container.loras.import_lora(scope, "bad.safetensors", bad, can_manage=True)
        assert error.value.code == "lora.not_finite" and "1 of 256" in error.value.message()
        assert container.loras.list(scope) == []
        assert not any(container.settings.server_loras_dir.rglob("*.safetensors"))
    finally:
        container.close()
