"""The result message's buttons (U1–U4, V1–V4, 🔁, ✏️ Remix, ℹ️, ✖, 🗑), the Remix modal, /tweak,
/info, the message menus and reactions — end to end against the fake Discord."""

from __future__ import annotations

import pytest

from generation.metadata import read_recipe
from storage.records import ImageRelation, Scope

pytestmark = pytest.mark.slow


def ids_of(message) -> list[str]:
    return [a.filename.rsplit(".", 1)[0] for a in message.attachments]


def recipe(message, index: int = 0):
    return read_recipe(message.attachments[index].data).request


def scope(h, user=None) -> Scope:
    return Scope(user_id=(user or h.world.alice).id, guild_id=h.world.guild.id)


async def result_of(h, user=None, prompt: str = "a red fox --seed 3 --n 2", channel=None):
    interaction = await h.imagine(user or h.world.alice, channel or h.world.general, prompt)
    return await h.wait_for_result(interaction)


async def ephemeral(h, interaction):
    response = await h.fake.wait_for_response(interaction)
    assert response.type == 4 and response.ephemeral, response
    return response.data or {}


async def test_upscale_and_vary_buttons(brushwork_bot):
    h = brushwork_bot
    message = await result_of(h)
    first, second = ids_of(message)

    click = await h.fake.click(h.world.wei, message, f"bw1:u:{second}")  # anyone in the server may
    upscaled = await h.wait_for_result(click)
    assert upscaled is not message and upscaled.channel_id == h.world.general.id
    assert upscaled.content.startswith(f"⬆️ 放大 `{second}`")  # wei clicked: her language
    request = recipe(upscaled)
    assert (request.width, request.height, request.seed) == (64, 64, 4) and request.hires.scale == 2
    assert [cid.split(":")[1] for cid in upscaled.custom_ids] == ["v", "r", "x", "i", "d"]  # no U on an upscale
    with h.store_rows() as uow:
        record = uow.images.get(ids_of(upscaled)[0], scope(h))
    assert (record.parent_public_id, record.relation, record.owner_id) == (second, ImageRelation.UPSCALE,
                                                                            h.world.wei.id)
    assert (record.width, record.height) == (128, 128)

    click = await h.fake.click(h.world.alice, message, f"bw1:v:{first}")
    varied = await h.wait_for_result(click)
    request = recipe(varied)
    assert request.seed == 3 and request.vary_seed is not None and request.vary_strength == 0.15
    assert varied.content.startswith(f"🔀 Variation of `{first}`")


async def test_reroll_button_rerolls_the_whole_batch(brushwork_bot):
    h = brushwork_bot
    message = await result_of(h)
    job = message.custom_ids[-1].split(":")[2]
    click = await h.fake.click(h.world.alice, message, f"bw1:r:{job}")
    rerolled = await h.wait_for_result(click)
    seeds = [recipe(rerolled, i).seed for i in range(2)]
    assert len(seeds) == 2 and seeds[1] == seeds[0] + 1 and seeds != [3, 4]
    assert recipe(rerolled).prompt == "a red fox" and recipe(rerolled).steps == 3
    assert rerolled.content.startswith(f"🔁 Reroll of `{ids_of(message)[0]}`")


async def test_remix_modal_keeps_the_seed_and_works_after_a_restart(brushwork_bot):
    h = brushwork_bot
    message = await result_of(h, prompt="a red fox, \\--not-a-flag --seed 3 --n 2 --cfg 6")
    job = message.custom_ids[-1].split(":")[2]
    click = await h.fake.click(h.world.alice, message, f"bw1:x:{job}")
    response = await h.fake.wait_for_response(click)
    assert response.type == 9
    inputs = {c["custom_id"]: c for c in _inputs(click.modal)}
    assert inputs["bw1:m:prompt"]["value"] == "a red fox, \\--not-a-flag"  # the prompt, escaped as typed
    flags = inputs["bw1:m:flags"]["value"]
    assert "--cfg 6" in flags and "--n 2" in flags and "--seed" not in flags
    assert click.modal["title"] == "Remix — the seed is kept"

    submit = await h.fake.submit_modal(click, {"bw1:m:prompt": "a blue fox"})
    remixed = await h.wait_for_result(submit)
    assert [recipe(remixed, i).seed for i in range(2)] == [3, 4]
    assert recipe(remixed).prompt == "a blue fox" and recipe(remixed).cfg == 6
    assert remixed.content.startswith(f"✏️ Remix of `{ids_of(message)[0]}`")

    second = await h.fake.click(h.world.alice, message, f"bw1:x:{job}")
    await h.fake.wait_for_response(second)
    await h.restart()  # the modal was opened by the previous process
    submit = await h.fake.submit_modal(second, {"bw1:m:prompt": "a green fox", "bw1:m:flags": "--n 1 --steps 3 --size 64x64"})
    remixed = await h.wait_for_result(submit)
    assert len(remixed.attachments) == 1 and recipe(remixed).seed == 3 and recipe(remixed).cfg == 7  # default


