"""/imagine end to end: the real discord.py client against the fake Discord, the tiny model.

Command sync, the acknowledgement while the worker is busy, queue position → progress →
results (PNG attachments with their recipe, the footer, the buttons), options over inline
flags, autocomplete, bad input, missing permissions, the server's safety policy and image
classifier, the upload limit, direct messages."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from generation.metadata import read_recipe
from generation.safety import Verdict
from tests.fakediscord import permissions as perms

pytestmark = pytest.mark.slow


def content_of(response) -> str:
    return (response.data or {}).get("content") or ""


async def ephemeral_answer(h, interaction) -> str:
    response = await h.fake.wait_for_response(interaction)
    assert response.type == 4 and response.ephemeral, response
    return content_of(response)


def job_rows(h):
    with h.store_rows() as uow:
        return uow.jobs.list_by_status("queued", "running", "done", "failed", "cancelled")


# ---------------------------------------------------------------------- sync


async def test_commands_are_synced_once_with_chinese_descriptions(brushwork_bot):
    h = brushwork_bot
    assert h.fake.sync_count == 1
    imagine = h.fake.command("imagine")
    assert imagine is not None
    assert imagine["description_localizations"]["zh-CN"] == "根据提示词（可带参数）生成图片"
    options = {o["name"]: o for o in imagine["options"]}
    assert list(options) == ["prompt", "negative", "seed", "steps", "cfg", "sampler", "aspect", "model", "lora",
                             "n", "hires", "image", "picture"]
    assert options["prompt"]["required"] and options["steps"]["max_value"] == 150
    assert options["sampler"]["autocomplete"] and options["model"]["autocomplete"]
    assert options["n"]["description_localizations"]["zh-CN"] == "图片数量，1-4"
    names = {(c["name"], c.get("type", 1)) for c in h.fake.commands_for()}
    assert {("imagine", 1), ("tweak", 1), ("info", 1), ("Remix", 3), ("Show settings", 3)} <= names
    remix = h.fake.command("Remix", type=3)
    assert remix["name_localizations"]["zh-CN"] == "改词重绘"

    await h.restart()  # same commands: no second sync (Discord allows 200 creations a day)
    assert h.fake.sync_count == 1
    await h.restart(force_sync=True)  # `brushwork run --sync`
    assert h.fake.sync_count == 2


# ---------------------------------------------------------------------- the main path


async def test_imagine_acks_at_once_while_the_worker_is_busy_then_shows_progress_and_results(brushwork_bot):
    h = brushwork_bot
    with h.engine.held():
        first = await h.imagine(h.world.alice, h.world.general, "a lighthouse --seed 1")
        await h.fake.wait_until(h.engine.entered.is_set, description="the worker to start the first job")
        second = await h.imagine(h.world.wei, h.world.general, "一只猫 on a motorbike --seed 42 --n 2 --cfg 6",
                                 sampler="euler_a")
        ack = await h.fake.wait_for_response(second)
        # Acknowledged publicly at once (no timing assertion: the fake would refuse a late one).
        assert ack.type == 4 and not ack.ephemeral
        assert "⏳" in content_of(ack) and "一只猫" in content_of(ack)
        status = second.original
        # ✖ Cancel from the first moment: the acknowledgement carries the job's id already.
        (cancel,) = [cid for cid in status.custom_ids if cid.startswith("bw1:c:")]
        job_id = cancel.removeprefix("bw1:c:")

        def stored() -> bool:
            from storage.errors import NotFound
            from storage.records import JobStatus, Scope

            with h.store_rows() as uow:
                try:
                    return uow.jobs.get(job_id, Scope.local_operator()).status is JobStatus.QUEUED
                except NotFound:  # acknowledged a moment before it is stored
                    return False

        await h.fake.wait_until(stored, description="the job stored under the id its button carries")
        # Then the queue position (wei reads Chinese), with ✖ Cancel.
        await h.fake.wait_for_edit(status, lambda m: "第 1 位" in m.content or "下一个" in m.content)
        assert [cid.split(":")[1] for cid in status.custom_ids] == ["c"]
    message = await h.wait_for_result(second)
    await h.wait_for_result(first)

    assert len(message.attachments) == 2 and all(a.filename.endswith(".png") for a in message.attachments)
    recipes = [read_recipe(a.data) for a in message.attachments]
    assert [r.request.seed for r in recipes] == [42, 43]
    assert recipes[0].request.sampler == "Euler a" and recipes[0].request.cfg == 6  # the option won
    assert "Seed: 42" in recipes[0].infotext and "Sampler: Euler a" in recipes[0].infotext
    ids = [a.filename.removesuffix(".png") for a in message.attachments]
    # The footer: each image's short id and seed, the key settings (in Chinese for wei).
    assert f"`1` {ids[0]} · 种子 42" in message.content and f"`2` {ids[1]} · 种子 43" in message.content
    assert "64×64 · tiny · Euler a · 3 步 · CFG 6" in message.content
    actions = [cid.split(":")[1] for cid in message.custom_ids]
    assert actions == ["u", "u", "v", "v", "r", "x", "i", "d"]
    assert f"bw1:u:{ids[1]}" in message.custom_ids
    with h.store_rows() as uow:  # each image knows the message that shows it (reactions, links)
        shown = uow.images.by_message(message.id, _scope(h))
    assert [r.public_id for r in shown] == ids


def _scope(h, user=None):
    from storage.records import Scope

    return Scope(user_id=(user or h.world.alice).id, guild_id=h.world.guild.id)


async def test_options_win_over_inline_flags(brushwork_bot):
    h = brushwork_bot
    interaction = await h.fake.slash(h.world.alice, h.world.general, "imagine", {
        "prompt": "a castle --seed 5 --steps 3 --size 64x64 --no fog --hires 1.5 --strength 0.5",
        "seed": 7, "steps": 2, "negative": "rain, --not a flag", "hires": 1.25})
    message = await h.wait_for_result(interaction)
    request = read_recipe(message.attachments[0].data).request
    assert (request.seed, request.steps, request.negative_prompt) == (7, 2, "rain, --not a flag")
    assert request.hires.scale == 1.25 and request.hires.strength == 0.5  # the text's --strength is kept
    assert (request.width, request.height) == (64, 64)


async def test_autocomplete_samplers_models_loras_and_aspects(brushwork_bot):
    h = brushwork_bot
    loras = h.container.settings.loras_dir
    loras.mkdir(parents=True, exist_ok=True)
    for name in ("inkwash", "ink-line", "watercolor"):
        (loras / f"{name}.safetensors").write_bytes(b"not really a lora")  # names only: never loaded here
    fake, alice, general = h.fake, h.world.alice, h.world.general

    samplers = await fake.autocomplete(alice, general, "imagine", {"prompt": "x", "sampler": "dpm++ 2m"},
                                       focused="sampler")
    assert samplers[0]["value"] == "DPM++ 2M" and len(samplers) <= 25
    models = await fake.autocomplete(alice, general, "imagine", {"prompt": "x", "model": ""}, focused="model")
    assert {"tiny", "sd15", "sdxl"} <= {c["value"] for c in models}
    with h.store_rows() as uow:  # a server that allows only the tiny model offers only it
        uow.settings.set_guild(h.world.guild.id, allowed_models=["tiny"])
        uow.commit()
    models = await fake.autocomplete(alice, general, "imagine", {"prompt": "x", "model": ""}, focused="model")
    assert [c["value"] for c in models] == ["tiny"]
    found = await fake.autocomplete(alice, general, "imagine", {"prompt": "x", "lora": "ink"}, focused="lora")
    assert [c["value"] for c in found] == ["ink-line", "inkwash"]
    found = await fake.autocomplete(alice, general, "imagine", {"prompt": "x", "lora": "inkwash:0.8, wat"},
                                    focused="lora")
    assert [c["value"] for c in found] == ["inkwash:0.8, watercolor"]
    aspects = await fake.autocomplete(alice, general, "imagine", {"prompt": "x", "aspect": "16"}, focused="aspect")
    assert [c["value"] for c in aspects] == ["16:9", "9:16"]  # starting with what was typed first


# ---------------------------------------------------------------------- bad input


MISTAKES = [
    ("alice", {"prompt": "a cat --stpes 5"}, "Unknown flag `--stpes`. Did you mean `--steps`?"),
    ("wei", {"prompt": "一只猫 --stpes 5"}, "`--steps`"),
    ("alice", {"prompt": "a cat --steps 500"}, "--steps 500 is out of range: use 1–150."),
    ("alice", {"prompt": "a cat", "aspect": "wide"}, "--ar expects W:H"),
    ("alice", {"prompt": "a cat", "sampler": "eulr"}, "Unknown sampler `eulr`"),
    ("alice", {"prompt": "a cat", "model": "nope"}, "nope"),
    ("alice", {"prompt": "a cat --lora missing:0.5"}, "missing"),
    ("alice", {"prompt": "--seed 3"}, "The prompt is empty"),
    ("alice", {"prompt": "a cat --hires 2 --strength 0.1 --steps 2"}, "hires"),
]


async def test_malformed_input_gets_an_ephemeral_explanation(brushwork_bot):
    h = brushwork_bot
    answers = []
    for user, options, expected in MISTAKES:
        interaction = await h.fake.slash(getattr(h.world, user), h.world.general, "imagine", options)
        text = await ephemeral_answer(h, interaction)
        answers.append(text)
        assert expected in text, (options, text)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in answers[1])  # Chinese for the zh-CN user
    assert job_rows(h) == []  # nothing was queued


async def test_a_full_queue_is_refused_ephemerally_with_its_length(brushwork_bot):
    h = brushwork_bot
    with h.store_rows() as uow:
        uow.settings.set_guild(h.world.guild.id, limits={"queued_per_user": 1})
        uow.commit()
    with h.engine.held():
        first = await h.imagine(h.world.alice, h.world.general, "one")
        await h.fake.wait_until(lambda: job_rows(h), description="the first job to be stored")
        second = await h.imagine(h.world.alice, h.world.general, "two")
        text = await ephemeral_answer(h, second)
        assert text.startswith("Queue full") and "at most 1 per person" in text
        assert len(job_rows(h)) == 1
    await h.wait_for_result(first)


async def test_a_job_refused_after_the_acknowledgement_is_explained_privately(brushwork_bot):
    """Two requests at once may both pass the check before either is stored: the one the queue
    then refuses has its public acknowledgement removed and an ephemeral explanation instead."""
    h = brushwork_bot
    with h.store_rows() as uow:
        uow.settings.set_guild(h.world.guild.id, limits={"queued_per_user": 1})
        uow.commit()
    with h.engine.held():
        first, second = await asyncio.gather(h.imagine(h.world.alice, h.world.general, "one"),
                                             h.imagine(h.world.alice, h.world.general, "two"))
        await h.fake.wait_until(lambda: first.responses and second.responses, description="both answers")
        await h.fake.wait_until(lambda: len(job_rows(h)) == 1, description="one job stored")
        await h.fake.wait_until(lambda: any(i.response.ephemeral or i.followups for i in (first, second)),
                                description="the refusal")
        refused = next(i for i in (first, second) if i.response.ephemeral or i.followups)
        if refused.response.ephemeral:  # the other job was stored before this one was checked
            assert content_of(refused.response).startswith("Queue full")
        else:  # both passed the check (the usual case): the acknowledgement is replaced
            notice = await h.fake.wait_for_followup(refused)
            assert notice.ephemeral and notice.content.startswith("Queue full")
            await h.fake.wait_until(lambda: refused.original.deleted, description="the ack to be removed")


async def test_missing_bot_permissions_are_named(brushwork_bot):
    h = brushwork_bot
    bot_role = next(r for r in h.world.guild.roles.values() if r.managed or r.name == h.fake.bot.username)
    h.fake.set_permission_overwrite(h.world.general, bot_role, deny=perms.ATTACH_FILES)
    await h.fake.wait_until(lambda: not h.bot.get_channel(h.world.general.id).permissions_for(
        h.bot.get_guild(h.world.guild.id).me).attach_files, description="the overwrite to reach the bot")
    interaction = await h.imagine(h.world.alice, h.world.general, "a cat")
    text = await ephemeral_answer(h, interaction)
    assert "Attach Files" in text and f"<#{h.world.general.id}>" in text
    interaction = await h.imagine(h.world.wei, h.world.general, "一只猫")
    assert "附加文件" in await ephemeral_answer(h, interaction)
    assert job_rows(h) == []


# ---------------------------------------------------------------------- safety


async def test_server_safety_policy_outside_age_restricted_channels(brushwork_bot):
    h = brushwork_bot
    with h.store_rows() as uow:
        uow.settings.set_guild(h.world.guild.id, safety={"banned_words": ["gore", "血腥"],
                                                         "forced_negative": "nsfw, lowres"})
        uow.commit()
    refused = await h.imagine(h.world.alice, h.world.general, "a (GORE:1.3) scene")
    assert "does not allow `gore`" in await ephemeral_answer(h, refused)
    refused = await h.imagine(h.world.wei, h.world.general, "一个血腥的场景")
    assert "血腥" in await ephemeral_answer(h, refused)

    allowed = await h.imagine(h.world.alice, h.world.general, "a quiet scene --no blur")
    message = await h.wait_for_result(allowed)
    assert read_recipe(message.attachments[0].data).request.negative_prompt == "blur, nsfw, lowres"
    # In the age-restricted channel the server's list does not apply.
    adult = await h.imagine(h.world.alice, h.world.nsfw, "a gore scene --no blur")
    message = await h.wait_for_result(adult)
    assert read_recipe(message.attachments[0].data).request.negative_prompt == "blur"


class BlockOddSeeds:
    """A stand-in image classifier: blocks images whose top-left pixel is odd in red."""

    available = True

    def __init__(self) -> None:
        self.seen = 0

    def classify(self, images, policy):
        self.seen += len(images)
        return [Verdict(allowed=False, label="nsfw", score=0.99) if i == 1 else Verdict(allowed=True)
                for i, _ in enumerate(images)]


async def test_the_classifier_hook_withholds_blocked_images(brushwork_bot):
    h = brushwork_bot
    classifier = h.container._classifier = BlockOddSeeds()
    with h.store_rows() as uow:
        uow.settings.set_guild(h.world.guild.id, safety={"classify_images": True})
        uow.commit()
    interaction = await h.imagine(h.world.alice, h.world.general, "two birds --n 2 --seed 3")
    message = await h.wait_for_result(interaction)
    assert classifier.seen == 2
    assert len(message.attachments) == 1 and "1 image(s) withheld" in message.content
    with h.store_rows() as uow:
        visible = uow.images.history(_scope(h))
    assert len(visible) == 1  # the withheld one is deleted (the operator still has it)
    # Age-restricted channels are not screened.
    interaction = await h.imagine(h.world.alice, h.world.nsfw, "two birds --n 2 --seed 3")
    message = await h.wait_for_result(interaction)
    assert len(message.attachments) == 2 and classifier.seen == 2


# ---------------------------------------------------------------------- uploads


async def test_results_above_the_upload_limit_are_reencoded_never_dropped(brushwork_bot):
    h = brushwork_bot
    h.world.guild.attachment_size_limit = 6000  # a PNG of 96x96 noise with its recipe is larger
    interaction = await h.fake.slash(h.world.alice, h.world.general, "imagine",
                                     {"prompt": "noise --size 96x96 --steps 2 --n 2 --seed 9"})
    message = await h.wait_for_result(interaction)
    assert len(message.attachments) == 2
    assert all(a.filename.endswith((".webp", ".jpg")) and a.size <= 6000 for a in message.attachments)
    assert "Re-encoded to fit the upload limit" in message.content
    with Image.open(io.BytesIO(message.attachments[0].data)) as image:
        assert image.size[0] >= 48

    h.world.guild.attachment_size_limit = None  # 10 MiB: the original PNG, recipe included
    interaction = await h.imagine(h.world.alice, h.world.general, "noise --seed 9")
    message = await h.wait_for_result(interaction)
    assert read_recipe(message.attachments[0].data).request.seed == 9


# ---------------------------------------------------------------------- direct messages


async def test_direct_messages_use_the_users_defaults_not_the_servers(brushwork_bot):
    h = brushwork_bot
    with h.store_rows() as uow:
        uow.settings.set_guild(h.world.guild.id, defaults="--cfg 9", safety={"banned_words": ["cat"]})
        uow.settings.set_user(h.world.alice.id, defaults="--steps 3")
        uow.commit()
    dm = h.fake.dm_channel(h.world.alice)
    interaction = await h.fake.slash(h.world.alice, dm, "imagine", {"prompt": "a cat --size 64x64 --seed 4"})
    message = await h.wait_for_result(interaction)
    request = read_recipe(message.attachments[0].data).request
    assert (request.steps, request.cfg) == (3, 7)  # the user's default; not the server's --cfg 9
    in_server = await h.fake.slash(h.world.alice, h.world.general, "imagine", {"prompt": "a dog --size 64x64"})
    message = await h.wait_for_result(in_server)
    request = read_recipe(message.attachments[0].data).request
    assert (request.steps, request.cfg) == (3, 9)  # server defaults, then the user's over them


async def test_progress_shows_the_step_and_a_preview(brushwork_bot):
    h = brushwork_bot
    h.engine.pause_at_step(5)  # the queue sends a preview every 5 steps
    interaction = await h.imagine(h.world.wei, h.world.general, "一座山 --steps 8 --size 64x64", tiny=False)
    await h.fake.wait_for_response(interaction)
    await h.fake.wait_until(h.engine.paused.is_set, timeout=60, description="the run to reach step 5")
    status = interaction.original
    shown = await h.fake.wait_for_edit(status, lambda m: "第 5/8 步" in m.content, timeout=10)
    assert "▰" in shown.content and [a.filename for a in shown.attachments] == ["preview.png"]
    with Image.open(io.BytesIO(shown.attachments[0].data)) as preview:
        assert preview.width > 0
    assert [cid.split(":")[1] for cid in status.custom_ids] == ["c"]
    h.engine.resume()
    message = await h.wait_for_result(interaction)
    assert [a.filename.endswith(".png") and not a.filename.startswith("preview") for a in message.attachments] == [True]
