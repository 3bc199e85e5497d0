"""The bot's Discord-free parts: ChatService (bot/chat.py) and the delivery texts and throttle
(bot/discord_app/delivery.py), without Discord and (except where noted) without generating."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.chat import ImagineOptions, Origin, choices
from bot.discord_app.components import modal_values, result_view
from bot.discord_app.delivery import (
    TOKEN_LIFETIME_S,
    ReplyRef,
    ThrottledEditor,
    ack_text,
    duration,
    headline,
    progress_bar,
    python_snippet,
    results_text,
    status_for,
)
from bot.jobs import plan_submission
from generation.errors import BrushworkError, ImageNotFound, QueueError, RequestError
from generation.grammar import parse
from generation.queue import JobCancelled, JobProgress, JobQueued, JobStalled, JobState
from storage.records import Scope

GUILD, OTHER = 501, 502
ALICE, BOB, CAROL = 11, 12, 13


@pytest.fixture
def container(make_container, tiny_engine):
    from generation.engine import FolderLoraResolver
    from tests.bot.harness import GatedEngine

    engine = GatedEngine(tiny_engine)  # planning checks LoRAs against its (absent) folder
    container = make_container(engine=engine)
    engine.lora_resolver = FolderLoraResolver(container.settings.loras_dir)
    return container


def origin(user=ALICE, guild=GUILD, *, channel=900, locale="en", nsfw=False, manage=False) -> Origin:
    return Origin(user_id=user, guild_id=guild, channel_id=channel, locale=locale, age_restricted=nsfw,
                  manage_messages=manage)


def made(container, who: Origin, text: str = "a fox --size 64x64 --steps 2 --seed 3", *, message: int | None = None):
    """A finished job's images without the queue: planned like the bot, executed directly."""
    chat = container.chat
    prepared = chat.prepare_imagine(who, text)
    spec = container.job_store.add(plan_submission(prepared.plan, who.scope, channel_id=who.channel_id))
    saved = container.images.execute(prepared.plan, who.scope, channel_id=who.channel_id, job_public_id=spec.job_id)
    with container.unit_of_work() as uow:
        uow.jobs.update(spec.job_id, status="done", result_image_ids=[s.record.public_id for s in saved])
        uow.commit()
    if message is not None:
        chat.attach_messages([(s.record.public_id, who.channel_id, message) for s in saved], who.scope)
    return spec.job_id, [s.record.public_id for s in saved]


# ---------------------------------------------------------------------- options and flags


def test_options_are_written_in_the_request_language_and_win():
    options = ImagineOptions(negative='rain, "--storm"', seed=7, steps=20, cfg=6.5, sampler="euler a",
                             aspect="3:2", model="tiny", lora="ink:0.8, wash", n=2, hires=1.5)
    request = options.over(parse("a cat --seed 1 --steps 5 --size 64x64 --hires 2 --strength 0.6"))
    assert (request.seed, request.steps, request.cfg, request.n) == (7, 20, 6.5, 2)
    assert request.negative_prompt == 'rain, "--storm"' and request.sampler == "Euler a"
    assert request.aspect == (3, 2) and request.width is None  # --ar replaces the text's --size
    assert [(r.name, r.weight) for r in request.loras] == [("ink", 0.8), ("wash", 1.0)]
    assert (request.hires.scale, request.hires.strength) == (1.5, 0.6)
    assert ImagineOptions().over(parse("a cat")) == parse("a cat")
    with pytest.raises(RequestError, match="--ar"):
        ImagineOptions(aspect="9:1").over(parse("a cat"))


def test_choices_prefer_prefixes_and_stop_at_25():
    names = ["ink-line", "inkwash", "watercolor", "pink"] + [f"x{i}" for i in range(40)]
    assert choices(names, "ink") == ["ink-line", "inkwash", "pink"]
    assert len(choices(names, "")) == 25 and choices(names, "zzz") == []


# ---------------------------------------------------------------------- planning rules