def _inputs(modal):
    for top in modal["components"]:
        for component in top.get("components", []) + ([top["component"]] if "component" in top else []):
            if component.get("type") == 4:
                yield component


async def test_info_button_shows_settings_infotext_and_python(brushwork_bot):
    h = brushwork_bot
    message = await result_of(h)
    first, second = ids_of(message)
    job = message.custom_ids[-1].split(":")[2]
    data = await ephemeral(h, await h.fake.click(h.world.alice, message, f"bw1:i:{job}"))
    embed = data["embeds"][0]
    assert embed["title"] == f"Image {first}"
    assert "Seed: 3" in embed["description"] and "Steps: 3" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Seed"] == "3" and f"`1` {first} · 3" in fields["Images of this job"]
    assert "from generation import generate" in fields["Python"] and "--seed 3" in fields["Python"]
    assert "--n 2" in fields["Python"]  # the snippet reproduces the whole job

    data = await ephemeral(h, await h.fake.click(h.world.wei, message, f"bw1:i:{job}"))
    assert data["embeds"][0]["title"] == f"图片 {first}"
    assert "种子" in {f["name"] for f in data["embeds"][0]["fields"]}


async def test_cancel_button_while_queued_and_running(brushwork_bot):
    h = brushwork_bot
    with h.engine.held():
        running = await h.imagine(h.world.alice, h.world.general, "running")
        await h.fake.wait_until(h.engine.entered.is_set, description="the first job to run")
        queued = await h.imagine(h.world.alice, h.world.general, "queued")
        await h.fake.wait_for_response(queued)
        status = queued.original
        await h.fake.wait_for_edit(status, lambda m: any(c.startswith("bw1:c:") for c in m.custom_ids))
        cancel_id = next(c for c in status.custom_ids if c.startswith("bw1:c:"))

        refused = await ephemeral(h, await h.fake.click(h.world.wei, status, cancel_id))
        assert "只有提交任务" in refused["content"]  # not hers, and no Manage Messages

        answer = await ephemeral(h, await h.fake.click(h.world.alice, status, cancel_id))
        assert answer["content"] == f"✖ Job `{cancel_id[6:]}` cancelled."
        await h.fake.wait_for_edit(status, lambda m: m.content.endswith("✖ Cancelled.") and not m.custom_ids)

        await h.fake.wait_until(lambda: any(c.startswith("bw1:c:") for c in running.original.custom_ids),
                                description="the running job's cancel button")
        running_cancel = next(c for c in running.original.custom_ids if c.startswith("bw1:c:"))
        answer = await ephemeral(h, await h.fake.click(h.world.admin, running.original, running_cancel))
        assert "stops at its next step" in answer["content"]  # an admin may cancel anyone's job
    await h.fake.wait_for_edit(running.original, lambda m: m.content.endswith("✖ Cancelled."))
    assert running.original.attachments == []


async def test_delete_button_needs_the_requester_or_manage_messages(brushwork_bot):
    h = brushwork_bot
    message = await result_of(h)
    job = message.custom_ids[-1].split(":")[2]
    refused = await ephemeral(h, await h.fake.click(h.world.wei, message, f"bw1:d:{job}"))
    assert "只有生成这些图片的人" in refused["content"] and not message.deleted

    click = await h.fake.click(h.world.alice, message, f"bw1:d:{job}")
    notice = await h.fake.wait_for_followup(click)
    assert notice.ephemeral and notice.content == "🗑️ Deleted 2 image(s)."
    assert message.deleted
    with h.store_rows() as uow:
        assert uow.images.history(scope(h)) == []

    other = await result_of(h, user=h.world.wei, prompt="一只猫")
    job = other.custom_ids[-1].split(":")[2]
    click = await h.fake.click(h.world.admin, other, f"bw1:d:{job}")  # Administrator: Manage Messages
    await h.fake.wait_for_followup(click)
    assert other.deleted


