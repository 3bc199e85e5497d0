"""``/history``: your own images here, newest first, five a page, with restart-proof prev/next
buttons — the paging service (:mod:`bot.history`) and the command end to end."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from bot.history import HistoryService, message_link
from storage.archive import save_image
from storage.records import NewImage, Scope

ALICE, BOB, GUILD, OTHER = 31, 32, 4242, 5353
START = datetime(2026, 1, 1, tzinfo=UTC)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


def add_images(container, owner: int, guild: int | None, count: int, *, prompt: str = "image",
               channel_id: int | None = None, message_id: int | None = None) -> list[str]:
    """Rows (with a small PNG) one minute apart, oldest first; returns their ids."""
    ids = []
    for index in range(count):
        moment = START + timedelta(minutes=len(_clock_log))
        _clock_log.append(moment)
        new = NewImage(owner_id=owner, guild_id=guild, prompt=f"{prompt} {index}", seed=1000 + index, steps=2,
                       cfg=7.0, sampler="Euler a", width=64, height=64, model="tiny",
                       request={"prompt": f"{prompt} {index}"}, canonical=f"{prompt} {index}",
                       channel_id=channel_id, message_id=message_id)
        ids.append(save_image(container.unit_of_work, container.store, PNG, new, clock=lambda m=moment: m).public_id)
    return ids


_clock_log: list[datetime] = []


@pytest.fixture
def container(make_container):
    return make_container()


def test_pages_are_anchored_scoped_and_restart_when_the_anchor_is_gone(container):
    mine = add_images(container, ALICE, GUILD, 12)
    add_images(container, BOB, GUILD, 2)  # someone else's, same server
    add_images(container, ALICE, OTHER, 3)  # mine, another server
    dms = add_images(container, ALICE, None, 2)
    history = HistoryService(container.unit_of_work)
    scope = Scope(user_id=ALICE, guild_id=GUILD)

    first = history.page(scope)
    assert [r.public_id for r in first.entries] == mine[::-1][:5]
    assert first.anchor == mine[-1] and first.has_next and not first.has_prev
    add_images(container, ALICE, GUILD, 1)  # new images do not shift the pages
    second = history.page(scope, anchor=first.anchor, page=1)
    assert [r.public_id for r in second.entries] == mine[::-1][5:10] and second.first_number == 6
    third = history.page(scope, anchor=first.anchor, page=2)
    assert [r.public_id for r in third.entries] == mine[::-1][10:] and not third.has_next and third.has_prev
    assert history.page(scope, anchor=first.anchor, page=0).entries == first.entries

    assert [r.public_id for r in history.page(Scope(user_id=ALICE)).entries] == dms[::-1]
    assert history.page(Scope(user_id=BOB, guild_id=OTHER)).entries == ()
    # an anchor that is not the caller's (another user's, another server's, deleted) starts over
    for anchor in (first.anchor, "zzzzzzzz", "../../x"):
        page = history.page(Scope(user_id=BOB, guild_id=GUILD), anchor=anchor, page=1)
        assert page.restarted and page.page == 0 and all(r.owner_id == BOB for r in page.entries)
    with container.unit_of_work() as uow:
        uow.images.soft_delete(first.anchor, scope)
        uow.commit()
    again = history.page(scope, anchor=first.anchor, page=1)
    assert again.restarted and again.page == 0


def test_each_page_has_a_numbered_contact_strip_of_its_images(container):
    colours = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]
    ids = []
    for index, colour in enumerate(colours):
        buffer = io.BytesIO()
        Image.new("RGB", (96, 64), colour).save(buffer, format="PNG")
        new = NewImage(owner_id=ALICE, guild_id=GUILD, prompt=f"colour {index}", seed=index, steps=2, cfg=7.0,
                       sampler="Euler a", width=96, height=64, model="tiny", request={"prompt": "c"}, canonical="c")
        moment = START + timedelta(hours=index)
        ids.append(save_image(container.unit_of_work, container.store, buffer.getvalue(), new,
                              clock=lambda m=moment: m).public_id)
    history = container.history
    page = history.page(Scope(user_id=ALICE, guild_id=GUILD))
    # the newest image's file is gone: its tile is dark, the others still show
    with container.unit_of_work() as uow:
        container.store.absolute(uow.images.get(ids[-1], Scope.local_operator()).file_path).unlink()
    with Image.open(io.BytesIO(history.strip(page, thumb=60))) as strip:
        assert strip.format == "JPEG"
        strip = strip.convert("RGB")
    width, height = strip.size
    assert width >= 3 * 60 and height >= 40  # three tiles scaled to 60×40, numbers above them
    row = height - 2 - 20  # through the middle of the tiles
    centres = [strip.getpixel((x, row)) for x in (4 + 30, 4 + 64 + 30, 4 + 2 * 64 + 30)]

    def near(pixel, colour):
        return all(abs(a - b) <= 24 for a, b in zip(pixel, colour, strict=True))

    assert near(centres[0], (64, 64, 72))  # 1. the newest (its file is missing)
    assert near(centres[1], colours[1]) and near(centres[2], colours[0])  # 2., 3.: newest first, like the list
    assert history.strip(history.page(Scope(user_id=BOB, guild_id=GUILD))) is None  # nothing to show


def test_message_links():
    class Row:
        guild_id, channel_id, message_id = GUILD, 7, 8

    assert message_link(Row()) == f"https://discord.com/channels/{GUILD}/7/8"
    Row.guild_id = None
    assert message_link(Row()) == "https://discord.com/channels/@me/7/8"
    Row.message_id = None
    assert message_link(Row()) is None


async def test_history_pages_end_to_end_and_after_a_restart(brushwork_bot):
    h = brushwork_bot
    w = h.world
    fake = h.fake
    mine = add_images(h.container, w.alice.id, w.guild.id, 11, prompt="a lighthouse at dusk, oil painting",
                      channel_id=w.general.id, message_id=777)
    add_images(h.container, w.wei.id, w.guild.id, 1, prompt="灯塔")

    interaction = await h.slash(w.alice, w.general, "history")
    await fake.wait_for_response(interaction)
    message = interaction.original
    assert message.ephemeral
    embed = message.embeds[0]
    assert embed["title"] == "Your images in this server"
    entries = embed["description"].split("\n\n")
    assert len(entries) == 5 and entries[0].startswith(f"**1.** `{mine[-1]}`")
    assert "> a lighthouse at dusk, oil painting 10" in entries[0]
    assert "seed 1010 · 64×64 · tiny" in entries[0]
    assert f"(https://discord.com/channels/{w.guild.id}/{w.general.id}/777)" in entries[0]
    assert "灯塔" not in embed["description"]
    prev_id, next_id = message.custom_ids
    assert message.find_component(prev_id)["disabled"] is True
    assert [a.filename for a in message.attachments] == ["history.jpg"]
    assert embed["image"]["url"] == "attachment://history.jpg"
    with Image.open(io.BytesIO(message.attachments[0].data)) as strip:
        assert strip.width > 5 * 150  # five thumbnails
    first_strip = message.attachments[0].data

    # someone else cannot turn these pages (custom ids are visible to clients)
    other = await fake.click(w.wei, message, next_id)
    await fake.wait_for_response(other)
    assert "属于别人" in other.original.content and other.original.ephemeral

    await h.restart()  # the buttons are DynamicItems: they work on messages sent before a restart
    click = await fake.click(w.alice, message, next_id)
    await fake.wait_for_edit(message)
    assert click.response.type == 7
    description = message.embeds[0]["description"]
    assert description.startswith(f"**6.** `{mine[-6]}`") and len(description.split("\n\n")) == 5
    assert [a.filename for a in message.attachments] == ["history.jpg"]  # replaced, not added
    assert message.attachments[0].data != first_strip  # numbered 6–10 now
    await fake.click(w.alice, message, message.custom_ids[1])
    await fake.wait_for_edit(message, count=2)
    assert message.embeds[0]["description"].startswith(f"**11.** `{mine[0]}`")
    assert message.find_component(message.custom_ids[1])["disabled"] is True
    await fake.click(w.alice, message, message.custom_ids[0])
    await fake.wait_for_edit(message, count=3)
    assert message.embeds[0]["description"].startswith("**6.**")

    # Chinese, in direct messages: only direct-message images, none yet
    dm = fake.dm_channel(w.wei)
    interaction = await h.slash(w.wei, dm, "history")
    await fake.wait_for_response(interaction)
    assert interaction.original.embeds[0]["title"] == "你在私信中的图片"
    assert "还没有图片" in interaction.original.embeds[0]["description"]
