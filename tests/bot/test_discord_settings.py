"""``/settings``: a user's defaults — checked like a request, saved in canonical form, layered under
``/imagine`` — unit-tested on the service and end to end through discord.py against the fake Discord."""

from __future__ import annotations

import pytest

from generation.errors import BrushworkError
from generation.grammar import parse
from storage.records import Scope
from tests.bot.harness import TINY

USER, GUILD = 21, 4242


@pytest.fixture
def container(make_container):
    return make_container()


def test_defaults_are_checked_and_saved_in_canonical_form(container):
    preferences = container.preferences
    record = preferences.set_user_defaults(USER, "  --sampler euler_a --STEPS 30 —no blurry, text ")
    assert record.defaults == '--no blurry, text --steps 30 --sampler "Euler a"'
    assert preferences.user_settings(USER).defaults == record.defaults
    # what /imagine plans with: the user's defaults under the typed flags
    plan = container.images.plan_generate("a fox --steps 4", Scope(user_id=USER, guild_id=GUILD))
    assert (plan.request.steps, plan.request.sampler, plan.request.negative_prompt) == (4, "Euler a", "blurry, text")
    assert preferences.reset_user_defaults(USER).defaults == ""


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("--stpes 30", "grammar.unknown_flag_suggest"),
        ("--steps 500", "request.out_of_range"),
        ("a cat --steps 30", "grammar.defaults_flags_only"),
        ("--model nope", "model.unknown"),
        ("--size 8000x8000", "request.size_out_of_range"),
        ("none", "settings.defaults_empty"),
        ("--steps 30 " * 60, "settings.defaults_too_long"),
        ("--image k3x9fq2a --strength 0.5", "settings.no_image_default"),
    ],
)
def test_bad_defaults_say_what_is_wrong(container, text, code):
    with pytest.raises(BrushworkError) as exc:
        container.preferences.set_user_defaults(USER, text)
    assert exc.value.code == code
    assert exc.value.message("en") != exc.value.code and exc.value.message("zh-CN") != exc.value.code
    assert container.preferences.user_settings(USER).defaults == ""


async def test_settings_set_show_reset_end_to_end(brushwork_bot):
    h = brushwork_bot
    w = h.world

    async def reply(user, command, options=None):
        interaction = await h.slash(user, w.general, command, options)
        await h.fake.wait_for_response(interaction)
        assert interaction.original.ephemeral
        return interaction.original.content

    text = await reply(w.wei, "settings set", {"flags": "--sampler euler_a --cfg 4"})
    assert "已保存" in text and '`--cfg 4 --sampler "Euler a"`' in text

    # the defaults apply to /imagine (the typed flags win)
    interaction = await h.imagine(w.wei, w.general, "一只狐狸")
    await h.wait_for_result(interaction)
    with h.store_rows() as uow:
        image = uow.images.history(Scope(user_id=w.wei.id, guild_id=w.guild.id), limit=1)[0]
    typed = parse(f"x {TINY}")
    assert (image.sampler, image.cfg, image.steps, image.width) == ("Euler a", 4.0, typed.steps, typed.width)

    text = await reply(w.alice, "settings set", {"flags": "--stpes 30"})
    assert "--stpes" in text and "--steps" in text  # "Unknown flag --stpes. Did you mean --steps?"
    text = await reply(w.alice, "settings show")
    assert "**Your defaults:** none" in text and "**This server's defaults:** none" in text

    text = await reply(w.wei, "settings show")
    assert '`--cfg 4 --sampler "Euler a"`' in text
    text = await reply(w.wei, "settings reset")
    assert "已清除" in text and "**你的默认参数：**无" in text
