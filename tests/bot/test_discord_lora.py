"""``/lora`` end to end against the fake Discord, on the tiny model (64 px images, a few steps):
a dataset from attachments → a training with live progress → a ready LoRA that changes
``/imagine``'s image of the same seed; another server neither sees nor uses it; every bad upload
refused with its reason (sizes before any download); progress and the cancel button; rights
(Manage Server, the trainer role) on every call and click; export downloads; import refuses
pickles; a training waiting at a restart is followed again; commands in English and Chinese."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from storage.records import LoraStatus, Scope
from tests.bot.harness import RESULT_TIMEOUT

pytestmark = pytest.mark.slow

#: Small, fast trainings: 64 px, rank 4, a high learning rate so that 6 steps show in the image.
TRAIN = {"steps": 6, "rank": 4, "learning_rate": 0.01, "resolution": 64, "trigger_word": "inkwash"}
PROMPT = "inkwash, a mountain above the clouds --seed 1234 --sampler euler_a"


@pytest.fixture
def bot_settings():
    # a sample every 2 steps; a small image cap so that "too large" is cheap to provoke
    return {"training_sample_every": 2, "dataset_max_image_mb": 0.5}


def picture(seed: int, size=(64, 64), fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def captioned_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("ink/10.png", picture(10, (96, 64)))
        archive.writestr("ink/10.txt", "a river at dawn")
        archive.writestr("ink/11.png", picture(11, (64, 96)))
    return out.getvalue()


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


async def answer(h, user, channel, command, options=None, **kwargs):
    """A command's answer to the user: the first response, or what replaced the "thinking…" message."""
    interaction = await h.slash(user, channel, command, options, **kwargs)
    await h.fake.wait_for_response(interaction)
    await h.fake.wait_until(lambda: interaction.original is not None and not interaction.original.loading,
                            timeout=RESULT_TIMEOUT, description=f"the answer to /{command}")
    return interaction.original


async def make_dataset(h, user, name="ink"):
    w = h.world
    created = await answer(h, user, w.general, "lora dataset create", {"name": name})
    assert created.ephemeral and f"Dataset `{name}` created" in created.content
    added = await answer(h, user, w.general, "lora dataset add", {"name": name, "caption": "a mountain above the clouds"},
                         attachments=[(f"{i}.png", picture(i)) for i in range(3)] + [("more.zip", captioned_zip())])
    assert added.ephemeral and f"Added 5 image(s) to `{name}`, which now has 5" in added.content, added.content
    return added


def ready_announced(message) -> bool:
    return "is ready" in message.content and any("before-after" in a.filename for a in message.attachments)


# ---------------------------------------------------------------------- the whole path