async def test_tweak_info_and_message_menus(brushwork_bot):
    h = brushwork_bot
    message = await result_of(h)
    first = ids_of(message)[0]
    link = f"https://discord.com/channels/{h.world.guild.id}/{h.world.general.id}/{message.id}"

    tweak = await h.fake.slash(h.world.alice, h.world.general, "tweak", {"image": first, "prompt": "--steps 4"})
    tweaked = await h.wait_for_result(tweak)
    request = recipe(tweaked)
    assert (request.prompt, request.seed, request.steps) == ("a red fox", 3, 4)
    tweak = await h.fake.slash(h.world.wei, h.world.general, "tweak", {"image": link, "prompt": "一只蓝狐狸"})
    tweaked = await h.wait_for_result(tweak)
    assert (recipe(tweaked).prompt, recipe(tweaked).seed) == ("一只蓝狐狸", 3)

    data = await ephemeral(h, await h.fake.slash(h.world.alice, h.world.general, "info", {"image": link}))
    assert data["embeds"][0]["title"] == f"Image {first}"
    data = await ephemeral(h, await h.fake.slash(h.world.alice, h.world.general, "info", {"image": "nope!"}))
    assert "neither an image id" in data["content"]

    shown = await h.fake.message_command(h.world.alice, h.world.general, "Show settings", message)
    data = await ephemeral(h, shown)
    assert data["embeds"][0]["title"] == f"Image {first}"
    remix = await h.fake.message_command(h.world.alice, h.world.general, "Remix", message)
    assert (await h.fake.wait_for_response(remix)).type == 9
    remixed = await h.wait_for_result(await h.fake.submit_modal(remix, {"bw1:m:prompt": "a fox in snow"}))
    assert recipe(remixed).seed == 3 and recipe(remixed).prompt == "a fox in snow"

    plain = await h.fake.post_message(h.world.alice, h.world.general, "hello")
    data = await ephemeral(h, await h.fake.message_command(h.world.alice, h.world.general, "Show settings", plain))
    assert "no Brushwork images" in data["content"]


def results(message):
    """A message's result images (progress edits carry a ``preview…`` attachment first)."""
    return [a for a in message.attachments if not a.filename.startswith("preview")]


async def test_reactions_reroll_upscale_and_vary(brushwork_bot):
    h = brushwork_bot
    message = await result_of(h)  # two images
    first, second = ids_of(message)
    fake, alice = h.fake, h.world.alice

    await fake.react(alice, message, "🔁")
    # the channel message is edited in place: progress (one tiled preview) first, then the two results
    rerolled = await fake.wait_for_message(lambda m: "Reroll of" in m.content and alice.mention in m.content
                                           and len(results(m)) == 2, channel=h.world.general, timeout=60)
    assert len(rerolled.attachments) == 2 and rerolled.interaction is None
    assert [recipe(rerolled, i).prompt for i in range(2)] == ["a red fox"] * 2

    await fake.react(alice, message, "⬆️")  # which image? the bot offers 1️⃣ 2️⃣
    await fake.wait_for_reaction(message, "2️⃣")
    await fake.react(alice, message, "2️⃣")
    upscaled = await fake.wait_for_message(lambda m: f"Upscale of `{second}`" in m.content and results(m),
                                           channel=h.world.general, timeout=60)
    assert alice.mention in upscaled.content and recipe(upscaled).hires is not None

    single = await result_of(h, user=h.world.wei, prompt="一只猫 --seed 8")  # wei's locale is now recorded
    await fake.react(h.world.wei, single, "🔀")
    varied = await fake.wait_for_message(lambda m: "的变体" in m.content and results(m),
                                         channel=h.world.general, timeout=60)
    assert h.world.wei.mention in varied.content and recipe(varied).seed == 8
    assert recipe(varied).vary_seed is not None

    await fake.react(alice, message, "👍")  # not ours: ignored
    plain = await fake.post_message(alice, h.world.general, "no images here")
    await fake.react(alice, plain, "🔁")  # not a result: ignored
    await h.bot.followers.wait(timeout=60)
    with h.store_rows() as uow:
        kinds = sorted(job.kind.value for job in uow.jobs.list_by_status("done"))
    assert kinds == ["generate", "generate", "reroll", "upscale", "vary"]


