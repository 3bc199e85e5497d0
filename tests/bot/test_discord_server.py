"""``/server settings``: a server's defaults, allowed models, limits, channels and safety policy —
checked values, Manage Server on every call, one server's settings never used in another — on the
service (:mod:`bot.preferences`, :mod:`bot.guild_policy`) and end to end against the fake Discord."""

from __future__ import annotations

import pytest

from bot.guild_policy import channel_allowed, check_channel, guard_request
from generation.errors import BrushworkError
from generation.grammar import parse
from storage.records import GuildSettingsRecord, Scope
from tests.fakediscord import permissions

GUILD, OTHER = 4242, 5353


@pytest.fixture
def container(make_container):
    return make_container(queue_max_per_user=5, queue_daily_images=200)


def error_code(call, *args, **kwargs) -> str:
    with pytest.raises(BrushworkError) as exc:
        call(*args, **kwargs)
    assert exc.value.message("en") != exc.value.code and exc.value.message("zh-CN") != exc.value.code
    return exc.value.code


# ---------------------------------------------------------------------- the policy (pure)


def test_channel_allow_list_follows_threads_and_ignores_direct_messages():
    open_server = GuildSettingsRecord(guild_id=GUILD)
    listed = GuildSettingsRecord(guild_id=GUILD, channels={"allowed": ["10", "11"]})
    assert channel_allowed(open_server, 99) and channel_allowed(None, 99)
    assert channel_allowed(listed, 10) and not channel_allowed(listed, 12)
    assert channel_allowed(listed, 500, parent_id=11)  # a thread of an allowed channel
    with pytest.raises(BrushworkError) as exc:
        check_channel(listed, 12)
    assert exc.value.code == "server.channel_not_allowed" and "<#10>" in exc.value.message()


def test_guard_applies_models_and_safety_outside_age_restricted_channels():
    record = GuildSettingsRecord(guild_id=GUILD, allowed_models=["tiny"],
                                 safety={"banned_words": ["gore"], "forced_negative": "nsfw"})
    request = parse("a quiet lake --model tiny --no fog")
    assert guard_request(record, request, age_restricted=False).negative_prompt == "fog, nsfw"
    assert guard_request(record, request, age_restricted=True).negative_prompt == "fog"
    assert error_code(guard_request, record, parse("(GORE:1.3) scene --model tiny"), age_restricted=False) \
        == "safety.banned_word"
    assert error_code(guard_request, record, parse("a lake --model sd15"), age_restricted=True) \
        == "server.model_not_allowed"


# ---------------------------------------------------------------------- the service


def test_server_settings_are_checked_saved_and_kept_per_server(container):
    preferences = container.preferences
    assert preferences.set_guild_defaults(GUILD, "--steps 3 --sampler euler_a").defaults == '--steps 3 --sampler "Euler a"'
    assert preferences.set_guild_models(GUILD, "TINY, sd15，tiny").allowed_models == ["tiny", "sd15"]
    assert error_code(preferences.set_guild_models, GUILD, "tiny, dreamshaper") == "server.unknown_models"
    assert error_code(preferences.set_guild_defaults, GUILD, "--model sdxl") == "server.model_not_allowed"
    preferences.set_guild_defaults(GUILD, "--model sd15")
    assert error_code(preferences.set_guild_models, GUILD, "tiny") == "server.models_exclude_default"
    assert preferences.set_guild_defaults(GUILD, "none").defaults == ""
    assert preferences.set_guild_models(GUILD, "all").allowed_models is None
    # another server sees none of it, and plans with none of it
    preferences.set_guild_defaults(GUILD, "--cfg 3")
    assert preferences.guild_settings(OTHER).defaults == ""
    assert container.images.plan_generate("x", Scope(user_id=1, guild_id=GUILD)).request.cfg == 3
    assert container.images.plan_generate("x", Scope(user_id=1, guild_id=OTHER)).request.cfg != 3


def test_limits_tighten_the_operators_and_apply_at_once(container):
    preferences = container.preferences
    assert container.limits_for(GUILD).per_user == 5
    record = preferences.set_guild_limits(GUILD, queued_per_user=2, daily_images=50, daily_gpu_seconds=600)
    assert record.limits == {"queued_per_user": 2, "daily_images": 50, "daily_gpu_seconds": 600}
    limits = container.limits_for(GUILD)  # no 30-second cache delay
    assert (limits.per_user, limits.daily_images, limits.daily_gpu_seconds) == (2, 50, 600)
    assert container.limits_for(OTHER).per_user == 5
    assert error_code(preferences.set_guild_limits, GUILD, queued_per_user=6) == "server.limit_above_operator"
    assert error_code(preferences.set_guild_limits, GUILD, daily_images=201) == "server.limit_above_operator"
    assert error_code(preferences.set_guild_limits, GUILD, queued_per_guild=0) == "server.limit_out_of_range"
    assert error_code(preferences.set_guild_limits, GUILD) == "server.limits_nothing"
    assert preferences.set_guild_limits(GUILD, daily_gpu_seconds=0).limits == {"queued_per_user": 2,
                                                                                "daily_images": 50}
    values = {v.key: v for v in preferences.limit_values(preferences.guild_settings(GUILD))}
    assert (values["daily_images"].effective, values["daily_gpu_seconds"].effective) == (50, None)
    assert preferences.set_guild_limits(GUILD, reset=True).limits == {}
    assert container.limits_for(GUILD).daily_images == 200


