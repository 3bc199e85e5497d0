"""The sampler table: A1111 names ↔ diffusers schedulers.

This module is pure data (no torch import) so the request parser, the help text and
the bot's autocomplete can use it cheaply.  :func:`generation.engine.schedulers.make_scheduler`
turns an entry into a configured diffusers scheduler.

A1111 (≥ 1.9) pairs any sampler with a *schedule type*; so does this table: one line per
sampler says which schedules diffusers can run it with, and :data:`SCHEDULES` says what
each schedule is in diffusers (the mapping diffusers documents for k-diffusion's
schedules).  Canonical names are AUTOMATIC1111's, with the schedule folded into the name
unless it is Automatic ("DPM++ 2M Karras", "Euler a SGM Uniform"); infotext splits them
again ("Sampler: DPM++ 2M, Schedule type: Karras") as A1111 ≥ 1.9 writes them.

A1111 samplers diffusers has no scheduler for (``Restart``, ``DPM fast``, ``DPM adaptive``,
``LCM``…) and schedules it cannot express (``Align Your Steps``, ``KL Optimal``…) are not
here: a request naming one is refused with the list below, and an infotext naming one is
read with that field marked as not reproduced (:mod:`generation.metadata`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from generation.errors import RequestError, echo

AUTOMATIC = "Automatic"


@dataclass(frozen=True, slots=True)
class Schedule:
    """An A1111 schedule type (its ``Schedule type`` label) and the diffusers options that make it."""

    name: str
    options: Mapping[str, object]
    description: str
    aliases: tuple[str, ...] = ()


# diffusers' scheduler overview maps k-diffusion's schedules to these options.
SCHEDULES: tuple[Schedule, ...] = (
    Schedule(AUTOMATIC, MappingProxyType({}), "the model's own timestep spacing"),
    Schedule("Karras", MappingProxyType({"use_karras_sigmas": True}),
             "Karras noise levels: more of the steps spent at low noise, for fine detail", aliases=("ka",)),
    Schedule("Exponential", MappingProxyType({"use_exponential_sigmas": True, "timestep_spacing": "linspace"}),
             "noise levels falling exponentially (A1111's choice for the SDE samplers)", aliases=("exp",)),
    Schedule("Beta", MappingProxyType({"use_beta_sigmas": True, "timestep_spacing": "linspace"}),
             "noise levels from a beta distribution (\"Beta Sampling is All You Need\"; needs scipy)"),
    Schedule("SGM Uniform", MappingProxyType({"timestep_spacing": "trailing"}),
             "evenly spaced timesteps ending at full noise: what few-step (Lightning, Turbo) models expect",
             aliases=("SGMUniform", "sgm_uniform")),
)
_SCHEDULE_BY_NAME = {s.name: s for s in SCHEDULES}


@dataclass(frozen=True, slots=True)
class Sampler:
    name: str  # canonical, e.g. "DPM++ 2M Karras"
    base: str  # A1111 sampler without the schedule, e.g. "DPM++ 2M"
    schedule: str  # one of SCHEDULES' names: "Automatic", "Karras", "Exponential"…
    scheduler_class: str  # diffusers class name
    scheduler_options: Mapping[str, object] = field(default_factory=dict)
    ancestral: bool = False  # draws fresh noise every step (results keep changing with steps)
    description: str = ""
    note: str = ""  # where diffusers' scheduler only approximates A1111's sampler
    aliases: tuple[str, ...] = ()


def _sampler(base: str, cls: str, *, schedules: tuple[str, ...] = (), options: Mapping[str, object] | None = None,
             ancestral: bool = False, description: str = "", note: str = "", aliases: tuple[str, ...] = (),
             descriptions: Mapping[str, str] | None = None, linear_spacing: bool = False) -> tuple[Sampler, ...]:
    """One A1111 sampler: its plain (Automatic) entry, then one entry per extra schedule.

    ``descriptions`` replaces the generated description of a schedule's entry;
    ``linear_spacing``: the class always spaces timesteps linearly (it has no
    ``timestep_spacing`` option), which is what the sigma schedules ask for."""
    entries = []
    for schedule_name in (AUTOMATIC, *schedules):
        schedule = _SCHEDULE_BY_NAME[schedule_name]
        schedule_options = dict(schedule.options)
        if linear_spacing and schedule_options.get("timestep_spacing") == "linspace":
            del schedule_options["timestep_spacing"]
        automatic = schedule_name == AUTOMATIC
        text = (descriptions or {}).get(schedule_name) or (
            description if automatic else f"{base} on the {schedule_name} schedule")
        entries.append(Sampler(
            name=base if automatic else f"{base} {schedule_name}",
            base=base,
            schedule=schedule_name,
            scheduler_class=cls,
            scheduler_options=MappingProxyType({**(options or {}), **schedule_options}),
            ancestral=ancestral,
            description=text,
            note=note if automatic or not note else f"see {base}",
            aliases=aliases if automatic else (),
        ))
    return tuple(entries)


_SDE = {"algorithm_type": "sde-dpmsolver++"}
_ALL = ("Karras", "Exponential", "Beta", "SGM Uniform")  # every schedule diffusers' k-diffusion ports take
_SIGMAS = ("Karras", "Exponential", "Beta")  # classes with a sigma schedule but a fixed timestep spacing

SAMPLERS: tuple[Sampler, ...] = (
    *_sampler("Euler a", "EulerAncestralDiscreteScheduler", schedules=("SGM Uniform",), ancestral=True,
              description="fast, creative; the image keeps changing as steps grow (20–30 steps)",
              aliases=("euler_ancestral",)),
    *_sampler("Euler", "EulerDiscreteScheduler", schedules=_ALL,
              description="simple and predictable; converges with more steps (20–40)"),
    *_sampler("LMS", "LMSDiscreteScheduler", schedules=_ALL, description="linear multistep; smooth, needs 30+ steps"),
    *_sampler("Heun", "HeunDiscreteScheduler", schedules=_ALL,
              description="second order, two model calls per step: precise but twice as slow"),
    *_sampler("DPM2", "KDPM2DiscreteScheduler", schedules=_ALL,
              description="second order DPM solver, two calls per step", aliases=("dpm_2",)),
    *_sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", schedules=_ALL, ancestral=True,
              description="ancestral DPM2: varied results", aliases=("dpm_2_ancestral",)),
    *_sampler("DPM++ 2S a", "DPMSolverSinglestepScheduler", schedules=_SIGMAS, linear_spacing=True,
              description="single-step DPM-Solver++ (2nd order)",
              note="diffusers has no ancestral single-step DPM-Solver++: this is DPMSolverSinglestepScheduler, "
                   "the closest scheduler diffusers recommends; results are deterministic per seed, not ancestral",
              aliases=("dpmpp_2s_ancestral",)),
    *_sampler("DPM++ 2M", "DPMSolverMultistepScheduler", schedules=_ALL,
              description="the all-rounder: sharp results in 20–30 steps",
              descriptions={"Karras": "DPM++ 2M on the Karras schedule: the most popular choice (20–30 steps)"}),
    *_sampler("DPM++ SDE", "DPMSolverSDEScheduler", schedules=_ALL, ancestral=True,
              description="stochastic, very detailed; two calls per step (10–20 steps)"),
    *_sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", schedules=_ALL, options=_SDE, ancestral=True,
              description="multistep with stochastic noise: detailed, varied"),
    *_sampler("DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler", schedules=_ALL,
              options={**_SDE, "solver_type": "heun"}, ancestral=True,
              description="DPM++ 2M SDE with a Heun corrector"),
    *_sampler("DPM++ 3M SDE", "DPMSolverMultistepScheduler", schedules=_ALL,
              options={**_SDE, "solver_order": 3}, ancestral=True,
              description="third order multistep with stochastic noise: fine detail at 30+ steps",
              note="A1111 runs it on the Exponential schedule when the schedule is Automatic: "
                   "write DPM++ 3M SDE Exponential to match"),
    *_sampler("DDIM", "DDIMScheduler", schedules=("SGM Uniform",),
              description="the original fast sampler; deterministic (20–50 steps)"),
    *_sampler("PLMS", "PNDMScheduler", schedules=("SGM Uniform",), description="pseudo linear multistep (50 steps)",
              aliases=("pndm",)),
    *_sampler("UniPC", "UniPCMultistepScheduler", schedules=_ALL,
              description="fast predictor-corrector: good in 10–20 steps", aliases=("uni_pc",)),
)


def _key(text: str) -> str:
    """Normalise a spelling: case, spaces, '_' and '-' do not matter; '++' is 'pp'."""
    key = text.strip().lower().replace("++", "pp").replace("+", "p")
    key = re.sub(r"[\s_\-]+", "", key)
    return key


def _build_index() -> Mapping[str, Sampler]:
    index: dict[str, Sampler] = {}
    plain = {s.base: s for s in SAMPLERS if s.schedule == AUTOMATIC}
    for sampler in SAMPLERS:
        spellings = {sampler.name, *sampler.aliases}
        if sampler.schedule != AUTOMATIC:
            # every spelling of the base sampler also works with a schedule suffix ("euler_a sgm_uniform")
            base = plain[sampler.base]
            schedule = _SCHEDULE_BY_NAME[sampler.schedule]
            spellings |= {f"{alias} {suffix}" for alias in (base.name, *base.aliases)
                          for suffix in (schedule.name, *schedule.aliases)}
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


def schedule_names() -> list[str]:
    return [s.name for s in SCHEDULES]


def sampler_summary() -> list[str]:
    """Every sampler once, with the schedules it also takes: "Euler a (+ SGM Uniform)".

    What an error lists: the full names are several times longer than a chat message."""
    out: list[str] = []
    for sampler in SAMPLERS:
        if sampler.schedule != AUTOMATIC:
            continue
        extra = [s.schedule for s in SAMPLERS if s.base == sampler.base and s.schedule != AUTOMATIC]
        out.append(f"{sampler.name} (+ {'/'.join(extra)})" if extra else sampler.name)
    return out


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
        known = sampler_summary()
        if suggestion:
            raise RequestError("request.unknown_sampler", value=echo(text), known=known, suggestion=suggestion)
        raise RequestError("request.unknown_sampler_plain", value=echo(text), known=known)
    return sampler


def find_schedule(text: str) -> Schedule | None:
    """A schedule type by any accepted spelling (``None`` when diffusers has no equivalent)."""
    key = _key(text)
    return next((s for s in SCHEDULES if key in {_key(n) for n in (s.name, *s.aliases)}), None)


def from_infotext(sampler: str, schedule: str | None = None) -> Sampler:
    """A1111 writes "Sampler: DPM++ 2M, Schedule type: Karras" (≥1.9) or "DPM++ 2M Karras" (older).

    Raises a RequestError when diffusers has no such sampler, or cannot run it on that
    schedule (A1111 takes any pair; see the table for the pairs diffusers can express)."""
    found = find_sampler(sampler)
    if schedule is None or not schedule.strip():
        return found
    wanted = find_schedule(schedule)
    if wanted is None or (found.schedule != AUTOMATIC and found.schedule != wanted.name
                          and wanted.name != AUTOMATIC):
        raise RequestError("request.unknown_sampler_plain", value=f"{sampler} {schedule}".strip(),
                           known=sampler_summary())
    if wanted.name == AUTOMATIC or found.schedule == wanted.name:
        return found
    return find_sampler(f"{found.base} {wanted.name}")