async def test_a_reroll_whose_channel_post_fails_is_queued_and_answered_by_dm(brushwork_bot):
    """The channel does not take the "queued" message (a 503 discord.py does not retry): the
    job is still queued and followed, its acknowledgement and result by direct message; never
    a "queued" message for a job that does not exist."""
    h = brushwork_bot
    message = await result_of(h, prompt="a lone fox --seed 3")
    fake, alice = h.fake, h.world.alice
    fake.inject_fault("POST", "/channels/{channel_id}/messages", status=503, count=1,
                      match={"channel_id": h.world.general.id})
    await fake.react(alice, message, "🔁")
    dm = fake.dm_channel(alice)
    done = await fake.wait_for_message(lambda m: results(m) and "Reroll of" in m.content, channel=dm, timeout=60)
    said = done.revisions[0].content  # the acknowledgement, before progress edits replaced it
    assert f"<#{h.world.general.id}>" in said and "just now" in said and "Reroll of" in said
    assert [recipe(done, i).prompt for i in range(len(results(done)))] == ["a lone fox"] * len(results(done))
    await h.bot.followers.wait(timeout=60)
    with h.store_rows() as uow:
        rerolls = [job for job in uow.jobs.list_by_status("done") if job.kind.value == "reroll"]
    assert len(rerolls) == 1 and rerolls[0].reply_ref["delivered"]


