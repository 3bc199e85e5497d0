"""What must survive: a restart (old buttons, queued jobs), an expired interaction token, rate
limits and server errors, channels the bot may not post in, and other servers (isolation);
the bot token and interaction tokens never reach the logs; `brushwork run`."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from bot.discord_app.client import SecretFilter, configure_logging
from generation.metadata import read_recipe
from storage.records import JobStatus, Scope
from tests.fakediscord import permissions as perms

pytestmark = pytest.mark.slow


def ids_of(message) -> list[str]:
    return [a.filename.rsplit(".", 1)[0] for a in message.attachments]


async def test_restart_keeps_buttons_working_and_finishes_queued_jobs(brushwork_bot):
    h = brushwork_bot
    done = await h.wait_for_result(await h.imagine(h.world.alice, h.world.general, "before --seed 11"))
    with h.engine.held():
        waiting = [await h.imagine(h.world.alice, h.world.general, f"waiting {i} --seed {i}") for i in range(2)]
        await h.fake.wait_until(h.engine.entered.is_set, description="the worker to take the first job")
        for interaction in waiting:
            await h.fake.wait_for_response(interaction)  # the job is stored, then acknowledged
            await h.fake.wait_for_edit(interaction.original, lambda m: "bw1:c:" in " ".join(m.custom_ids))
        await h.restart()  # the running job goes back to the queue; the new process follows both again
    results = [await h.wait_for_result(interaction) for interaction in waiting]
    assert [read_recipe(m.attachments[0].data).request.seed for m in results] == [0, 1]
    assert all(m is interaction.original for m, interaction in zip(results, waiting, strict=True))
    await h.bot.followers.wait(timeout=30)
    with h.store_rows() as uow:
        jobs = uow.jobs.list_by_status(JobStatus.DONE)
    assert len(jobs) == 3 and all(job.reply_ref["delivered"] and job.reply_ref["token"] is None for job in jobs)

    # A button on a message from before the restart.
    click = await h.fake.click(h.world.wei, done, f"bw1:v:{ids_of(done)[0]}")
    varied = await h.wait_for_result(click)
    assert read_recipe(varied.attachments[0].data).request.seed == 11


async def test_expired_token_results_go_to_the_channel_mentioning_the_user(brushwork_bot):
    h = brushwork_bot
    interaction = await h.fake.slash(h.world.alice, h.world.general, "imagine",
                                     {"prompt": "late --size 64x64 --steps 3"}, expired=True)
    assert (await h.fake.wait_for_response(interaction)).type == 4
    message = await h.wait_for_result(interaction)
    assert message is not interaction.original and message.interaction is None
    assert message.content.startswith(h.world.alice.mention)
    assert len(message.attachments) == 1 and message.custom_ids[-1].startswith("bw1:d:")
    await h.fake.wait_until(lambda: "below" in interaction.original.content, description="the old message")
    assert interaction.original.custom_ids == []  # no ✖ on a finished job

    # Errors too: a job that fails after the token expired.
    h.engine.fail_next(RuntimeError("the GPU fell over"))
    failing = await h.fake.slash(h.world.wei, h.world.general, "imagine", {"prompt": "失败 --size 64x64 --steps 3"},
                                 expired=True)
    notice = await h.fake.wait_for_message(lambda m: h.world.wei.mention in m.content and "❌" in m.content,
                                           channel=h.world.general, timeout=60)
    assert "内部错误" in notice.content and failing.original.content.endswith("请看下面的消息。")

    # A token that expires while the job waits: the interaction started fresh.
    with h.engine.held():
        waiting = await h.imagine(h.world.alice, h.world.general, "expires while waiting")
        await h.fake.wait_for_response(waiting)
        await h.fake.wait_until(lambda: _jobs(h, JobStatus.QUEUED, JobStatus.RUNNING), description="the job")
        h.fake.expire_token(waiting)
    message = await h.wait_for_result(waiting)
    assert message is not waiting.original and h.world.alice.mention in message.content


def _jobs(h, *statuses):
    with h.store_rows() as uow:
        return uow.jobs.list_by_status(*statuses)


async def test_rate_limits_and_server_errors_are_retried(brushwork_bot):
    h = brushwork_bot
    edit = "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"
    h.fake.rate_limit("PATCH", edit, count=2, retry_after=0.05)
    message = await h.wait_for_result(await h.imagine(h.world.alice, h.world.general, "rate limited"))
    assert len(message.attachments) == 1
    statuses = [r.status for r in h.fake.requests_to("PATCH", edit)]
    assert statuses.count(429) == 2 and statuses[-1] == 200

    h.fake.server_error("PATCH", edit, status=500, count=1)  # discord.py sleeps ~1 s, then retries
    h.fake.server_error("POST", "/interactions/{interaction_id}/{interaction_token}/callback", status=502, count=1)
    message = await h.wait_for_result(await h.imagine(h.world.alice, h.world.general, "server error"))
    assert len(message.attachments) == 1
    assert 500 in [r.status for r in h.fake.requests_to("PATCH", edit)]


async def test_a_channel_that_refuses_the_fallback_gets_a_direct_message(brushwork_bot, caplog):
    h = brushwork_bot
    interaction = await h.fake.slash(h.world.alice, h.world.general, "imagine",
                                     {"prompt": "nowhere --size 64x64 --steps 3"}, expired=True)
    await h.fake.wait_for_response(interaction)
    h.fake.forbid_channel(h.world.general, method="POST", route="/channels/{channel_id}/messages")
    dm = h.fake.dm_channel(h.world.alice)
    message = await h.fake.wait_for_message(lambda m: bool(m.attachments), channel=dm, timeout=60)
    assert f"<#{h.world.general.id}>" in message.content and message.custom_ids == []
    assert read_recipe(message.attachments[0].data).request.prompt == "nowhere"
    assert "cannot post in channel" in caplog.text


async def test_reactions_in_a_channel_the_bot_cannot_post_in(brushwork_bot):
    h = brushwork_bot
    message = await h.wait_for_result(await h.imagine(h.world.alice, h.world.general, "a fox"))
    bot_role = next(r for r in h.world.guild.roles.values() if r.name == h.fake.bot.username)
    h.fake.set_permission_overwrite(h.world.general, bot_role, deny=perms.SEND_MESSAGES)
    await h.fake.wait_until(lambda: not h.bot.get_channel(h.world.general.id).permissions_for(
        h.bot.get_guild(h.world.guild.id).me).send_messages, description="the overwrite")
    await h.fake.react(h.world.alice, message, "🔁")
    dm = h.fake.dm_channel(h.world.alice)
    notice = await h.fake.wait_for_message(channel=dm, timeout=30)
    assert "Send Messages" in notice.content
    assert _jobs(h, JobStatus.QUEUED, JobStatus.RUNNING) == []


async def test_two_servers_never_see_each_others_images(brushwork_bot):
    h = brushwork_bot
    fake = h.fake
    other = fake.add_guild("Other Server")
    lobby = fake.add_channel(other, "lobby")
    fake.add_member(other, h.world.alice)
    bob = fake.add_user("bob", guild=other)
    await fake.wait_until(lambda: h.bot.get_channel(lobby.id) is not None, description="the new guild")

    message = await h.wait_for_result(await h.imagine(h.world.alice, h.world.general, "secret fox --seed 5"))
    image = ids_of(message)[0]
    link = f"https://discord.com/channels/{h.world.guild.id}/{h.world.general.id}/{message.id}"
    for user in (bob, h.world.alice):  # even alice, from the other server
        for value in (image, link):
            answer = await fake.slash(user, lobby, "tweak", {"image": value, "prompt": "--steps 4"})
            response = await fake.wait_for_response(answer)
            assert response.ephemeral and ("No image" in response.data["content"]
                                           or "does not lead" in response.data["content"])
            info = await fake.slash(user, lobby, "info", {"image": value})
            assert (await fake.wait_for_response(info)).ephemeral
    forged = f"https://discord.com/channels/{other.id}/{lobby.id}/{message.id}"  # right server, wrong message
    answer = await fake.slash(bob, lobby, "info", {"image": forged})
    assert "does not lead" in (await fake.wait_for_response(answer)).data["content"]
    dm = fake.dm_channel(h.world.alice)
    answer = await fake.slash(h.world.alice, dm, "info", {"image": image})
    assert "No image" in (await fake.wait_for_response(answer)).data["content"]
    assert len(_jobs(h, JobStatus.DONE)) == 1 and _jobs(h, JobStatus.QUEUED, JobStatus.RUNNING) == []


async def test_tokens_never_reach_the_logs(brushwork_bot):
    h = brushwork_bot
    stream = io.StringIO()
    handler = configure_logging("DEBUG", [h.fake.token], stream=stream)
    try:
        interaction = await h.imagine(h.world.alice, h.world.general, "logged --seed 1")
        await h.wait_for_result(interaction)
        try:
            raise RuntimeError(f"boom with {h.fake.token} and /webhooks/1/{interaction.token}")
        except RuntimeError:
            logging.getLogger("brushwork.test").exception("an error report")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)
    text = stream.getvalue()
    assert "/webhooks/" in text and "[redacted]" in text  # discord.py's DEBUG lines were there
    assert h.fake.token not in text and interaction.token not in text


def test_secret_filter_redacts_messages_arguments_and_tracebacks():
    secret = "MTIz.bot-token.abcdefghijklmnop"
    filt = SecretFilter([secret])
    token = "aW50ZXJhY3Rpb246" + "x" * 40
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "POST %s /interactions/123/%s/callback {'token': '%s'}",
                               (secret, token, token), None)
    filt.filter(record)
    assert record.getMessage() == ("POST [redacted] /interactions/123/[redacted]/callback {'token': '[redacted]'}")
    try:
        raise ValueError(secret)
    except ValueError:
        import sys

        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    filt.filter(record)
    assert secret not in record.exc_text and "[redacted]" in record.exc_text


# ---------------------------------------------------------------------- brushwork run


def test_run_without_a_token_explains_in_one_line(tmp_path, monkeypatch, capsys):
    from bot.cli import main

    monkeypatch.delenv("BRUSHWORK_DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("BRUSHWORK_CONFIG", raising=False)
    assert main(["--home", str(tmp_path), "run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "BRUSHWORK_DISCORD_TOKEN" in err and "Traceback" not in err


def test_run_with_a_refused_token_says_so_without_printing_it(tmp_path, monkeypatch, capsys):
    import discord

    import bot.discord_app.client as client
    from bot.cli import main

    secret = "MTIz.refused-token.abcdefghijklmnopqrstuvwxyz"
    monkeypatch.setenv("BRUSHWORK_DISCORD_TOKEN", secret)
    seen = {}

    async def refuse(container, token, *, force_sync=False):
        seen.update(token=token, sync=force_sync, workers=container.queue.started)
        raise discord.LoginFailure("Improper token has been passed.")

    monkeypatch.setattr(client, "serve", refuse)
    try:
        assert main(["--home", str(tmp_path), "run", "--sync"]) == 2
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_brushwork", False)]:
            root.removeHandler(handler)
    err = capsys.readouterr().err
    assert seen == {"token": secret, "sync": True, "workers": True}
    assert "refused the bot token" in err and secret not in err


async def test_serve_runs_the_bot_until_closed(fake_discord, make_container, tiny_engine):
    import asyncio

    from bot.discord_app.client import serve

    fake_discord.add_standard_world()
    container = make_container(engine=tiny_engine)
    try:
        task = asyncio.create_task(serve(container, fake_discord.token))
        await fake_discord.wait_ready()
        await fake_discord.wait_for_sync()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        container.close()
    assert fake_discord.sync_count == 1


async def test_edits_that_keep_failing_do_not_lose_the_result(brushwork_bot, caplog, monkeypatch):
    """429s on every edit of the status message (past discord.py's own retries): progress edits
    are skipped, the result is posted in the channel instead; when the channel and the direct
    message fail too, the answer is tried again within the same run."""
    from bot.discord_app import follow

    monkeypatch.setattr(follow, "DELIVERY_RETRY_S", (0.2, 0.2, 0.2))
    h = brushwork_bot
    fake, general = h.fake, h.world.general
    edit = "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"
    with h.engine.held():
        interaction = await h.imagine(h.world.alice, general, "stubborn --seed 5")
        await fake.wait_for_response(interaction)
        edits = fake.inject_fault("PATCH", edit, status=429, count=None, retry_after=0.01)
    result = await fake.wait_for_message(lambda m: bool(m.attachments), channel=general, timeout=60)
    assert result is not interaction.original and result.content.startswith(h.world.alice.mention)
    assert read_recipe(result.attachments[0].data).request.seed == 5
    assert result.custom_ids and result.custom_ids[-1].startswith("bw1:d:")
    assert edits.hits >= 5 and "following follow job" not in caplog.text

    # The channel and the direct message refuse once (a 503, which discord.py does not retry): tried again.
    dm = fake.dm_channel(h.world.alice)
    posts = "/channels/{channel_id}/messages"
    with h.engine.held():
        second = await h.imagine(h.world.alice, general, "more stubborn --seed 6")
        await fake.wait_for_response(second)
        fake.inject_fault("POST", posts, status=503, count=1, match={"channel_id": general.id})
        fake.inject_fault("POST", posts, status=503, count=1, match={"channel_id": dm.id})
    again = await fake.wait_for_message(lambda m: bool(m.attachments) and m is not result, timeout=90)
    assert read_recipe(again.attachments[0].data).request.seed == 6
    assert "trying again" in caplog.text
    edits.remaining = 0
    await h.bot.followers.wait(timeout=30)
    with h.store_rows() as uow:
        assert all(job.reply_ref["delivered"] for job in uow.jobs.list_by_status(JobStatus.DONE))


async def test_a_deleted_status_message_still_gets_its_result(brushwork_bot):
    h = brushwork_bot
    with h.engine.held():
        interaction = await h.imagine(h.world.alice, h.world.general, "moderated")
        await h.fake.wait_for_response(interaction)
        await h.bot.get_channel(h.world.general.id).get_partial_message(interaction.original.id).delete()
    await h.fake.wait_until(lambda: any(m.attachments for m in interaction.followups), timeout=60,
                            description="the result as a new message")
    result = next(m for m in interaction.followups if m.attachments)
    assert not result.ephemeral and result.custom_ids[-1].startswith("bw1:d:")


async def test_a_job_finished_while_the_bot_was_down_is_answered_after_the_restart(brushwork_bot):
    h = brushwork_bot
    with h.engine.held():
        interaction = await h.imagine(h.world.alice, h.world.general, "finished offline --seed 5")
        await h.fake.wait_for_response(interaction)
        await h.fake.wait_for_edit(interaction.original, lambda m: "bw1:c:" in " ".join(m.custom_ids))
        job_id = next(c for c in interaction.original.custom_ids if c.startswith("bw1:c:")).split(":")[-1]
        await h.stop()

    # Another process (here: a bare container with its worker, no bot) finishes the job.
    container = h.build_container()
    try:
        queue = container.start_workers()
        await asyncio.to_thread(queue.handle(job_id).wait, 60)
        with container.unit_of_work() as uow:
            job = uow.jobs.get(job_id, Scope.local_operator())
        assert job.status is JobStatus.DONE and not job.reply_ref.get("delivered")
    finally:
        container.close()

    await h.start()
    message = await h.wait_for_result(interaction)
    assert message is interaction.original
    assert read_recipe(message.attachments[0].data).request.seed == 5
    await h.bot.followers.wait(timeout=30)
    with h.store_rows() as uow:
        job = uow.jobs.get(job_id, Scope.local_operator())
    assert job.reply_ref["delivered"] and job.reply_ref["token"] is None
