"""X/Y comparisons: axes parsed with the request language's own errors, fixed seed, labelled grid."""

from __future__ import annotations

import pytest
from PIL import Image

from generation.compare import build, grid, parse_axis
from generation.errors import RequestError
from generation.grammar import parse
from generation.grid import labelled_grid
from generation.profiles import PROFILES
from generation.request import resolve


def base(text: str = "a lighthouse --seed 42 --size 64x64 --steps 4"):
    return resolve(parse(text), PROFILES["tiny"], model="tiny")[0]


def test_cfg_axis_keeps_the_seed_and_changes_only_cfg():
    comparison = build(base(), parse_axis("cfg", "3, 7, 12"))
    cells = comparison.requests
    assert [c.cfg for c in cells] == [3.0, 7.0, 12.0]
    assert {c.seed for c in cells} == {42}
    assert {c.steps for c in cells} == {4}


def test_two_axes_make_rows_and_columns():
    comparison = build(base(), parse_axis("--sampler", "euler_a | DPM++ 2M Karras"), parse_axis("steps", "2,4,6"))
    assert len(comparison.cells) == 3 and all(len(row) == 2 for row in comparison.cells)
    assert comparison.cells[2][1].steps == 6 and comparison.cells[2][1].sampler == "DPM++ 2M Karras"
    assert comparison.cells[0][0].sampler == "Euler a"


def test_hires_parts_refine_the_base_hires():
    hires_base = base("a lighthouse --seed 1 --size 64x64 --steps 4 --hires 1.5")
    comparison = build(hires_base, parse_axis("strength", "0.3,0.6"))
    assert [c.hires.strength for c in comparison.requests] == [0.3, 0.6]
    assert {c.hires.scale for c in comparison.requests} == {1.5}
    with pytest.raises(RequestError) as exc:
        build(base(), parse_axis("strength", "0.3,0.6"))
    assert exc.value.code == "compare.needs_hires"


@pytest.mark.parametrize(
    ("flag", "values", "code"),
    [
        ("size", "64x64,128x128", "compare.bad_axis"),
        ("tile", "a,b", "compare.bad_axis"),
        ("colour", "1,2", "compare.bad_axis"),
        ("cfg", "7", "compare.too_few_values"),
        ("cfg", ",".join(str(i) for i in range(1, 11)), "compare.too_many_values"),
        ("cfg", "7, 7", "compare.duplicate_values"),
        ("cfg", "3, 99", "request.out_of_range"),
        ("sampler", "euler_a, nope", "request.unknown_sampler_plain"),
    ],
)
def test_axis_mistakes(flag, values, code):
    with pytest.raises(RequestError) as exc:
        parse_axis(flag, values)
    assert exc.value.code == code
    assert exc.value.message("zh-CN") and exc.value.message()


def test_grid_limits():
    with pytest.raises(RequestError) as exc:
        build(base(), parse_axis("cfg", "1,2,3,4,5"), parse_axis("steps", "1,2,3,4"))
    assert exc.value.code == "compare.too_many_cells"
    with pytest.raises(RequestError):
        build(base(), parse_axis("cfg", "1,2"), parse_axis("cfg", "3,4"))


def test_labelled_grid_places_each_image_and_draws_labels():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (64, 64), c) for c in colours]
    comparison = build(base(), parse_axis("cfg", "3, 7, 12"))
    sheet = grid(comparison, images, title="a lighthouse — 灯塔")
    assert sheet.width > 3 * 64 and sheet.height > 64
    # each cell's centre has its image's colour, in order
    top = sheet.height - 4 - 64
    for i, colour in enumerate(colours):
        x = 4 + i * (64 + 4) + 32
        assert sheet.getpixel((x, top + 32)) == colour
    # the label band above the cells is not blank: labels were drawn
    band = sheet.crop((0, 0, sheet.width, top - 4)).convert("L")
    assert band.getextrema()[0] < 128


def test_labelled_grid_rejects_ragged_rows():
    img = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError):
        labelled_grid([[img, img], [img]], column_labels=["a", "b"])