def test_safety_policy_applies_outside_age_restricted_channels_only(container):
    with container.unit_of_work() as uow:
        uow.settings.set_guild(GUILD, safety={"banned_words": ["gore"], "forced_negative": "lowres",
                                              "classify_images": True})
        uow.commit()
    chat = container.chat
    with pytest.raises(RequestError) as raised:
        chat.prepare_imagine(origin(), "so much GORE --size 64x64")
    assert raised.value.code == "safety.banned_word"
    prepared = chat.prepare_imagine(origin(), "a fox --no blur --size 64x64")
    assert prepared.plan.request.negative_prompt == "blur, lowres" and prepared.screened
    adult = chat.prepare_imagine(origin(nsfw=True), "gore --no blur --size 64x64")
    assert adult.plan.request.negative_prompt == "blur" and not adult.screened
    dm = chat.prepare_imagine(origin(guild=None), "gore --size 64x64")  # no server, no server policy
    assert dm.plan.request.negative_prompt is None


def test_allowed_models_are_enforced_per_server(container):
    with container.unit_of_work() as uow:
        uow.settings.set_guild(GUILD, allowed_models=["sdxl"])
        uow.commit()
    with pytest.raises(RequestError) as raised:
        container.chat.prepare_imagine(origin(), "a fox --size 64x64")  # the default model, tiny
    assert raised.value.code == "server.model_not_allowed" and "sdxl" in raised.value.message()
    assert container.chat.model_names(origin()) == ["sdxl"]
    assert "tiny" in container.chat.model_names(origin(guild=OTHER))
    container.chat.prepare_imagine(origin(guild=OTHER), "a fox --size 64x64")


def test_the_servers_channel_allow_list_applies_threads_follow_their_parent(container):
    with container.unit_of_work() as uow:
        uow.settings.set_guild(GUILD, channels={"allowed": ["900"]})
        uow.commit()
    chat = container.chat
    chat.prepare_imagine(origin(channel=900), "a fox --size 64x64")
    chat.prepare_imagine(Origin(ALICE, GUILD, 901, parent_channel_id=900), "a fox --size 64x64")  # a thread
    with pytest.raises(BrushworkError) as raised:
        chat.prepare_imagine(origin(channel=902), "a fox --size 64x64")
    assert raised.value.code == "server.channel_not_allowed" and "<#900>" in raised.value.message()
    chat.prepare_imagine(origin(guild=None, channel=902), "a fox --size 64x64")  # direct messages: no server


def test_a_hires_pass_without_steps_is_refused_when_planned(container):
    with pytest.raises(RequestError) as raised:
        container.chat.prepare_imagine(origin(), "a fox --size 64x64 --steps 2 --hires 2 --strength 0.2")
    assert raised.value.code == "request.refine_no_steps" and "--hires-steps" in raised.value.message()


def test_prepare_only_reads_and_submit_stores_the_reply_reference(container):
    chat = container.chat
    prepared = chat.prepare_imagine(origin(), "a fox --size 64x64")
    assert container.job_store.active() == [] and prepared.waiting == 0
    ref = ReplyRef(user=ALICE, channel=900, guild=GUILD, app=1, token="t" * 40, message=77,
                   created=time.time()).to_dict()
    handle = chat.submit(prepared, ref)
    with container.unit_of_work() as uow:
        job = uow.jobs.get(handle.job_id, Scope.local_operator())
    assert job.reply_ref["message"] == 77 and job.reply_ref["user"] == ALICE and job.channel_id == 900
    followed = chat.followed_jobs()
    assert [(f.job_id, f.plan.request.prompt) for f in followed] == [(handle.job_id, "a fox")]
    chat.finish_reply(handle.job_id, ref)
    assert chat.followed_jobs() == []
    with container.unit_of_work() as uow:
        assert uow.jobs.get(handle.job_id, Scope.local_operator()).reply_ref["token"] is None


# ---------------------------------------------------------------------- references and rights


