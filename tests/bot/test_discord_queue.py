"""``/queue``: the caller's jobs here (running, then waiting with their place and ETA), a cancel
button per job re-checked by the queue, server totals for managers — the overview service
(:mod:`bot.queue_status`) and the command end to end while the worker is held mid-job."""

from __future__ import annotations

import pytest

from bot.jobs import compare_submission, plan_submission
from generation.errors import QueueError
from generation.queue import JobState, Requester
from storage.records import Scope
from tests.bot.harness import TINY


def submit(container, text: str, user: int, guild: int | None):
    scope = Scope(user_id=user, guild_id=guild)
    plan = container.images.plan_generate(f"{text} {TINY}", scope)
    return container.queue.submit(plan_submission(plan, scope))


async def test_queue_lists_cancels_and_totals_end_to_end(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    container = h.container
    guild = w.guild.id
    with h.engine.held():
        running = submit(container, "a red fox", w.alice.id, guild)
        await fake.wait_until(h.engine.entered.is_set, timeout=30, description="the worker to start a job")
        waiting = submit(container, "a blue whale, watercolor", w.alice.id, guild)
        scope = Scope(user_id=w.alice.id, guild_id=guild)
        plan = container.images.plan_compare(f"a lighthouse {TINY}", "cfg", "3, 7", scope)
        comparison = container.queue.submit(compare_submission(plan, scope))
        others = submit(container, "一座山", w.wei.id, guild)
        in_dm = submit(container, "a secret sketch", w.alice.id, None)

        interaction = await h.slash(w.alice, w.general, "queue")
        await fake.wait_for_response(interaction)
        message = interaction.original
        assert message.ephemeral
        embed = message.embeds[0]
        lines = embed["description"].split("\n\n")
        assert len(lines) == 3
        assert lines[0].startswith(f"**1.** `{running.job_id}` · image · a red fox") and "🎨 running" in lines[0]
        # places are the fair scheduler's (others' jobs may go first): as the queue says
        assert lines[1].startswith(f"**2.** `{waiting.job_id}`") and f"position {waiting.position + 1} ·" in lines[1]
        assert lines[2].startswith(f"**3.** `{comparison.job_id}` · comparison · a lighthouse")
        assert f"position {comparison.position + 1} ·" in lines[2]
        assert others.job_id not in embed["description"] and in_dm.job_id not in embed["description"]
        assert not embed.get("fields")  # alice does not manage the server: no totals
        cancel_waiting = f"bwq1:c:{waiting.job_id}:l"
        assert message.custom_ids == [f"bwq1:c:{running.job_id}:l", cancel_waiting,
                                      f"bwq1:c:{comparison.job_id}:l", "bwq1:r"]

        # a crafted click for someone else's job is refused by the queue itself
        assert pytest.raises(QueueError, container.queue.cancel, others.job_id,
                             Requester(user=w.alice.id, guild=guild)).value.code == "queue.not_yours"

        await fake.click(w.alice, message, cancel_waiting)
        await fake.wait_for_edit(message)
        description = message.embeds[0]["description"]
        assert description.startswith(f"✖ Job `{waiting.job_id}` cancelled.")
        assert waiting.job_id not in description.split("\n\n", 1)[1]
        assert waiting.status is JobState.CANCELLED

        # Chinese, and the server's totals for a manager
        interaction = await h.slash(w.wei, w.general, "queue")
        await fake.wait_for_response(interaction)
        embed = interaction.original.embeds[0]
        assert embed["title"] == "你在本服务器的任务" and "排队中 · 第" in embed["description"]
        interaction = await h.slash(w.admin, w.general, "queue")
        await fake.wait_for_response(interaction)
        embed = interaction.original.embeds[0]
        assert "no jobs waiting or running here" in embed["description"]
        totals = {f["name"]: f["value"] for f in embed["fields"]}
        assert totals["This server (you manage it)"].startswith("2 waiting · 1 running · 4 image(s) · 2 member(s)")
        assert "of no limit" in totals["Today (UTC)"]

        # direct messages: only the direct-message job
        interaction = await h.slash(w.alice, fake.dm_channel(w.alice), "queue")
        await fake.wait_for_response(interaction)
        assert in_dm.job_id in interaction.original.embeds[0]["description"]
        assert running.job_id not in interaction.original.embeds[0]["description"]
    await h.wait_idle()

    await fake.click(w.alice, message, "bwq1:r")
    await fake.wait_for_edit(message, count=2)
    assert "no jobs waiting or running here" in message.embeds[0]["description"]
    assert message.custom_ids == ["bwq1:r"]
