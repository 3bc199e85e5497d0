"""X/Y comparisons: one seed, one parameter (or two) varied, a labelled grid.

This is how people learn what a parameter does: ``/compare a lighthouse vary:cfg
values:3,7,12`` draws the same seed three times and lays the images side by side, each
labelled with its value.  Any flag of the request language can be an axis (``sampler``,
``steps``, ``cfg``, ``clip-skip``, ``strength``, ``lora``…); values are written exactly as
after the flag, separated by ``,`` or ``|`` (``|`` when values contain commas).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from generation.errors import RequestError
from generation.grammar import find_flag, parse

if TYPE_CHECKING:
    from PIL import Image

    from generation.request import Request

MAX_VALUES = 8  # per axis
MAX_CELLS = 16  # images in one comparison
_NOT_AXES = {"no", "n", "chaos", "ar", "size", "model"}  # would change the grid's shape or meaning


@dataclass(frozen=True, slots=True)
class Axis:
    flag: str  # canonical flag name, e.g. "cfg"
    values: tuple[str, ...]  # as written after the flag

    @property
    def label(self) -> str:
        return "--" + self.flag


@dataclass(frozen=True, slots=True)
class Comparison:
    """The requests of a comparison, row by row (y values), column by column (x values)."""

    base: Request
    x: Axis
    y: Axis | None
    cells: tuple[tuple[Request, ...], ...]  # [row][column]

    @property
    def requests(self) -> list[Request]:
        return [request for row in self.cells for request in row]


def parse_axis(flag: str, values: str) -> Axis:
    """``("cfg", "3, 7, 12")`` → an Axis; errors name what is wrong and what is allowed."""
    spec = find_flag(flag.strip().lstrip("-—–"))
    if spec is None or spec.name in _NOT_AXES or spec.field == "prompt":
        allowed = sorted(f.name for f in _axis_flags())
        raise RequestError("compare.bad_axis", value=flag, allowed=allowed)
    separator = "|" if "|" in values else ","
    items = tuple(v.strip() for v in values.split(separator) if v.strip())
    if spec.kind == "switch":
        raise RequestError("compare.bad_axis", value=flag, allowed=sorted(f.name for f in _axis_flags()))
    if len(items) < 2:
        raise RequestError("compare.too_few_values", flag=spec.flag, example=f"{spec.example}, …")
    if len(items) > MAX_VALUES:
        raise RequestError("compare.too_many_values", flag=spec.flag, count=len(items), limit=MAX_VALUES)
    if len({_norm(v) for v in items}) != len(items):
        raise RequestError("compare.duplicate_values", flag=spec.flag)
    for value in items:  # each value must be valid on its own, with the flag's own message
        _override(spec.name, value)
    return Axis(flag=spec.name, values=items)


_HIRES_PARTS = {"hires-steps": "steps", "strength": "strength"}


def _override(flag: str, value: str) -> Request:
    if flag in _HIRES_PARTS:  # these refine --hires, which the base request must have
        return parse(f"--hires --{flag} {value}", allow_empty_prompt=True)
    return parse(f"--{flag} {value}", allow_empty_prompt=True)


def _apply(request: Request, flag: str, value: str) -> Request:
    override = _override(flag, value)
    part = _HIRES_PARTS.get(flag)
    if part is None:
        return request.merged(override)
    if request.hires is None:
        raise RequestError("compare.needs_hires", flag="--" + flag)
    return replace(request, hires=replace(request.hires, **{part: getattr(override.hires, part)}))


def _axis_flags():
    from generation.grammar import FLAGS

    return [f for f in FLAGS if f.name not in _NOT_AXES and f.kind != "switch"]


def _norm(value: str) -> str:
    return re.sub(r"\s+", " ", value.strip().lower())


def build(base: Request, x: Axis, y: Axis | None = None) -> Comparison:
    """One request per cell: ``base`` (resolved, one image) with each axis value applied.

    The seed stays fixed across the grid; that is the point.  Cells may come out unresolved
    (``--vary-strength`` without a variation seed): the caller resolves them with one fixed
    seed source so that every cell shares it.
    """
    if y is not None and y.flag == x.flag:
        raise RequestError("compare.same_axis", flag="--" + x.flag)
    rows = y.values if y is not None else (None,)
    if len(rows) * len(x.values) > MAX_CELLS:
        raise RequestError("compare.too_many_cells", count=len(rows) * len(x.values), limit=MAX_CELLS)
    single = replace(base, n=None, chaos=None)
    cells = []
    for y_value in rows:
        row = []
        for x_value in x.values:
            request = single
            for axis, value in ((y, y_value), (x, x_value)):
                if axis is not None and value is not None:
                    request = _apply(request, axis.flag, value)
            row.append(request)
        cells.append(tuple(row))
    return Comparison(base=single, x=x, y=y, cells=tuple(cells))


def grid(comparison: Comparison, images: list[Image.Image], *, title: str | None = None) -> Image.Image:
    """The labelled grid of a comparison's images (in ``comparison.requests`` order)."""
    from generation.grid import labelled_grid

    columns = len(comparison.x.values)
    rows = [images[i:i + columns] for i in range(0, len(images), columns)]
    return labelled_grid(
        rows,
        column_labels=[f"{comparison.x.label} {v}" for v in comparison.x.values],
        row_labels=[f"{comparison.y.label} {v}" for v in comparison.y.values] if comparison.y else None,
        title=title,
    )