def test_image_references_are_checked_against_server_and_user(container):
    chat = container.chat
    job, (first,) = made(container, origin(), message=4242)
    assert chat.resolve_image(origin(user=BOB), first.upper()) == first  # anyone in the server
    assert chat.resolve_image(origin(user=BOB), f"`{first}`") == first
    link = f"https://discord.com/channels/{GUILD}/900/4242"
    assert chat.resolve_image(origin(user=BOB), link) == first
    assert chat.resolve_image(origin(user=BOB), f"<{link.replace('discord.com', 'ptb.discord.com')}>") == first
    for who, value in ((origin(guild=OTHER), first), (origin(guild=OTHER), link),
                       (origin(guild=None), first), (origin(guild=OTHER), link.replace(str(GUILD), str(OTHER)))):
        with pytest.raises(ImageNotFound):
            chat.resolve_image(who, value)
    with pytest.raises(ImageNotFound) as raised:
        chat.resolve_image(origin(), "/etc/passwd.png")  # never a file path from Discord
    assert raised.value.code == "bot.bad_image_reference"
    with pytest.raises(QueueError):
        chat.job_info(origin(guild=OTHER), job)


def test_direct_message_images_are_their_owners_only(container):
    chat = container.chat
    _job, (mine,) = made(container, origin(guild=None), message=99)
    assert chat.resolve_image(origin(guild=None), mine) == mine
    assert chat.resolve_image(origin(guild=None), "https://discord.com/channels/@me/900/99") == mine
    with pytest.raises(ImageNotFound):
        chat.resolve_image(origin(user=BOB, guild=None), mine)
    with pytest.raises(ImageNotFound):
        chat.resolve_image(origin(), mine)


def test_delete_needs_the_requester_or_manage_messages(container):
    chat = container.chat
    job, images = made(container, origin(), "a fox --size 64x64 --steps 2 --n 2")
    with pytest.raises(BrushworkError) as raised:
        chat.delete_job(origin(user=BOB), job)
    assert raised.value.code == "bot.delete_not_allowed"
    deleted = chat.delete_job(origin(user=BOB, manage=True), job)
    assert sorted(r.public_id for r in deleted) == sorted(images)
    with pytest.raises(ImageNotFound):
        chat.info(origin(), images[0])


def test_cancel_needs_the_owner_or_manage_messages(container):
    chat = container.chat
    handle = chat.submit(chat.prepare_imagine(origin(), "a fox --size 64x64"), None)
    with pytest.raises(QueueError) as raised:
        chat.cancel(origin(user=BOB), handle.job_id)
    assert raised.value.code == "bot.cancel_not_yours"
    with pytest.raises(QueueError) as raised:
        chat.cancel(origin(guild=OTHER), handle.job_id)
    assert raised.value.code == "bot.job_not_found"
    assert chat.cancel(origin(user=CAROL, manage=True), handle.job_id) is JobState.CANCELLED


def test_remix_form_and_info(container):
    chat = container.chat
    job, images = made(container, origin(), "a fox, \\--literal --size 64x64 --steps 2 --seed 3 --n 2 --cfg 6")
    form = chat.remix_form(origin(), job_id=job)
    assert form.image_id == images[0] and form.prompt == "a fox, \\--literal"
    assert "--n 2" in form.flags and "--cfg 6" in form.flags and "--seed" not in form.flags
    assert parse(f"{form.prompt} {form.flags}").prompt == "a fox, --literal"
    info = chat.job_info(origin(user=BOB), job)
    assert info.public_id == images[0] and [s.public_id for s in info.siblings] == images
    assert info.batch.n == 2 and "Seed: 3" in info.details.infotext


def test_locales_are_recorded_once(container):
    chat = container.chat
    assert chat.user_locale(ALICE) is None
    chat.remember_locale(ALICE, "zh-CN")
    chat.remember_locale(ALICE, "zh-CN")
    with container.unit_of_work() as uow:
        assert uow.settings.get_user(ALICE).locale == "zh-CN"
    assert chat.user_locale(ALICE) == "zh-CN"


# ---------------------------------------------------------------------- texts