async def test_dataset_from_attachments_training_announcement_and_imagine_with_the_lora(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    added = await make_dataset(h, w.alice)
    assert "`#4` `ink/10.png` — a river at dawn" in added.content, added.content  # the zip's own caption
    assert "`#1` `0.png` — a mountain above the clouds" in added.content

    # the contact sheet, and a caption edited through its ✏️ button and form
    sheet = await answer(h, w.alice, w.general, "lora dataset show", {"name": "ink"})
    assert sheet.ephemeral and sheet.attachments[0].filename == "ink-sheet.png"
    assert sheet.embeds[0]["title"] == "Dataset ink — 5 images"
    assert len([c for c in sheet.custom_ids if c.startswith("bwl1:e:")]) == 5
    click = await fake.click(w.alice, sheet, sheet.custom_ids[2])
    await fake.wait_for_response(click)
    assert click.modal is not None and click.modal["title"] == "Caption of #3 in ink"
    submitted = await fake.submit_modal(click, {"bwl1:m:caption": "a pagoda in the fog"})
    await fake.wait_for_response(submitted)
    assert submitted.original.content == "✅ Caption of #3 in `ink`: a pagoda in the fog"
    with h.store_rows() as uow:
        images = uow.datasets.images(Scope(user_id=w.alice.id, guild_id=w.guild.id), "ink")
    assert [i.caption for i in images][:3] == ["a mountain above the clouds", "a mountain above the clouds",
                                               "a pagoda in the fog"]

    # training: a public message (progress and samples: see the cancel test), then the announcement
    interaction = await h.slash(w.admin, w.general, "lora train", {"name": "ink", "dataset": "ink", **TRAIN})
    await fake.wait_for_response(interaction)
    message = interaction.original
    await fake.wait_until(lambda: not message.loading, description="the training message")
    assert not message.ephemeral
    assert message.content.startswith("🏋️ Training LoRA **ink** on dataset `ink` (5 images) · tiny · 6 steps")
    assert any(c.startswith("bwl1:c:") for c in message.custom_ids)
    await fake.wait_until(lambda: ready_announced(message), timeout=RESULT_TIMEOUT, description="the announcement")
    lines = message.content.splitlines()
    assert lines[1].startswith("✅ LoRA **ink** is ready: 6 steps · rank 4 · tiny · hash `")
    assert "--lora ink:0.8" in lines[2] and message.components == []
    with h.store_rows() as uow:
        lora = uow.loras.get(Scope(user_id=w.admin.id, guild_id=w.guild.id), "ink")
    assert lora.status is LoraStatus.READY and lora.short_hash in lines[1]
    with Image.open(io.BytesIO(message.attachments[0].data)) as pair:
        assert pair.width > 2 * 64

    # /imagine with the LoRA draws another picture from the same seed
    styled = await h.wait_for_result(await h.imagine(w.alice, w.general, f"{PROMPT} --lora ink:1"))
    plain = await h.wait_for_result(await h.imagine(w.alice, w.general, PROMPT))
    assert not np.array_equal(pixels(styled.attachments[0].data), pixels(plain.attachments[0].data))
    assert "LoRA ink:1" in styled.content

    # another server: nothing to see, list, complete, export or use
    other = fake.add_guild("Elsewhere")
    elsewhere = fake.add_channel(other, "general")
    bob = fake.add_user("bob", guild=other)
    owner = fake.users[other.owner_id]
    await fake.wait_until(lambda: h.bot.get_channel(elsewhere.id) is not None, description="the new server")
    listed = await answer(h, owner, elsewhere, "lora list")
    assert "No LoRA here yet" in listed.embeds[0]["description"] and "ink" not in listed.embeds[0]["description"]
    choices = await fake.autocomplete(bob, elsewhere, "lora info", {"name": "i"}, focused="name")
    assert choices == []
    assert [c["name"] for c in await fake.autocomplete(w.alice, w.general, "lora info", {"name": "i"},
                                                       focused="name")] == ["ink"]
    exported = await answer(h, owner, elsewhere, "lora export", {"name": "ink"})
    assert exported.attachments == [] and "There is no LoRA named `ink` here" in exported.content
    deleted = await answer(h, owner, elsewhere, "lora delete", {"name": "ink"})
    assert deleted.components == [] and "There is no LoRA named `ink` here" in deleted.content
    refused = await h.imagine(bob, elsewhere, f"{PROMPT} --lora ink:1")
    await fake.wait_for_response(refused)
    assert refused.original.ephemeral
    assert refused.original.content == "LoRA `ink` is not available: no LoRAs are installed here yet."


# ---------------------------------------------------------------------- uploads


async def test_every_bad_upload_is_refused_with_its_reason_and_sizes_come_first(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    await answer(h, w.alice, w.general, "lora dataset create", {"name": "ink"})

    # too large by the size Discord announces: that file is refused before it is downloaded,
    # the others of the upload are added (in a direct message: the user's own datasets)
    dm = fake.dm_channel(w.alice)
    await answer(h, w.alice, dm, "lora dataset create", {"name": "sizes"})
    huge = ("huge.png", b"\x89PNG\r\n\x1a\n" + bytes(600 * 1024))
    interaction = await h.slash(w.alice, dm, "lora dataset add", {"name": "sizes"},
                                attachments=[("04.png", picture(1)), huge])
    await fake.wait_until(lambda: interaction.original is not None and not interaction.original.loading,
                          timeout=RESULT_TIMEOUT, description="the answer")
    lines = interaction.original.content.splitlines()
    assert lines[0] == "✅ Added 1 image(s) to `sizes`, which now has 1:" and "`04.png`" in lines[1], lines
    assert lines[2].startswith("❌") and lines[3] == "• `huge.png` is 0.6 MB: images may be up to 0.5 MB. " \
        "Resize it or save it as JPEG or WebP, then upload it again.", lines
    options = interaction.payload["data"]["resolved"]["attachments"]
    huge_id = next(int(a["id"]) for a in options.values() if a["filename"] == "huge.png")
    assert len(fake.cdn_downloads) == 1 and huge_id not in fake.cdn_downloads

    # a mixed upload: the good ones are added, each refused one is named with its reason
    unsafe = io.BytesIO()
    with zipfile.ZipFile(unsafe, "w") as archive:
        archive.writestr("../evil.png", picture(7))
    text = (await answer(h, w.wei, w.general, "lora dataset add", {"name": "ink"}, attachments=[
        ("good.png", picture(1)), ("notes.png", "这不是图片".encode()), ("anim.gif", picture(2, fmt="GIF")),
        ("small.png", picture(3, (32, 32))), ("evil.zip", unsafe.getvalue()), ("again.png", picture(1)),
    ])).content
    lines = text.splitlines()
    assert lines[0] == "✅ 已向 `ink` 添加 1 张图片，现在共有 1 张：" and lines[1].startswith("`#1` `good.png`")
    assert lines[2] == "❌ 未添加（5 个）："
    assert [line.split("`")[1] for line in lines[3:8]] == ["notes.png", "anim.gif", "small.png", "../evil.png",
                                                           "again.png"]
    assert "GIF" in lines[4] and "32×32" in lines[5]

    # nothing good at all: still every file with its own reason
    text = (await answer(h, w.alice, w.general, "lora dataset add", {"name": "ink"}, attachments=[
        ("same.png", picture(1)), ("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")])).content
    lines = text.splitlines()
    assert lines[0] == "❌ Nothing was added to `ink` (2 refused):"
    assert "`same.png` is the same picture as image #1 (`good.png`)" in lines[1]
    assert lines[2].startswith("• `broken.jpg`")
    with h.store_rows() as uow:
        assert uow.datasets.get(Scope(user_id=w.alice.id, guild_id=w.guild.id), "ink").image_count == 1

    # a dataset of another name, or of another server, is not there
    text = (await answer(h, w.alice, w.general, "lora dataset add", {"name": "nope"},
                         attachments=[("x.png", picture(9))])).content
    assert text == "There is no dataset named `nope` here. Datasets here: ink."


# ---------------------------------------------------------------------- progress and cancel


async def test_a_training_shows_progress_and_samples_and_its_button_cancels_it(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    await make_dataset(h, w.alice)
    interaction = await h.slash(w.admin, w.general, "lora train",
                                {"name": "slow", "dataset": "ink", **{**TRAIN, "steps": 3000}})
    await fake.wait_for_response(interaction)
    message = interaction.original

    def sampled() -> bool:
        return "🏋️ step" in message.content and "🖼️" in message.content and any(
            a.filename.startswith("sample-") for a in message.attachments)

    await fake.wait_until(sampled, timeout=RESULT_TIMEOUT, description="progress with a sample image")
    progress, sample_line = message.content.splitlines()[1:3]
    assert progress.startswith("🏋️ step ") and "/3000 ▱" in progress and " · loss " in progress
    assert progress.endswith(" left") and sample_line.startswith("🖼️ Sample at step ")
    sample = next(a for a in message.attachments if a.filename.startswith("sample-"))
    assert sample.data.startswith(b"\x89PNG") and int(sample.filename[7:13]) == int(sample_line.split()[4])
    with Image.open(io.BytesIO(sample.data)) as image:
        assert image.size == (64, 64)  # drawn at the training's resolution from the fixed prompt and seed
    assert len([r for r in message.revisions if r.via != "callback 5"]) >= 2  # edited as it went
    button = next(c for c in message.custom_ids if c.startswith("bwl1:c:"))
    assert len(button) <= 100

    # alice neither started it nor manages the server: refused, privately
    click = await fake.click(w.alice, message, button)
    await fake.wait_for_response(click)
    assert click.original.ephemeral and "Manage Server" in click.original.content
    # its starter may
    click = await fake.click(w.admin, message, button)
    await fake.wait_for_response(click)
    assert click.original.ephemeral and click.original.content.startswith("✖ Training `slow` cancelled")
    await fake.wait_until(lambda: "was cancelled" in message.content, timeout=RESULT_TIMEOUT,
                          description="the message to say cancelled")
    assert message.components == []
    with h.store_rows() as uow:
        assert uow.loras.get(Scope(user_id=w.admin.id, guild_id=w.guild.id), "slow").status is LoraStatus.FAILED


# ---------------------------------------------------------------------- rights, config, deleting


async def test_rights_are_checked_on_every_call_and_click(brushwork_bot, make_lora, tmp_path):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    await make_dataset(h, w.alice)
    text = (await answer(h, w.alice, w.general, "lora train", {"name": "mine", "dataset": "ink"})).content
    assert text.startswith("Only members with the Manage Server permission or the server's trainer role")
    assert [m for m in fake.channel_messages(w.general) if m.author is fake.bot] == []  # nothing public
    text = (await answer(h, w.alice, w.general, "lora config", {"folder_loras": False})).content
    assert "Manage Server" in text
    # a refusal that only reads (a dataset that is not there) comes before the public
    # acknowledgement, so it is private too (a deferred "thinking…" could only become public)
    refusal = await answer(h, w.admin, w.general, "lora train", {"name": "mine", "dataset": "nope"})
    assert refusal.ephemeral and refusal.content == "There is no dataset named `nope` here. Datasets here: ink."
    assert [m for m in fake.channel_messages(w.general) if m.author is fake.bot] == []

    trainers = fake.add_role(w.guild, "Trainers")
    text = (await answer(h, w.admin, w.general, "lora config", {"trainer_role": trainers})).content
    assert text.splitlines()[0] == "✅ Saved. LoRA settings of this server:" and f"<@&{trainers.id}>" in text
    fake.set_roles(w.guild, w.alice, [trainers])
    lora_file = make_lora(tmp_path, "watercolor").read_bytes()
    text = (await answer(h, w.alice, w.general, "lora import", {"file": ("watercolor.safetensors", lora_file)})).content
    assert text.startswith("✅ Imported LoRA **watercolor**: rank 4 · tiny · hash `")

    # deleting asks first; the confirmation is the asker's and re-checks rights when clicked
    confirm = await answer(h, w.alice, w.general, "lora delete", {"name": "watercolor"})
    assert confirm.ephemeral and "Delete LoRA `watercolor`" in confirm.content
    delete_id = next(c for c in confirm.custom_ids if c.startswith("bwl1:dl:"))
    assert delete_id.endswith(f":{w.alice.id}")
    fake.set_roles(w.guild, w.alice, [])  # the role is taken away before the click
    click = await fake.click(w.alice, confirm, delete_id)
    await fake.wait_for_response(click)
    assert "Manage Server" in click.original.content
    fake.set_roles(w.guild, w.alice, [trainers])
    click = await fake.click(w.alice, confirm, delete_id)
    await fake.wait_for_response(click)
    assert confirm.content == "🗑 LoRA `watercolor` was deleted." and confirm.components == []
    with h.store_rows() as uow:
        assert uow.loras.list(Scope(user_id=w.alice.id, guild_id=w.guild.id)) == []

    # datasets: the same, and "keep" changes nothing
    confirm = await answer(h, w.wei, w.general, "lora dataset delete", {"name": "ink"})
    assert "只有拥有“管理服务器”权限" in confirm.content
    confirm = await answer(h, w.admin, w.general, "lora dataset delete", {"name": "ink"})
    keep = next(c for c in confirm.custom_ids if c.startswith("bwl1:k:"))
    click = await fake.click(w.admin, confirm, keep)
    await fake.wait_for_response(click)
    assert confirm.content == "Kept: nothing was deleted."
    confirm = await answer(h, w.admin, w.general, "lora dataset delete", {"name": "ink"})
    click = await fake.click(w.admin, confirm, next(c for c in confirm.custom_ids if c.startswith("bwl1:dd:")))
    await fake.wait_for_response(click)
    assert confirm.content == "🗑 Dataset `ink` and its 5 images were deleted."


async def test_direct_messages_are_each_members_own_namespace(brushwork_bot, make_lora, tmp_path):
    h = brushwork_bot
    w = h.world
    dm = h.fake.dm_channel(w.alice)
    lora_file = make_lora(tmp_path, "mine").read_bytes()
    text = (await answer(h, w.alice, dm, "lora import", {"file": ("mine.safetensors", lora_file)})).content
    assert text.startswith("✅ Imported LoRA **mine**")  # her own namespace: no server rights needed
    listed = await answer(h, w.alice, dm, "lora list")
    assert listed.embeds[0]["title"] == "Your LoRAs" and "`mine`" in listed.embeds[0]["description"]
    listed = await answer(h, w.alice, w.general, "lora list")  # not the server's
    assert "`mine`" not in listed.embeds[0]["description"]
    text = (await answer(h, w.wei, h.fake.dm_channel(w.wei), "lora info", {"name": "mine"})).content
    assert "没有名为 `mine` 的 LoRA" in text
    text = (await answer(h, w.alice, dm, "lora config", {"folder_loras": False})).content
    assert text and "server" in text.lower()


# ---------------------------------------------------------------------- files


async def test_export_downloads_the_file_and_import_refuses_pickles(brushwork_bot, make_lora, tmp_path):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    path = make_lora(tmp_path, "watercolor")
    await answer(h, w.admin, w.general, "lora import", {"file": ("watercolor.safetensors", path.read_bytes())})

    exported = await answer(h, w.alice, w.general, "lora export", {"name": "watercolor"})
    assert exported.ephemeral and exported.attachments[0].filename == "watercolor.safetensors"
    with h.store_rows() as uow:
        record = uow.loras.get(Scope(user_id=w.admin.id, guild_id=w.guild.id), "watercolor")
    assert exported.attachments[0].data == h.container.loras.files.absolute(record.file_path).read_bytes()
    kohya = await answer(h, w.alice, w.general, "lora export", {"name": "watercolor", "kohya": True})
    assert kohya.attachments[0].filename == "watercolor-kohya.safetensors" and "AUTOMATIC1111" in kohya.content
    saved = tmp_path / "kohya.safetensors"
    saved.write_bytes(kohya.attachments[0].data)
    with safe_open(str(saved), "pt") as handle:
        assert all(key.startswith("lora_unet_") for key in handle.keys())

    # pickles: by name before the download, by content after it
    downloads = len(fake.cdn_downloads)
    payload = pickle.dumps({"weights": [1, 2, 3]}, protocol=4)
    text = (await answer(h, w.admin, w.general, "lora import", {"file": ("style.ckpt", payload)})).content
    assert "arbitrary code" in text and len(fake.cdn_downloads) == downloads
    text = (await answer(h, w.admin, w.general, "lora import", {"file": ("style.safetensors", payload)})).content
    assert "arbitrary code" in text and len(fake.cdn_downloads) == downloads + 1
    with h.store_rows() as uow:
        assert [r.name for r in uow.loras.list(Scope(user_id=w.admin.id, guild_id=w.guild.id))] == ["watercolor"]


# ---------------------------------------------------------------------- restarts and languages


async def test_a_training_waiting_at_a_restart_is_announced_after_it(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    await make_dataset(h, w.alice)
    with h.engine.held():  # an image job holds the worker: the training waits behind it
        await h.imagine(w.alice, w.general, "a boat")
        await fake.wait_until(h.engine.entered.is_set, timeout=30, description="the worker to be busy")
        interaction = await h.slash(w.admin, w.general, "lora train", {"name": "ink", "dataset": "ink", **TRAIN})
        await fake.wait_for_response(interaction)
        message = interaction.original
        await fake.wait_until(lambda: not message.loading and any(c.startswith("bwl1:c:") for c in message.custom_ids),
                              description="the training queued")
        assert "Queued" in message.content or "Next in the queue" in message.content
        await h.restart()
    await fake.wait_until(lambda: ready_announced(message), timeout=RESULT_TIMEOUT,
                          description="the announcement after a restart")

    def delivered() -> bool:  # answered: the interaction token left the job's row
        with h.store_rows() as uow:
            lora = uow.loras.get(Scope(user_id=w.admin.id, guild_id=w.guild.id), "ink")
            ref = uow.jobs.get(lora.job_public_id, Scope.local_operator()).reply_ref
        return bool(ref.get("delivered")) and ref.get("token") is None and ref.get("v") == "lora1"

    await fake.wait_until(delivered, description="the reply reference marked delivered")


async def test_after_the_token_expired_progress_goes_through_the_channel_and_the_result_mentions_the_user(
        brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    await make_dataset(h, w.alice)
    interaction = await h.slash(w.admin, w.general, "lora train", {"name": "ink", "dataset": "ink", **TRAIN},
                                expired=True)  # as if it had waited 16 minutes in the queue
    await fake.wait_for_response(interaction)

    def announced():
        return next((m for m in fake.channel_messages(w.general) if m.interaction is None and m.author is fake.bot
                     and w.admin.mention in m.content and ready_announced(m)), None)

    posted = await fake.wait_until(announced, timeout=RESULT_TIMEOUT, description="the announcement in the channel")
    assert posted.content.startswith("🏋️ Training LoRA **ink**") and f"— {w.admin.mention}\n✅" in posted.content
    post = next(r for r in fake.requests_to("POST", "/channels/{channel_id}/messages")
                if "ink-before-after.png" in r.filenames)
    assert [int(u) for u in post.json["allowed_mentions"]["users"]] == [w.admin.id]  # pinged: the answer came elsewhere
    message = interaction.original
    assert "The result is posted below." in message.content and message.components == []
    assert any("🏋️ step" in r.content and "channel" in r.via for r in message.revisions)  # edited through the channel


async def test_commands_are_described_in_english_and_chinese_within_discords_limits(brushwork_bot):
    h = brushwork_bot
    command = h.fake.command("lora")
    assert command["description_localizations"]["zh-CN"] == "训练和使用本服务器自己的 LoRA 风格"

    def walk(node):
        yield node
        for option in node.get("options") or ():
            yield from walk(option)

    nodes = list(walk(command))
    add = next(n for n in nodes if n.get("name") == "add")
    assert [o["name"] for o in add["options"] if o["type"] == 11] == ["images"] + [f"image{i}" for i in range(2, 11)]
    for locale in (None, "zh-CN"):
        total = 0
        for node in nodes:
            description = (node.get("description_localizations") or {}).get(locale) if locale else None
            description = description or node["description"]
            assert 1 <= len(description) <= 100, description
            total += len(node["name"]) + len(description)
        assert total <= 4000, (locale, total)  # Discord's limit for one command with its options
    assert all(n.get("description_localizations", {}).get("zh-CN") for n in nodes if n is not command)


async def test_caption_and_delete_buttons_sent_before_a_restart_work_after_it(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    await make_dataset(h, w.alice)
    sheet = await answer(h, w.alice, w.general, "lora dataset show", {"name": "ink"})
    confirm = await answer(h, w.admin, w.general, "lora dataset delete", {"name": "ink"})
    await h.restart()  # the bwl1: buttons are DynamicItems: the new process knows them from their ids

    click = await fake.click(w.alice, sheet, sheet.custom_ids[0])
    await fake.wait_for_response(click)
    assert click.modal is not None and click.modal["title"] == "Caption of #1 in ink"
    submitted = await fake.submit_modal(click, {"bwl1:m:caption": "雪山 at night"})
    await fake.wait_for_response(submitted)
    assert submitted.original.content == "✅ Caption of #1 in `ink`: 雪山 at night"

    click = await fake.click(w.admin, confirm, next(c for c in confirm.custom_ids if c.startswith("bwl1:dd:")))
    await fake.wait_for_response(click)
    assert confirm.content == "🗑 Dataset `ink` and its 5 images were deleted."
    with h.store_rows() as uow:
        assert uow.datasets.list(Scope(user_id=w.admin.id, guild_id=w.guild.id)) == []
