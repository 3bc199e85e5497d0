"""Comparisons as one queued job: planning (one fixed seed, the server's rules on every cell,
clear errors), the runner (compatible cells share a pipeline call, the others get their own; each
cell is the image its request makes alone), the labelled grid, and ``brushwork compare``."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot.cli import main
from bot.container import Container
from bot.guild_policy import guard_request
from bot.jobs import compare_submission
from bot.services import ComparePlan, compare_grid
from generation.errors import BrushworkError
from generation.metadata import read_recipe
from storage.records import GuildSettingsRecord, Scope

SCOPE = Scope(user_id=41, guild_id=4242)
TINY = "--size 64x64 --steps 2"
WAIT = 120.0


@pytest.fixture
def container(make_container, tiny_engine):
    return make_container(engine=tiny_engine)


@pytest.fixture
def calls(tiny_engine, monkeypatch):
    """The number of images of every engine call."""
    seen: list[int] = []
    original = tiny_engine.generate

    def recording(requests, **kwargs):
        seen.append(len(requests))
        return original(requests, **kwargs)

    monkeypatch.setattr(tiny_engine, "generate", recording)
    return seen


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def error_code(call, *args, **kwargs) -> str:
    with pytest.raises(BrushworkError) as exc:
        call(*args, **kwargs)
    assert exc.value.message("en") != exc.value.code and exc.value.message("zh-CN") != exc.value.code
    return exc.value.code


# ---------------------------------------------------------------------- planning


def test_plan_fixes_one_seed_and_applies_defaults_and_the_servers_rules(container):
    container.preferences.set_guild_defaults(SCOPE.guild_id, "--sampler euler_a")
    record = GuildSettingsRecord(guild_id=SCOPE.guild_id, safety={"forced_negative": "lowres"})
    plan = container.images.plan_compare(f"a lighthouse --no fog {TINY}", "cfg", "3, 7, 12", SCOPE,
                                         vary2="steps", values2="2|3",
                                         guard=lambda r: guard_request(record, r, age_restricted=False))
    requests = [cell.request for cell in plan.cells]
    assert [(r.steps, r.cfg) for r in requests] == [(2, 3), (2, 7), (2, 12), (3, 3), (3, 7), (3, 12)]
    assert len({r.seed for r in requests}) == 1 and requests[0].seed is not None
    assert {r.sampler for r in requests} == {"Euler a"} and {r.negative_prompt for r in requests} == {"fog, lowres"}
    assert plan.labels()[4] == ("3", "7") and plan.columns == 3
    assert ComparePlan.from_dict(plan.to_dict()) == plan
    submission = compare_submission(plan, SCOPE, channel_id=9)
    assert (submission.images, submission.batch_key, submission.kind) == (6, None, "generate")
    assert submission.work == pytest.approx(sum(r.steps for r in requests) * 64 * 64 / 1e6)


def test_cells_needing_a_variation_seed_share_one(container):
    plan = container.images.plan_compare(f"a fox --seed 5 {TINY}", "vary-strength", "0.1, 0.5", SCOPE)
    seeds = {(c.request.seed, c.request.vary_seed) for c in plan.cells}
    assert len(seeds) == 1 and next(iter(seeds))[1] is not None


@pytest.mark.parametrize(
    ("text", "vary", "values", "extra", "code"),
    [
        (f"a fox {TINY}", "size", "64x64, 128x128", {}, "compare.bad_axis"),
        (f"a fox {TINY}", "cfg", "7", {}, "compare.too_few_values"),
        (f"a fox {TINY}", "cfg", "3, 99", {}, "request.out_of_range"),
        (f"a fox {TINY}", "strength", "0.3, 0.6", {}, "compare.needs_hires"),
        (f"a fox {TINY} --n 2", "cfg", "3, 7", {}, "compare_cmd.one_image_per_cell"),
        (f"a fox {TINY}", "cfg", "3, 7", {"vary2": "steps", "values2": None}, "compare_cmd.second_axis_incomplete"),
        (f"a fox {TINY}", "cfg", "3, 7", {"vary2": "cfg", "values2": "1, 2"}, "compare.same_axis"),
        (f"a fox {TINY}", "cfg", "1,2,3,4,5", {"vary2": "steps", "values2": "1,2,3,4"}, "compare.too_many_cells"),
        ("--cfg 3", "steps", "2, 3", {}, "request.empty_prompt"),
        (f"a fox {TINY} --model nope", "cfg", "3, 7", {}, "model.unknown"),
    ],
)
def test_mistakes_are_named(container, text, vary, values, extra, code):
    assert error_code(container.images.plan_compare, text, vary, values, SCOPE, **extra) == code


# ---------------------------------------------------------------------- running


def test_one_job_several_calls_each_cell_as_made_alone(container, tiny_engine, calls):
    plan = container.images.plan_compare(f"a red fox, oil painting --seed 7 {TINY}", "cfg", "2, 9", SCOPE,
                                         vary2="seed", values2="7, 8")
    handle = container.queue.submit(compare_submission(plan, SCOPE, channel_id=99))
    container.start_workers()
    saved = handle.wait(timeout=WAIT)
    assert calls == [2, 2]  # the two seeds of a CFG value share a call; the CFG values cannot
    assert len(saved) == 4 and [item.record.batch_index for item in saved] == [0, 1, 2, 3]
    alone = [tiny_engine.generate([cell.request])[0] for cell in plan.cells]
    for item, cell, single in zip(saved, plan.cells, alone, strict=True):
        assert read_recipe(item.path).request == cell.request == item.request
        assert item.record.job_public_id == handle.job_id and item.record.channel_id == 99
        difference = np.abs(pixels(item.path) - np.asarray(single.image, dtype=np.float64)).mean() / 255
        assert difference <= 1 / 255
    assert not np.array_equal(pixels(saved[0].path), pixels(saved[1].path))  # CFG changed the picture

    # the grid: the cells in order, with a label row; a withheld cell is a grey tile
    grid = Image.open(io.BytesIO(compare_grid(plan, [item.path for item in saved])))
    assert grid.width > 2 * 64 and grid.height > 2 * 64
    tile = compare_grid(plan, [saved[0].path, None, saved[2].path, saved[3].path])
    assert tile != compare_grid(plan, [item.path for item in saved])
    with container.unit_of_work() as uow:
        job = uow.jobs.get(handle.job_id, Scope.local_operator())
    assert job.result_image_ids == [item.record.public_id for item in saved] and job.images == 4


def test_a_cancelled_comparison_stores_nothing(container, tiny_engine):
    plan = container.images.plan_compare(f"a fox {TINY}", "steps", "2, 3", SCOPE)
    handle = container.queue.submit(compare_submission(plan, SCOPE))
    handle.cancel()
    container.start_workers()
    with pytest.raises(BrushworkError):
        handle.wait(timeout=WAIT)
    with container.unit_of_work() as uow:
        assert uow.images.history(SCOPE) == []


# ---------------------------------------------------------------------- the command line


def test_brushwork_compare(tmp_path, tiny_engine, monkeypatch, capsys):
    monkeypatch.setattr(Container, "_make_engine", lambda self, device: tiny_engine)
    home, out = tmp_path / "home", tmp_path / "out"
    code = main(["--home", str(home), "compare", f"a lighthouse --seed 3 {TINY}", "--vary", "sampler",
                 "--values", "euler_a | DPM++ 2M Karras", "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 3
    cells = [line.split("\t") for line in lines[:2]]
    assert [c[1] for c in cells] == ["--sampler euler_a", "--sampler DPM++ 2M Karras"]
    assert {c[2] for c in cells} == {"seed=3"}
    for public_id, _label, _seed, path in cells:
        assert path.endswith(f"{public_id}.png") and read_recipe(path).request.seed == 3
    kind, grid_path = lines[2].split("\t")
    assert kind == "grid" and grid_path.startswith(str(out / "compare-"))
    with Image.open(grid_path) as grid:
        assert grid.width > 2 * 64

    code = main(["--home", str(home), "compare", f"a lighthouse {TINY}", "--vary", "colour", "--values", "1,2"])
    assert code == 2 and "cannot be compared" in capsys.readouterr().err
    code = main(["--home", str(home), "compare", f"a lighthouse {TINY}", "--vary", "cfg", "--values", "3,7",
                 "--vary2", "steps"])
    assert code == 2 and "--vary2 and --values2 go together" in capsys.readouterr().err


def test_compatible_cells_are_split_by_the_devices_memory(make_container, tiny_engine, calls):
    container = make_container(engine=tiny_engine, queue_batch_megapixels=2 * 64 * 64 / 1e6)
    try:
        plan = container.images.plan_compare(f"a heron {TINY}", "seed", "1, 2, 3, 4, 5", SCOPE)
        handle = container.queue.submit(compare_submission(plan, SCOPE))
        container.start_workers()
        assert [item.record.seed for item in handle.wait(timeout=WAIT)] == [1, 2, 3, 4, 5]
        assert calls == [2, 2, 1]  # one batch key, two images a call fit
    finally:
        container.close()
