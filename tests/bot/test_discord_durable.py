"""Every request is stored before it is acknowledged: an acknowledgement that fails, or a bot that
stops between the two, never leaves a "queued" message without a job, nor a job without an answer."""

from __future__ import annotations

import pytest

from generation.metadata import read_recipe
from storage.records import JobStatus, Scope

pytestmark = pytest.mark.slow

CALLBACK = "/interactions/{interaction_id}/{interaction_token}/callback"


def _jobs(h, *statuses):
    with h.store_rows() as uow:
        return [job for status in statuses for job in uow.jobs.list_by_status(status)]


async def test_a_job_whose_acknowledgement_fails_is_stored_and_answered_in_the_channel(brushwork_bot):
    """Discord refuses the acknowledgement (10062 Unknown interaction: what it answers once the
    3 seconds are over): the job was stored first, so it still runs; its status message and its
    result come as a channel message that mentions the user, and its row says where."""
    h = brushwork_bot
    fake, general = h.fake, h.world.general
    fake.inject_fault("POST", CALLBACK, status=404, code=10062, message="Unknown interaction", count=1)
    interaction = await h.imagine(h.world.alice, general, "unannounced --seed 7")
    status = await fake.wait_for_message(lambda m: "safe in the queue" in m.content, channel=general, timeout=60)
    assert interaction.response is None and interaction.original is None
    assert status.content.startswith(h.world.alice.mention)
    result = await h.wait_for_result(interaction)
    assert result is status  # the status message became the result
    assert read_recipe(result.attachments[0].data).request.seed == 7
    await h.bot.followers.wait(timeout=30)
    [job] = _jobs(h, JobStatus.DONE)
    assert job.reply_ref["message"] == status.id and job.reply_ref["via"] == "channel"
    assert job.reply_ref["delivered"]


async def test_an_acknowledged_job_whose_message_was_not_recorded_is_answered_there_after_a_restart(brushwork_bot):
    """The bot stopped after acknowledging a stored job but before recording which message it
    was (the row has no message id): the next start finds the interaction's original response
    and edits it into the result — no second message, no "queued" left behind."""
    h = brushwork_bot
    with h.engine.held():
        interaction = await h.imagine(h.world.alice, h.world.general, "acknowledged --seed 8")
        await h.fake.wait_for_response(interaction)
        await h.fake.wait_until(lambda: any(job.reply_ref["message"] for job in _jobs(h, JobStatus.QUEUED,
                                                                                      JobStatus.RUNNING)),
                                description="the stored job and its message")
        [job] = _jobs(h, JobStatus.QUEUED, JobStatus.RUNNING)
        await h.stop()
    container = h.build_container()
    try:  # as the row was before the message id was written
        with container.unit_of_work() as uow:
            ref = uow.jobs.get(job.public_id, Scope.local_operator()).reply_ref
            uow.jobs.update(job.public_id, reply_ref={**ref, "message": None})
            uow.commit()
    finally:
        container.close()
    await h.start()
    result = await h.wait_for_result(interaction)
    assert result is interaction.original
    assert read_recipe(result.attachments[0].data).request.seed == 8
    await h.bot.followers.wait(timeout=30)
    [done] = _jobs(h, JobStatus.DONE)
    assert done.reply_ref["message"] == interaction.original.id and done.reply_ref["delivered"]


async def test_a_reaction_that_reaches_nobody_leaves_no_job(brushwork_bot):
    """🔁 where neither the channel nor a direct message takes the "queued" message: the job that
    was stored for it is withdrawn (cancelled, its answer marked given): no GPU time for a
    request nobody will see, and no answer owed at the next start."""
    from tests.bot.test_discord_buttons import result_of

    h = brushwork_bot
    message = await result_of(h, prompt="a hidden fox --seed 3")
    fake, alice = h.fake, h.world.alice
    dm = fake.dm_channel(alice)
    posts = "/channels/{channel_id}/messages"
    fake.inject_fault("POST", posts, status=503, count=1, match={"channel_id": h.world.general.id})
    fake.inject_fault("POST", posts, status=503, count=1, match={"channel_id": dm.id})
    await fake.react(alice, message, "🔁")
    await fake.wait_until(lambda: bool(_jobs(h, JobStatus.CANCELLED)), timeout=30, description="the withdrawn job")
    [job] = _jobs(h, JobStatus.CANCELLED)
    assert job.kind.value == "reroll" and job.reply_ref["delivered"]
    assert _jobs(h, JobStatus.QUEUED, JobStatus.RUNNING) == []