def test_channels_and_safety(container):
    preferences = container.preferences
    assert preferences.set_guild_channels(GUILD, add=[10]).channels == {"allowed": ["10"]}
    assert preferences.set_guild_channels(GUILD, add=[11, 10]).channels == {"allowed": ["10", "11"]}
    assert error_code(preferences.set_guild_channels, GUILD, remove=[12]) == "server.channel_not_listed"
    assert preferences.set_guild_channels(GUILD, remove=[10]).channels == {"allowed": ["11"]}
    assert preferences.set_guild_channels(GUILD, clear=True).channels == {"allowed": []}
    assert error_code(preferences.set_guild_channels, GUILD) == "server.channels_nothing"

    safety = preferences.set_guild_safety(GUILD, add_words="Gore, 裸体、 NSFW", forced_negative="lowres",
                                          classifier=True).safety
    assert safety["banned_words"] == ["gore", "裸体", "nsfw"] and safety["forced_negative"] == "lowres"
    assert safety["classify_images"] is True
    safety = preferences.set_guild_safety(GUILD, remove_words="GORE").safety
    assert safety["banned_words"] == ["裸体", "nsfw"] and safety["classify_images"] is True
    assert error_code(preferences.set_guild_safety, GUILD, remove_words="blood") == "server.words_not_listed"
    assert error_code(preferences.set_guild_safety, GUILD, forced_negative="--steps 3") == "server.negative_has_flags"
    assert error_code(preferences.set_guild_safety, GUILD, add_words="x" * 65) == "safety.word_too_long"
    assert error_code(preferences.set_guild_safety, GUILD) == "server.safety_nothing"
    safety = preferences.set_guild_safety(GUILD, clear_words=True, forced_negative="none").safety
    assert safety["banned_words"] == [] and safety["forced_negative"] == ""


# ---------------------------------------------------------------------- end to end


async def test_server_settings_end_to_end(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake

    async def reply(user, command, options=None, *, channel=None, **kwargs):
        interaction = await h.slash(user, channel or w.general, command, options, **kwargs)
        await fake.wait_for_response(interaction)
        assert interaction.original.ephemeral
        return interaction.original

    # hidden by default from members without Manage Server, and only in servers
    schema = fake.command("server")
    assert int(schema["default_member_permissions"]) == permissions.MANAGE_GUILD
    assert schema.get("dm_permission") is False or schema.get("contexts") == [0]

    text = (await reply(w.admin, "server settings defaults", {"flags": "--cfg 5 --sampler euler_a"})).content
    assert text.startswith("✅ Saved. Server defaults:") and '`--cfg 5 --sampler "Euler a"`' in text
    text = (await reply(w.admin, "server settings models", {"names": "tiny"})).content
    assert "`tiny`" in text
    text = (await reply(w.admin, "server settings limits", {"per_user": 2, "daily_images": 40})).content
    assert "`per_user`: **2** (bot default: 5)" in text and "`daily_images`: **40**" in text
    assert h.container.limits_for(w.guild.id).per_user == 2
    text = (await reply(w.admin, "server settings channels", {"add": w.nsfw})).content
    assert w.nsfw.mention in text
    text = (await reply(w.admin, "server settings safety", {"add_words": "gore, blood",
                                                          "forced_negative": "lowres"})).content
    assert "`gore`, `blood`" in text and "`lowres`" in text

    # a mistake: what was wrong and what is allowed
    text = (await reply(w.admin, "server settings limits", {"per_user": 9})).content
    assert "at most 5" in text
    text = (await reply(w.admin, "server settings models", {"names": "tiny, dreamshaper"})).content
    assert "dreamshaper" in text and "sd15" in text

    # show: everything, in the caller's language
    message = await reply(w.admin, "server settings show")
    fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
    assert fields["Allowed models"] == "`tiny`" and fields["Channels for generation"] == w.nsfw.mention
    assert "`gore`" in fields["Safety policy"]

    # Manage Server is checked on every call, whatever the command's visibility says
    text = (await reply(w.alice, "server settings defaults", {"flags": "--steps 1"}, bypass_visibility=True)).content
    assert "Manage Server" in text
    text = (await reply(w.wei, "server settings show", bypass_visibility=True)).content
    assert "管理服务器" in text
    assert h.container.preferences.guild_settings(w.guild.id).defaults == '--cfg 5 --sampler "Euler a"'

    # autocomplete: the registry's models, completing the last item of the list
    choices = await fake.autocomplete(w.admin, w.general, "server settings models", {"names": "tiny, s"},
                                      focused="names")
    assert [c["value"] for c in choices] == ["tiny, sd15", "tiny, sdxl"]

    # one server's settings are never shown or used in another
    other = fake.add_guild("Other Server")
    room = fake.add_channel(other, "lobby")
    boss = fake.add_role(other, "Boss", permissions=permissions.MANAGE_GUILD)
    fake.add_member(other, w.admin, roles=[boss])
    await fake.wait_until(lambda: h.bot.get_guild(other.id) is not None)
    message = await reply(w.admin, "server settings show", channel=room)
    fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
    assert fields["Allowed models"] == "every model" and "none" in fields["Default flags"]
    assert fields["Channels for generation"] == "every channel" and "gore" not in fields["Safety policy"]
