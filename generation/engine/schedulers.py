"""From an A1111 sampler name to a configured diffusers scheduler.

The table in :mod:`generation.samplers` is pure data; here it meets diffusers.  Each
call makes a *fresh* scheduler from the model's own scheduler config (betas, timestep
spacing, prediction type) plus the sampler's options: schedulers keep per-run state, so
one is never shared between the base and the hires pass, or between two calls.

``from_config`` silently drops options a class does not know, which would turn
"DPM++ 2M Karras" into plain "DPM++ 2M" without a word; :func:`make_scheduler` checks every
option against the class's constructor first and refuses instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from generation.errors import ModelError
from generation.samplers import Sampler, find_sampler


@cache
def scheduler_class(class_name: str) -> type:
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if cls is None:
        raise ModelError("engine.sampler_unsupported", sampler=class_name, option="class", cls=class_name)
    return cls


@cache
def _init_parameters(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.__init__).parameters)


def check_sampler(sampler: Sampler) -> type:
    """The scheduler class of ``sampler``, after checking it accepts every option we pass."""
    cls = scheduler_class(sampler.scheduler_class)
    accepted = _init_parameters(cls)
    for option in sampler.scheduler_options:
        if option not in accepted:
            raise ModelError("engine.sampler_unsupported", sampler=sampler.name, option=option,
                             cls=sampler.scheduler_class)
    return cls


def uses_brownian_noise(sampler_name: str) -> bool:
    """Samplers whose noise comes from a seeded Brownian tree instead of the generators."""
    cls = check_sampler(find_sampler(sampler_name))
    return "noise_sampler_seed" in _init_parameters(cls)


def make_scheduler(sampler_name: str, base_config: Mapping[str, Any], *,
                   noise_seeds: Sequence[int] | None = None) -> Any:
    """A new scheduler for ``sampler_name`` configured from the model's ``base_config``.

    ``noise_seeds`` (one per image) seeds the Brownian tree of the SDE samplers, which draw
    their noise from it rather than from the generators: one tree per image keeps each
    image's noise independent of what else is in the batch.
    """
    sampler = find_sampler(sampler_name)
    cls = check_sampler(sampler)
    options: dict[str, Any] = dict(sampler.scheduler_options)
    if noise_seeds is not None and "noise_sampler_seed" in _init_parameters(cls):
        options["noise_sampler_seed"] = [int(s) for s in noise_seeds]
    config = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    from generation.models._quiet import quiet_libraries

    try:
        with quiet_libraries():  # "config attributes ... will be ignored": expected across classes
            return cls.from_config(config, **options)
    except ImportError as exc:  # the Beta schedule needs scipy, which diffusers does not require
        raise ModelError("engine.sampler_needs_package", sampler=sampler.name,
                         package=getattr(exc, "name", None) or _package_named(str(exc))) from None


def _package_named(message: str) -> str:
    """diffusers' "Make sure to install scipy if you want to use beta sigmas." names the package."""
    words = message.split()
    return words[words.index("install") + 1] if "install" in words[:-1] else "scipy"