def test_reply_ref_round_trip_and_token_lifetime():
    ref = ReplyRef(user=1, channel=2, guild=3, locale="zh-CN", app=4, token="t" * 30, message=5, created=1000.0)
    assert ReplyRef.from_dict(ref.to_dict()) == ref
    assert ref.token_valid(now=1000.0 + 60) and not ref.token_valid(now=1000.0 + TOKEN_LIFETIME_S - 30)
    assert not ReplyRef(user=1, channel=2, via="channel", message=5).token_valid(now=0)
    assert "t" * 30 not in repr(ref)


def test_status_texts_in_both_languages():
    assert duration(None, "en") == "a moment" and duration(42.4, "zh-CN") == "42 秒"
    assert duration(600, "en") == "10 min"
    assert progress_bar(3, 12, width=4) == "▰▱▱▱"
    assert status_for(JobQueued("j", 2, 30.0), "en").text == "⏳ Queued — position 3, done in about 30 s."
    assert status_for(JobQueued("j", 0, None), "zh-CN").text.startswith("⏳ 下一个就轮到你")
    assert "may be stuck" in status_for(JobStalled("j", 700.0), "en").text
    assert status_for(JobCancelled("j"), "en") is None  # terminal events are delivered, not shown as status
    progress = status_for(JobProgress("j", 5, 20, 12.0, preview="img"), "en")
    assert progress.text.startswith("🎨 Step 5/20 ▰▰▰") and progress.text.endswith("about 12 s left")
    assert progress.preview == "img"
    assert headline("upscale", "a *cat* @everyone", "k3x9fq2a", "en", mention="<@1>") == (
        "⬆️ Upscale of `k3x9fq2a`: **a \\*cat\\* @\u200beveryone** — <@1>")


def test_results_footer_and_python_snippet(container):
    job, images = made(container, origin(), "a fox --size 64x64 --steps 2 --seed 3 --n 2 --cfg 6 --no blur")
    with container.unit_of_work() as uow:
        records = [uow.images.get(i, Scope.local_operator()) for i in images]
    text = results_text("**a fox**", records, "zh-CN", withheld=1, reencoded=[images[1]])
    assert f"`1` {images[0]} · 种子 3   `2` {images[1]} · 种子 4" in text
    assert "64×64 · tiny · DPM++ 2M Karras · 2 步 · CFG 6" in text and "反向提示词：blur" in text
    assert "1 张图片" in text and images[1] in text.splitlines()[-1]
    view = result_view(job, records, "en")
    assert [item.custom_id for item in view.children][:4] == [f"bw1:u:{images[0]}", f"bw1:u:{images[1]}",
                                                              f"bw1:v:{images[0]}", f"bw1:v:{images[1]}"]
    snippet = python_snippet(parse("a fox, 'quoted' --seed 3"), images[0])
    assert snippet.splitlines()[0] == "from generation import generate"
    call = next(line for line in snippet.splitlines() if line.startswith("images = generate("))
    assert eval(call.removeprefix("images = generate(").removesuffix(")")) == "a fox, 'quoted' --seed 3"


def test_ack_text_says_how_long_the_queue_is(container):
    prepared = container.chat.prepare_imagine(origin(), "a fox --size 60x60")  # rounded to 56x56 or 64x64: a note
    text = ack_text(prepared, "en")
    assert text.startswith("**a fox**\n⏳ Queued…") and "ℹ️" in text


def test_modal_values_read_rows_and_labels():
    data = {"components": [
        {"type": 1, "components": [{"type": 4, "custom_id": "a", "value": "one"}]},
        {"type": 18, "component": {"type": 4, "custom_id": "b", "value": "two"}},
    ]}
    assert modal_values(data) == {"a": "one", "b": "two"}


