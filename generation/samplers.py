"""The sampler table: A1111 names ↔ diffusers schedulers.

This module is pure data (no torch import) so the request parser, the help text and
the bot's autocomplete can use it cheaply.  :func:`generation.engine.schedulers.make_scheduler`
turns an entry into a configured diffusers scheduler.

Canonical names are AUTOMATIC1111's, with the schedule folded into the name when it is
Karras ("DPM++ 2M Karras"); infotext splits them again ("Sampler: DPM++ 2M, Schedule
type: Karras") as A1111 ≥ 1.9 writes them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from generation.errors import RequestError


@dataclass(frozen=True, slots=True)
class Sampler:
    name: str  # canonical, e.g. "DPM++ 2M Karras"
    base: str  # A1111 sampler without the schedule, e.g. "DPM++ 2M"
    schedule: str  # "Automatic" or "Karras"
    scheduler_class: str  # diffusers class name
    scheduler_options: Mapping[str, object] = field(default_factory=dict)
    ancestral: bool = False  # draws fresh noise every step (results keep changing with steps)
    description: str = ""
    note: str = ""  # where diffusers' scheduler only approximates A1111's sampler
    aliases: tuple[str, ...] = ()


def _entry(base, cls, *, karras=False, options=None, ancestral=False, description="", note="", aliases=()):
    opts = dict(options or {})
    if karras:
        opts["use_karras_sigmas"] = True
    return Sampler(
        name=f"{base} Karras" if karras else base,
        base=base,
        schedule="Karras" if karras else "Automatic",
        scheduler_class=cls,
        scheduler_options=MappingProxyType(opts),
        ancestral=ancestral,
        description=description,
        note=note,
        aliases=tuple(aliases),
    )


_SDE = {"algorithm_type": "sde-dpmsolver++"}

SAMPLERS: tuple[Sampler, ...] = (
    _entry("Euler a", "EulerAncestralDiscreteScheduler", ancestral=True,
           description="fast, creative; the image keeps changing as steps grow (20–30 steps)",
           aliases=("euler_ancestral",)),
    _entry("Euler", "EulerDiscreteScheduler",
           description="simple and predictable; converges with more steps (20–40)"),
    _entry("Euler", "EulerDiscreteScheduler", karras=True, description="Euler on the Karras noise schedule"),
    _entry("LMS", "LMSDiscreteScheduler", description="linear multistep; smooth, needs 30+ steps"),
    _entry("LMS", "LMSDiscreteScheduler", karras=True, description="LMS on the Karras noise schedule"),
    _entry("Heun", "HeunDiscreteScheduler",
           description="second order, two model calls per step: precise but twice as slow"),
    _entry("Heun", "HeunDiscreteScheduler", karras=True, description="Heun on the Karras noise schedule"),
    _entry("DPM2", "KDPM2DiscreteScheduler", description="second order DPM solver, two calls per step",
           aliases=("dpm_2",)),
    _entry("DPM2", "KDPM2DiscreteScheduler", karras=True, description="DPM2 on the Karras schedule"),
    _entry("DPM2 a", "KDPM2AncestralDiscreteScheduler", ancestral=True,
           description="ancestral DPM2: varied results", aliases=("dpm_2_ancestral",)),
    _entry("DPM2 a", "KDPM2AncestralDiscreteScheduler", karras=True, ancestral=True,
           description="ancestral DPM2 on the Karras schedule"),
    _entry("DPM++ 2S a", "DPMSolverSinglestepScheduler",
           description="single-step DPM-Solver++ (2nd order)",
           note="diffusers has no ancestral single-step DPM-Solver++: this is DPMSolverSinglestepScheduler, "
                "the closest scheduler diffusers recommends; results are deterministic per seed, not ancestral",
           aliases=("dpmpp_2s_ancestral",)),
    _entry("DPM++ 2S a", "DPMSolverSinglestepScheduler", karras=True,
           description="single-step DPM-Solver++ on the Karras schedule",
           note="approximation of A1111's ancestral sampler, see DPM++ 2S a"),
    _entry("DPM++ 2M", "DPMSolverMultistepScheduler",
           description="the all-rounder: sharp results in 20–30 steps"),
    _entry("DPM++ 2M", "DPMSolverMultistepScheduler", karras=True,
           description="DPM++ 2M on the Karras schedule: the most popular choice (20–30 steps)"),
    _entry("DPM++ SDE", "DPMSolverSDEScheduler", ancestral=True,
           description="stochastic, very detailed; two calls per step (10–20 steps)"),
    _entry("DPM++ SDE", "DPMSolverSDEScheduler", karras=True, ancestral=True,
           description="DPM++ SDE on the Karras schedule"),
    _entry("DPM++ 2M SDE", "DPMSolverMultistepScheduler", options=_SDE, ancestral=True,
           description="multistep with stochastic noise: detailed, varied"),
    _entry("DPM++ 2M SDE", "DPMSolverMultistepScheduler", options=_SDE, karras=True, ancestral=True,
           description="DPM++ 2M SDE on the Karras schedule"),
    _entry("DDIM", "DDIMScheduler", description="the original fast sampler; deterministic (20–50 steps)"),
    _entry("PLMS", "PNDMScheduler", description="pseudo linear multistep (50 steps)", aliases=("pndm",)),
    _entry("UniPC", "UniPCMultistepScheduler", description="fast predictor-corrector: good in 10–20 steps",
           aliases=("uni_pc",)),
)


def _key(text: str) -> str:
    """Normalise a spelling: case, spaces, '_' and '-' do not matter; '++' is 'pp'."""
    key = text.strip().lower().replace("++", "pp").replace("+", "p")
    key = re.sub(r"[\s_\-]+", "", key)
    return key


def _build_index() -> Mapping[str, Sampler]:
    index: dict[str, Sampler] = {}
    for sampler in SAMPLERS:
        spellings = {sampler.name, *sampler.aliases}
        if sampler.schedule == "Karras":
            # every spelling of the base sampler also works with a "karras" suffix
            base = next(s for s in SAMPLERS if s.name == sampler.base)
            spellings |= {f"{alias} karras" for alias in (base.name, *base.aliases)}
        for spelling in spellings:
            index[_key(spelling)] = sampler
    # old k-diffusion spellings ("k_euler_a", "k_dpmpp_2m_karras") are the same names with a "k" in front
    for key, sampler in list(index.items()):
        if not key.startswith("k"):
            index.setdefault("k" + key, sampler)
    return MappingProxyType(index)


_INDEX = _build_index()
DEFAULT_SAMPLER = "DPM++ 2M Karras"


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def find_sampler(text: str) -> Sampler:
    """Look a sampler up by any accepted spelling, or raise a RequestError listing the known ones."""
    sampler = _INDEX.get(_key(text))
    if sampler is None:
        from difflib import get_close_matches

        names = sampler_names()
        close = get_close_matches(text, names, n=1, cutoff=0.5) or get_close_matches(
            _key(text), [_key(n) for n in names], n=1, cutoff=0.6
        )
        suggestion = ""
        if close:
            match = close[0]
            suggestion = match if match in names else next(n for n in names if _key(n) == match)
        if suggestion:
            raise RequestError("request.unknown_sampler", value=text, known=names, suggestion=suggestion)
        raise RequestError("request.unknown_sampler_plain", value=text, known=names)
    return sampler


def from_infotext(sampler: str, schedule: str | None = None) -> Sampler:
    """A1111 writes "Sampler: DPM++ 2M, Schedule type: Karras" (≥1.9) or "DPM++ 2M Karras" (older)."""
    if schedule and schedule.strip().lower() == "karras" and not sampler.lower().endswith("karras"):
        sampler = f"{sampler} Karras"
    return find_sampler(sampler)
