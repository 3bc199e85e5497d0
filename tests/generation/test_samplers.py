"""The sampler table: A1111's samplers and schedule types, as diffusers runs them.

The table is pure data; the tests at the end run the new schedules on the tiny model
(real pixels, CPU): each schedule changes the picture, and the same seed repeats it.
"""

from __future__ import annotations

import numpy as np
import pytest

from generation.engine import make_scheduler
from generation.errors import RequestError
from generation.profiles import PROFILES
from generation.request import Request, resolve
from generation.samplers import SAMPLERS, SCHEDULES, find_sampler, from_infotext, sampler_summary


@pytest.mark.parametrize(("spelling", "name"), [
    ("DPM++ 3M SDE", "DPM++ 3M SDE"),
    ("dpmpp_3m_sde_exponential", "DPM++ 3M SDE Exponential"),
    ("k_dpmpp_3m_sde_ka", "DPM++ 3M SDE Karras"),  # A1111's old aliases: _ka is Karras, _exp Exponential
    ("k_dpmpp_2m_sde_heun_exp", "DPM++ 2M SDE Heun Exponential"),
    ("euler_a sgm_uniform", "Euler a SGM Uniform"),
    ("Euler a SGMUniform", "Euler a SGM Uniform"),
    ("DPM++ 2M Beta", "DPM++ 2M Beta"),
])
def test_spellings(spelling, name):
    assert find_sampler(spelling).name == name


@pytest.mark.parametrize(("sampler", "schedule", "name"), [
    ("DPM++ 3M SDE", "Exponential", "DPM++ 3M SDE Exponential"),
    ("Euler a", "SGM Uniform", "Euler a SGM Uniform"),
    ("DPM++ 2M", "Beta", "DPM++ 2M Beta"),
    ("DPM++ 2M", "Automatic", "DPM++ 2M"),
    ("DPM++ 2M Karras", "Karras", "DPM++ 2M Karras"),  # old name and new key both written
    ("UniPC", None, "UniPC"),
])
def test_infotext_pairs(sampler, schedule, name):
    assert from_infotext(sampler, schedule).name == name


@pytest.mark.parametrize(("sampler", "schedule"), [
    ("Restart", None), ("DPM fast", "Automatic"), ("Euler", "Align Your Steps"), ("DDIM", "Karras"),
    ("Euler a", "Karras"), ("DPM++ 2M Karras", "Exponential"),
])
def test_pairs_diffusers_cannot_run_are_refused_with_the_list(sampler, schedule):
    with pytest.raises(RequestError) as error:
        from_infotext(sampler, schedule)
    assert "DPM++ 3M SDE (+ Karras/Exponential/Beta/SGM Uniform)" in error.value.message()


def test_the_refusal_lists_each_sampler_once_with_its_schedules():
    summary = sampler_summary()
    assert len(summary) == len({s.base for s in SAMPLERS})
    assert "Euler a (+ SGM Uniform)" in summary and "DPM++ 2S a (+ Karras/Exponential/Beta)" in summary
    with pytest.raises(RequestError) as error:
        find_sampler("Restart")
    assert len(error.value.message()) < 1000  # fits a chat message with room to spare


def test_every_entry_carries_its_schedule_options():
    schedules = {s.name: s for s in SCHEDULES}
    assert len({s.name for s in SAMPLERS}) == len(SAMPLERS)
    for sampler in SAMPLERS:
        wanted = dict(schedules[sampler.schedule].options)
        if sampler.scheduler_class == "DPMSolverSinglestepScheduler":
            wanted.pop("timestep_spacing", None)  # it always spaces linearly
        assert wanted.items() <= dict(sampler.scheduler_options).items(), sampler.name
    three = find_sampler("DPM++ 3M SDE")
    assert three.scheduler_options == {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}
    assert find_sampler("Euler a SGM Uniform").scheduler_options == {"timestep_spacing": "trailing"}
    assert find_sampler("Euler Exponential").scheduler_options == {"use_exponential_sigmas": True,
                                                                     "timestep_spacing": "linspace"}
    assert find_sampler("Euler Beta").scheduler_options["use_beta_sigmas"] is True


# ---------------------------------------------------------------------- on the tiny model


def _pixels(engine, sampler: str, seed: int = 4321) -> np.ndarray:
    # 6 steps: diffusers' multistep solvers drop to lower orders on the first and last two
    request = Request(prompt="a lighthouse at dusk", width=64, height=64, steps=6, seed=seed, sampler=sampler)
    resolved, _ = resolve(request, PROFILES["tiny"], model="tiny")
    return np.asarray(engine.generate(resolved.images())[0].image, dtype=np.int16)


@pytest.mark.slow
def test_new_schedules_and_samplers_generate_and_reproduce(tiny_engine):
    names = ["Euler", "Euler Exponential", "Euler Beta", "Euler SGM Uniform",
             "DPM++ 3M SDE", "DPM++ 3M SDE Exponential", "DPM++ 2M SDE"]
    images = {name: _pixels(tiny_engine, name) for name in names}
    for name, image in images.items():
        assert image.std() > 5, name  # a picture, not a flat or NaN image
        assert np.array_equal(image, _pixels(tiny_engine, name)), f"{name}: same seed, other pixels"
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert np.abs(images[first] - images[second]).max() > 0, f"{first} and {second} drew the same image"


@pytest.mark.slow
def test_the_schedules_reach_the_scheduler(tiny_engine):
    model = tiny_engine.load("tiny")
    trailing = make_scheduler("Euler a SGM Uniform", model.scheduler_config)
    trailing.set_timesteps(4)
    assert int(trailing.timesteps[0]) == model.scheduler_config["num_train_timesteps"] - 1  # trailing: starts at T
    exponential = make_scheduler("DPM++ 3M SDE Exponential", model.scheduler_config)
    assert exponential.config.solver_order == 3 and exponential.config.use_exponential_sigmas