async def test_throttled_editor_applies_only_the_newest_state():
    applied: list[int] = []
    gate = asyncio.Event()

    async def apply(state: int) -> None:
        applied.append(state)
        if state == 0:
            await gate.wait()  # an edit in flight (a 429 being retried)

    editor: ThrottledEditor[int] = ThrottledEditor(apply, interval=0.0)
    editor.submit(0)
    await asyncio.sleep(0)
    for state in range(1, 10):
        editor.submit(state)  # while the first edit hangs
    gate.set()
    await asyncio.sleep(0.01)
    assert applied == [0, 9]
    editor.submit(10)
    await editor.close(flush=True)
    assert applied[-1] == 10

    slow: ThrottledEditor[int] = ThrottledEditor(apply, interval=60.0)
    seen = len(applied)
    for state in range(20, 25):
        slow.submit(state)
        await asyncio.sleep(0)
    await slow.close()
    assert applied[seen:] == [20]  # the rest waited for the interval and were dropped at close


async def test_a_failing_edit_does_not_stop_the_editor():
    calls: list[int] = []

    async def apply(state: int) -> None:
        calls.append(state)
        if state == 1:
            raise RuntimeError("Discord said no")

    editor: ThrottledEditor[int] = ThrottledEditor(apply, interval=0.0)
    editor.submit(1)
    await asyncio.sleep(0.01)
    editor.submit(2)
    await asyncio.sleep(0.01)
    await editor.close()
    assert calls == [1, 2] and editor.applied == 1


async def test_a_failed_edit_is_tried_again_unless_a_newer_state_replaced_it(monkeypatch):
    """A 429/5xx on a status edit: the same state again a moment later (doubling while it keeps
    failing), so a message is never left at an old status because one edit failed."""
    from bot.discord_app import delivery

    monkeypatch.setattr(delivery, "EDIT_RETRY_S", 0.01)
    calls: list[int] = []
    failing = {"left": 3}

    async def apply(state: int) -> None:
        calls.append(state)
        if failing["left"]:
            failing["left"] -= 1
            raise RuntimeError("429 Too Many Requests")

    editor: ThrottledEditor[int] = ThrottledEditor(apply, interval=0.0)
    editor.submit(7)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if editor.applied:
            break
    await editor.close()
    assert calls == [7, 7, 7, 7] and editor.applied == 1


def test_owed_jobs_are_the_unanswered_ones_of_one_reply_kind(container):
    from datetime import UTC, datetime, timedelta

    from storage.records import NewJob

    def job(ref, status=None, finished_ago=None):
        with container.unit_of_work() as uow:
            record = uow.jobs.add(NewJob(kind="generate", owner_id=ALICE, guild_id=GUILD, request={}, reply_ref=ref))
            if status is not None:
                uow.jobs.update(record.public_id, status=status,
                                finished_at=datetime.now(UTC) - finished_ago if finished_ago else None)
            uow.commit()
        return record.public_id

    waiting = job({"v": 1})
    running = job({"v": 1}, "running")
    ended_unanswered = job({"v": 1}, "done", timedelta(hours=2))
    job({"v": 1, "delivered": True}, "done", timedelta(hours=2))  # answered
    job({"v": 1}, "failed", timedelta(days=2))  # too long ago: the token and the moment are gone
    job(None)  # the command line's
    compare = job({"v": "compare1"}, "cancelled", timedelta(minutes=5))

    assert sorted(r.public_id for r in container.chat.owed_jobs(1)) == sorted([waiting, running, ended_unanswered])
    assert [r.public_id for r in container.chat.owed_jobs("compare1")] == [compare]
    # one follower path for images and comparisons: the older compare1 references are followed too
    assert sorted(f.job_id for f in container.chat.followed_jobs()) == sorted([waiting, running, ended_unanswered,
                                                                              compare])


def test_a_recipe_file_too_large_is_refused_before_download(container):
    from bot.chat import MAX_RECIPE_FILE_BYTES

    container.chat.check_recipe_file("ok.png", MAX_RECIPE_FILE_BYTES)
    with pytest.raises(BrushworkError) as error:
        container.chat.check_recipe_file("huge.png", MAX_RECIPE_FILE_BYTES + 1)
    assert error.value.code == "bot.recipe_file_too_large"
    assert "huge.png" in error.value.message() and "25 MB" in error.value.message()
    assert "25 MB" in error.value.message("zh-CN")
