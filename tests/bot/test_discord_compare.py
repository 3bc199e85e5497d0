"""``/compare`` end to end: ephemeral, explained refusals (axes, the channel allow-list, the server's
safety policy), then a public acknowledgement, progress, and the labelled grid with each cell's id —
one job in the shared queue, cancellable from its message."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.jobs import compare_of
from bot.services import compare_grid
from generation.queue import JobState
from storage.records import Scope
from tests.bot.harness import RESULT_TIMEOUT, TINY


@pytest.fixture
def bot_settings():
    return {}


def has_grid(message) -> bool:
    return any(a.filename.startswith("compare-") for a in message.attachments)


async def test_compare_draws_a_labelled_grid_of_stored_cells(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    interaction = await h.slash(w.alice, w.general, "compare", {
        "prompt": f"a lighthouse at dusk --seed 42 {TINY}", "vary": "cfg", "values": "3, 7, 12",
        "vary2": "steps", "values2": "2, 3"})
    response = await fake.wait_for_response(interaction)
    message = interaction.original
    assert response.type == 4 and not message.ephemeral  # shared: everyone learns from it
    assert message.content.startswith("🧪 Comparing `--cfg` 3 · 7 · 12 × `--steps` 2 · 3 on **a lighthouse at dusk**")
    assert "seed 42 · 6 images" in message.content
    await fake.wait_until(lambda: has_grid(message), timeout=RESULT_TIMEOUT, description="the grid")

    grid = message.attachments[0]
    assert grid.filename.endswith(".png") and message.components == []
    with Image.open(io.BytesIO(grid.data)) as image:
        assert image.width > 3 * 64 and image.height > 2 * 64
    with h.store_rows() as uow:
        cells = uow.images.history(Scope(user_id=w.alice.id, guild_id=w.guild.id), limit=10)[::-1]
    assert len(cells) == 6 and {c.seed for c in cells} == {42}
    assert [(c.steps, c.cfg) for c in cells] == [(2, 3), (2, 7), (2, 12), (3, 3), (3, 7), (3, 12)]
    lines = message.content.splitlines()
    assert lines[0] == "🧪 **a lighthouse at dusk** · seed 42 · 64×64 · tiny"
    assert lines[1] == ("**--steps 2**: " + " · ".join(
        f"`--cfg {v}` → `{c.public_id}`" for v, c in zip(("3", "7", "12"), cells[:3], strict=True)))
    assert f"`/info {cells[0].public_id}`" in lines[-1]

    def attached() -> bool:  # the message is recorded on every cell (links, /history, "Show settings")
        with h.store_rows() as uow:
            return len(uow.images.by_message(message.id, Scope(user_id=w.alice.id, guild_id=w.guild.id))) == 6

    await fake.wait_until(attached, description="the cells attached to the message")

    # one job; the grid is exactly the one drawn from its stored cells, in order
    with h.store_rows() as uow:
        job = uow.jobs.get(cells[0].job_public_id, Scope.local_operator())
    assert job.result_image_ids == [c.public_id for c in cells] and job.images == 6
    plan = compare_of(job.request)
    assert compare_grid(plan, [h.container.store.absolute(c.file_path) for c in cells]) == grid.data


async def test_compare_refusals_are_ephemeral_and_say_what_is_allowed(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake

    async def refused(user, options, channel=None):
        interaction = await h.slash(user, channel or w.general, "compare", options)
        await fake.wait_for_response(interaction)
        assert interaction.original.ephemeral
        return interaction.original.content

    text = await refused(w.alice, {"prompt": f"a fox {TINY}", "vary": "cfg", "values": "3, 99"})
    assert "--cfg 99 is out of range: use 1–30." in text
    text = await refused(w.wei, {"prompt": f"一只狐狸 {TINY} --n 2", "vary": "cfg", "values": "3, 7"})
    assert "不能使用 `--n`" in text
    text = await refused(w.alice, {"prompt": f"a fox {TINY}", "vary": "cfg", "values": "3, 7", "vary2": "steps"})
    assert "`vary2` and `values2`" in text

    preferences = h.container.preferences
    preferences.set_guild_channels(w.guild.id, add=[w.nsfw.id])
    text = await refused(w.alice, {"prompt": f"a fox {TINY}", "vary": "cfg", "values": "3, 7"})
    assert text == f"Images can't be made in this channel. This server allows them in: {w.nsfw.mention}."
    preferences.set_guild_channels(w.guild.id, clear=True)
    preferences.set_guild_safety(w.guild.id, add_words="gore")
    text = await refused(w.alice, {"prompt": f"(gore:1.2) scene {TINY}", "vary": "cfg", "values": "3, 7"})
    assert "`gore`" in text
    preferences.set_guild_models(w.guild.id, "sd15")
    text = await refused(w.alice, {"prompt": f"a fox {TINY}", "vary": "cfg", "values": "3, 7"})
    assert "`tiny`" in text and "sd15" in text
    assert not [m for m in fake.channel_messages(w.general) if m.author is fake.bot]  # nothing public


async def test_values_autocomplete_follows_the_chosen_parameter(brushwork_bot):
    h = brushwork_bot
    w = h.world
    choices = await h.fake.autocomplete(w.alice, w.general, "compare",
                                        {"prompt": "x", "vary": "sampler", "values": "Euler a, dpm++ 2m"},
                                        focused="values")
    values = [c["value"] for c in choices]
    assert "Euler a, DPM++ 2M Karras" in values and all(v.startswith("Euler a, ") for v in values)
    choices = await h.fake.autocomplete(w.alice, w.general, "compare",
                                        {"prompt": "x", "vary": "steps", "values": "x", "vary2": "cfg",
                                         "values2": ""}, focused="values2")
    assert choices[0]["value"] == "3, 7, 12"


async def test_compare_progress_and_cancel(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    with h.engine.held():
        interaction = await h.slash(w.wei, w.general, "compare", {
            "prompt": f"一座山 {TINY}", "vary": "sampler", "values": "euler_a | DDIM"})
        await fake.wait_for_response(interaction)
        message = interaction.original
        assert message.content.startswith("🧪 正在对比 `--sampler` euler_a · DDIM")
        await fake.wait_until(lambda: any(c.startswith("bw1:c:") for c in message.custom_ids),
                              description="the cancel button")
        assert "🎨" in message.content.splitlines()[-1] or "⏳" in message.content.splitlines()[-1]
        job_id = message.custom_ids[0].split(":")[2]
        click = await fake.click(w.wei, message, message.custom_ids[0])
        await fake.wait_for_response(click)
        assert click.original.ephemeral and job_id in click.original.content
    await fake.wait_until(lambda: "已取消" in message.content, timeout=RESULT_TIMEOUT, description="cancelled")
    assert message.components == [] and not has_grid(message)
    assert h.container.queue.handle(job_id).status is JobState.CANCELLED


async def test_a_comparison_waiting_at_a_restart_is_delivered_after_it(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    with h.engine.held():
        interaction = await h.slash(w.alice, w.general, "compare", {
            "prompt": f"a harbour at night --seed 9 {TINY}", "vary": "steps", "values": "2, 3"})
        await fake.wait_for_response(interaction)
        message = interaction.original
        await fake.wait_until(h.engine.entered.is_set, timeout=30, description="the worker to start the job")
        await h.restart()  # the job goes back to the queue; the new bot follows it again
    await fake.wait_until(lambda: has_grid(message), timeout=RESULT_TIMEOUT, description="the grid after a restart")
    assert message.content.startswith("🧪 **a harbour at night** · seed 9")

    def delivered() -> bool:  # and the interaction token left the job's row
        with h.store_rows() as uow:
            refs = [j.reply_ref for j in uow.jobs.list_by_status("done") if compare_of(j.request) is not None]
        return len(refs) == 1 and refs[0]["token"] is None and refs[0]["delivered"] is True

    await fake.wait_until(delivered, description="the job marked delivered")


async def test_a_comparison_that_outlives_its_token_is_posted_in_the_channel(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    interaction = await h.slash(w.alice, w.general, "compare", {
        "prompt": f"a red kite {TINY}", "vary": "cfg", "values": "4, 8"}, expired=True)
    await fake.wait_for_response(interaction)
    posted = await fake.wait_for_message(lambda m: m.author is fake.bot and has_grid(m), channel=w.general,
                                         timeout=RESULT_TIMEOUT)
    assert posted.content.startswith(f"{w.alice.mention} 🧪 **a red kite**")


async def test_compare_is_acknowledged_at_once_while_the_worker_is_busy(brushwork_bot):
    """The same acknowledgement path as /imagine (its own thread pool, the job stored first): a
    public answer with ✖ while another job holds the worker (no timing assertion: the fake, like
    Discord, refuses an answer after 3 seconds)."""
    h = brushwork_bot
    w, fake = h.world, h.fake
    with h.engine.held():
        await h.imagine(w.wei, w.general, "a busy worker --seed 1")
        await fake.wait_until(h.engine.entered.is_set, description="the worker to start the first job")
        interaction = await h.slash(w.alice, w.general, "compare", {
            "prompt": f"a quiet bay --seed 5 {TINY}", "vary": "cfg", "values": "4, 8"})
        ack = await fake.wait_for_response(interaction)
        assert ack.type == 4 and not ack.ephemeral
        message = interaction.original
        assert message.content.startswith("🧪 Comparing `--cfg` 4 · 8") and "⏳" in message.content
        (cancel,) = [c for c in message.custom_ids if c.startswith("bw1:c:")]
        with h.store_rows() as uow:  # stored before it was acknowledged
            job = uow.jobs.get(cancel.removeprefix("bw1:c:"), Scope.local_operator())
        assert compare_of(job.request) is not None and job.reply_ref["v"] == 1
    await fake.wait_until(lambda: has_grid(message), timeout=RESULT_TIMEOUT, description="the grid")


async def test_compare_where_the_bot_may_not_post_names_the_permission(brushwork_bot):
    from tests.fakediscord import permissions as perms

    h = brushwork_bot
    w, fake = h.world, h.fake
    bot_role = next(r for r in w.guild.roles.values() if r.managed or r.name == fake.bot.username)
    fake.set_permission_overwrite(w.general, bot_role, deny=perms.ATTACH_FILES)
    await fake.wait_until(lambda: not h.bot.get_channel(w.general.id).permissions_for(
        h.bot.get_guild(w.guild.id).me).attach_files, description="the overwrite to reach the bot")
    interaction = await h.slash(w.alice, w.general, "compare", {
        "prompt": f"a cat {TINY}", "vary": "cfg", "values": "4, 8"})
    response = await fake.wait_for_response(interaction)
    assert response.ephemeral and "Attach Files" in (response.data or {}).get("content", "")
    with h.store_rows() as uow:
        assert uow.jobs.active() == []


async def test_a_comparison_the_channel_refuses_comes_by_direct_message(brushwork_bot):
    """The token expired and the channel refuses the bot's post: the grid comes by direct
    message, saying which channel it was asked in (the outbox every job kind shares)."""
    h = brushwork_bot
    w, fake = h.world, h.fake
    interaction = await h.slash(w.alice, w.general, "compare", {
        "prompt": f"a grey heron {TINY}", "vary": "cfg", "values": "4, 8"}, expired=True)
    await fake.wait_for_response(interaction)
    fake.forbid_channel(w.general, method="POST", route="/channels/{channel_id}/messages")
    dm = fake.dm_channel(w.alice)
    message = await fake.wait_for_message(has_grid, channel=dm, timeout=RESULT_TIMEOUT)
    assert f"<#{w.general.id}>" in message.content and "a grey heron" in message.content