async def test_info_reads_the_recipe_of_an_uploaded_image(brushwork_bot):
    """``/info file:`` — PNG Info in Discord: a Brushwork PNG, an A1111 text naming a model this
    bot lacks, a JPEG copy (EXIF), and files without a recipe, each answered privately."""
    import io

    from PIL import Image

    from bot.attachments import fit_image
    from generation.metadata import png_bytes
    from generation.request import Request

    h = brushwork_bot

    async def info_about(user, filename, data):
        interaction = await h.fake.slash(user, h.world.general, "info", {"file": (filename, data)})
        await h.fake.wait_for_response(interaction)
        await h.fake.wait_until(lambda: interaction.original is not None and not interaction.original.loading,
                                description="the /info answer")
        assert interaction.original.ephemeral
        return interaction.original

    request = Request(prompt="a lighthouse at dusk", negative_prompt="blurry", seed=42, steps=3, cfg=6.0,
                      sampler="Euler a", width=64, height=64, model="tiny")
    noise = Image.effect_noise((64, 64), 80).convert("RGB")
    png = png_bytes(noise, request=request, model_hash="0123456789", lora_hashes={}, version="0.1.0")
    card = (await info_about(h.world.alice, "lighthouse.png", png)).embeds[0]
    fields = {field["name"]: field["value"] for field in card["fields"]}
    assert card["title"] == "Recipe in lighthouse.png"
    assert fields["Prompt"] == "a lighthouse at dusk" and fields["Seed"] == "42"
    assert fields["Written by"] == "Brushwork 0.1.0" and "Model here" not in fields  # tiny is here
    assert request.render() in fields["Flags (paste into /imagine)"]
    assert "Steps: 3, Sampler: Euler a" in card["description"]
    assert "generate('a lighthouse at dusk --no blurry" in fields["Python"]

    a1111 = ("a castle, <lora:ink:0.6>\nNegative prompt: lowres\nSteps: 20, Sampler: DPM++ 2M, "
                            "Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 512x768, Model hash: 6ce0161689, "
                            "Model: v1-5-pruned-emaonly, Version: v1.10.1")
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111)
    out = io.BytesIO()
    noise.save(out, "PNG", pnginfo=info)
    card = (await info_about(h.world.wei, "castle.png", out.getvalue())).embeds[0]  # wei reads Chinese
    fields = {field["name"]: field["value"] for field in card["fields"]}
    assert fields["写入者"] == "AUTOMATIC1111 格式的参数 v1.10.1"
    assert "v1-5-pruned-emaonly" in fields["本服务器的模型"] and "tiny" in fields["本服务器的模型"]
    assert "--lora ink:0.6" in fields["参数写法（可直接粘贴到 /imagine）"]
    assert a1111.splitlines()[-1] in card["description"]

    jpeg = fit_image("lighthouse.png", png, limit=len(png) // 2)
    assert not jpeg.original
    card = (await info_about(h.world.alice, jpeg.filename, jpeg.data)).embeds[0]
    assert {f["name"]: f["value"] for f in card["fields"]}["Seed"] == "42"

    plain = io.BytesIO()
    noise.save(plain, "PNG")
    answer = await info_about(h.world.alice, "screenshot.png", plain.getvalue())
    assert "no generation recipe" in answer.content
    answer = await info_about(h.world.alice, "notes.txt", b"just text")
    assert "not an image" in answer.content

    both = await h.fake.slash(h.world.alice, h.world.general, "info", {"image": "k3x9fq2a", "file": ("x.png", png)})
    data = await ephemeral(h, both)
    assert "not both" in data["content"]
    neither = await h.fake.slash(h.world.alice, h.world.general, "info", {})
    assert "not both and not neither" in (await ephemeral(h, neither))["content"]


async def test_imagine_from_one_of_your_images(brushwork_bot):
    """img2img: ``--image ID`` inline or the ``image`` option (an id or a result link); the result
    names its picture, offers U but no V, and another server's image cannot be a start."""
    h = brushwork_bot
    start = await result_of(h, prompt="a harbour --seed 3")
    sid = ids_of(start)[0]
    offered = await h.fake.autocomplete(h.world.alice, h.world.general, "imagine", {"prompt": "x", "image": "harb"},
                                        focused="image")  # your recent images, by prompt or id
    assert [(c["value"], c["name"]) for c in offered] == [(sid, f"{sid} · a harbour")]
    assert await h.fake.autocomplete(h.world.wei, h.world.general, "tweak", {"image": "", "prompt": "x"},
                                     focused="image") == []  # wei has made nothing yet
    made = await result_of(h, prompt=f"a harbour at night --image {sid} --strength 0.5")
    request = recipe(made)
    assert (request.image, request.hires.scale, request.hires.strength) == (sid, 1.0, 0.5)
    actions = [cid.split(":")[1] for cid in made.custom_ids]
    assert actions == ["u", "r", "x", "i", "d"]  # no V: a variation seed shapes noise the picture replaced
    assert f"from {sid} at strength 0.5" in made.content and "hires" not in made.content
    card = await ephemeral(h, await h.fake.click(h.world.alice, made, next(c for c in made.custom_ids
                                                                         if c.startswith("bw1:i:"))))
    fields = {f["name"]: f["value"] for f in card["embeds"][0]["fields"]}
    assert fields["Started from"] == f"`{sid}` (img2img, strength 0.5)"
    assert f"image_files={{'{sid}': '{sid}.png'}}" in fields["Python"]

    link = f"https://discord.com/channels/{h.world.guild.id}/{h.world.general.id}/{start.id}"
    option = await h.imagine(h.world.wei, h.world.general, "一座夜晚的港口 --strength 0.6", image=link)
    assert recipe(await h.wait_for_result(option)).image == sid

    upscaled = await h.wait_for_result(await h.fake.click(h.world.alice, made, f"bw1:u:{ids_of(made)[0]}"))
    assert recipe(upscaled).image == ids_of(made)[0] and recipe(upscaled).hires.scale == 2.0

    other = h.fake.add_guild("Other Server")
    lobby = h.fake.add_channel(other, "lobby")
    bob = h.fake.add_user("bob", guild=other)
    await h.fake.wait_until(lambda: h.bot.get_channel(lobby.id) is not None, description="the new guild")
    data = await ephemeral(h, await h.imagine(bob, lobby, f"a boat --image {sid}"))
    assert f"no image `{sid}` here to start from" in data["content"]


async def test_imagine_from_a_picture_you_upload(brushwork_bot):
    """``/imagine picture:``: the upload is checked and kept, "thinking…" becomes the
    acknowledgement, and the result starts from it; a bad picture is answered privately."""
    import io

    from PIL import Image

    h = brushwork_bot
    out = io.BytesIO()
    Image.effect_noise((96, 64), 60).convert("RGB").save(out, "JPEG")
    upload = await h.imagine(h.world.alice, h.world.general, "a castle in the fog --strength 0.5",
                             picture=("holiday.jpg", out.getvalue()))
    made = await h.wait_for_result(upload)
    request = recipe(made)
    assert request.image is not None and request.hires.strength == 0.5
    with h.store_rows() as uow:
        kept = uow.uploads.get(request.image, scope(h))
    assert (kept.width, kept.height, kept.original_name) == (96, 64, "holiday.jpg")
    assert made is upload.original and not made.ephemeral  # the deferred message became the result

    # A picture found bad after the public "thinking…" (its bytes are read after the defer):
    # Discord gives the defer's first follow-up the defer's visibility, and a follow-up after the
    # loading message was deleted fails (404), so "thinking…" itself becomes the reason.
    bomb = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(bomb, "PNG")  # 144 Mpx: over Pillow's bomb limit, tiny on disk
    for name, data, reason in (("notes.png", b"just text", "is not an image"),
                               ("bomb.png", bomb.getvalue(), "bomb.png")):
        bad = await h.imagine(h.world.alice, h.world.general, "a castle", picture=(name, data))
        await h.fake.wait_until(lambda bad=bad: bad.original is not None and not bad.original.loading,
                                description=f"the reason {name} is refused")
        assert not bad.original.deleted and reason in bad.original.content, bad.original.content
        assert bad.original.components == [] and h.fake.internal_errors == []

    both = await h.imagine(h.world.alice, h.world.general, "a castle", image=ids_of(made)[0],
                           picture=("holiday.jpg", out.getvalue()))
    assert "not both" in (await ephemeral(h, both))["content"]
