"""The fake Discord, driven by a real discord.py client: a tiny throwaway bot exercises every flow
the Brushwork bot will use (slash commands, defer + followups with files, buttons, modals,
autocomplete, reactions, context menus) and the faults it must survive (429, 5xx, 403, expired
tokens, gateway drops, bad tokens, missing intents, Discord's limits)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import zlib

import discord
import pytest
from discord import app_commands

from tests.fakediscord import FakeDiscord, FakeDiscordUsageError, StandardWorld, Upload
from tests.fakediscord.discordpy import running


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid RGB PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG_RED = png(3, 2, (255, 0, 0))
PNG_BLUE = png(2, 4, (0, 0, 255))
STYLES = ["watercolor", "wash", "oil", "ink", "pixel art", "anime"]


class RerollView(discord.ui.View):
    """Persistent: no timeout, a custom_id on every item, registered in setup_hook."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Reroll", custom_id="tiny:reroll", style=discord.ButtonStyle.primary)
    async def reroll(
        self, interaction: discord.Interaction[TinyBot], button: discord.ui.Button[RerollView]
    ) -> None:
        assert interaction.message is not None
        interaction.client.clicks.append((interaction.message.id, interaction.user.id))
        await interaction.response.edit_message(content=f"rerolled by {interaction.user.name}")


class PromptModal(discord.ui.Modal, title="Describe your image"):
    prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
        label="Prompt", custom_id="tiny:prompt", max_length=200
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"modal got: {self.prompt.value}")


class UploadModal(discord.ui.Modal, title="Add training images"):
    name: discord.ui.Label[UploadModal] = discord.ui.Label(
        text="Dataset", component=discord.ui.TextInput(custom_id="up:name", max_length=32)
    )
    images: discord.ui.Label[UploadModal] = discord.ui.Label(
        text="Images", component=discord.ui.FileUpload(custom_id="up:images", max_values=3)
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        assert isinstance(self.name.component, discord.ui.TextInput)
        assert isinstance(self.images.component, discord.ui.FileUpload)
        sizes = [len(await a.read()) for a in self.images.component.values]
        await interaction.response.send_message(f"{self.name.component.value}: {sizes}", ephemeral=True)


class PickView(discord.ui.View):
    @discord.ui.select(
        custom_id="tiny:pick",
        options=[discord.SelectOption(label=s, value=s) for s in STYLES],
        max_values=2,
    )
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select[PickView]) -> None:
        await interaction.response.send_message(f"picked {', '.join(select.values)}")


class TinyBot(discord.Client):
    def __init__(self, **options: object) -> None:
        options.setdefault("intents", discord.Intents.default())
        super().__init__(**options)  # type: ignore[arg-type]
        self.tree = app_commands.CommandTree(self)
        self.clicks: list[tuple[int, int]] = []
        self.raw_reactions: list[discord.RawReactionActionEvent] = []
        self.messages_seen: list[discord.Message] = []
        self.errors: list[BaseException] = []
        self.seen: dict[str, discord.Interaction] = {}
        self.resumed = 0
        self.job_done = asyncio.Event()
        add_commands(self)

    async def setup_hook(self) -> None:
        self.add_view(RerollView())

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.raw_reactions.append(payload)

    async def on_message(self, message: discord.Message) -> None:
        self.messages_seen.append(message)

    async def on_resumed(self) -> None:
        self.resumed += 1


def add_commands(bot: TinyBot) -> None:
    tree = bot.tree

    @tree.error
    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        bot.errors.append(error)

    @tree.command(description="Generate two images")
    async def imagine(interaction: discord.Interaction, prompt: str) -> None:
        bot.seen["imagine"] = interaction
        await interaction.response.defer(thinking=True)
        files = [discord.File(io.BytesIO(PNG_RED), "red.png"), discord.File(io.BytesIO(PNG_BLUE), "blue.png")]
        await interaction.followup.send(f"**{prompt}**", files=files, view=RerollView())

    @tree.command(description="Only you can see this")
    async def secret(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("only you", ephemeral=True)

    @tree.command(description="Ask for a prompt in a modal")
    async def ask(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(PromptModal())

    @tree.command(description="Upload training images in a modal")
    async def upload(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(UploadModal())

    @tree.command(description="Pick styles from a menu")
    async def pick(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pick", view=PickView())

    @tree.command(description="Pick a style")
    async def style(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(name)

    @style.autocomplete("name")
    async def style_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=s, value=s) for s in STYLES if s.startswith(current)][:25]

    @tree.command(description="Autocomplete that breaks the 25-choice limit")
    async def many(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(name)

    @many.autocomplete("name")
    async def many_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=f"n{i}", value=f"n{i}") for i in range(30)]

    @tree.command(description="A long job whose token may expire")
    async def later(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await bot.job_done.wait()
        try:
            await interaction.followup.send("finished")
        except discord.HTTPException as exc:
            bot.errors.append(exc)
            assert interaction.channel is not None
            await interaction.channel.send(f"{interaction.user.mention} finished (token expired)")  # type: ignore[union-attr]

    @tree.command(description="Too slow to answer")
    async def slow(interaction: discord.Interaction) -> None:
        await asyncio.sleep(0.4)
        try:
            await interaction.response.send_message("late")
        except discord.HTTPException as exc:
            bot.errors.append(exc)

    @tree.command(description="Breaks Discord's limits")
    async def broken(interaction: discord.Interaction, what: str) -> None:
        try:
            if what == "content":
                await interaction.response.send_message("x" * 2001)
            elif what == "custom_id":
                view = discord.ui.View()
                view.add_item(discord.ui.Button(label="x", custom_id="c" * 101))
                await interaction.response.send_message("x", view=view)
            elif what == "filesize":
                await interaction.response.send_message(
                    file=discord.File(io.BytesIO(b"\0" * 2048), "big.bin")
                )
        except discord.HTTPException as exc:
            bot.errors.append(exc)

    @tree.command(description="Edits and deletes its own messages")
    async def edits(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("v1", file=discord.File(io.BytesIO(PNG_RED), "red.png"))
        await interaction.edit_original_response(content="v2", attachments=[])
        extra = await interaction.followup.send("extra", wait=True)
        await extra.edit(content="extra v2")
        await extra.delete()

    @tree.command(description="Age-restricted", nsfw=True)
    async def adult(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("ok")

    @tree.command(name="wipe", description="Needs Manage Server")
    @app_commands.default_permissions(manage_guild=True)
    async def wipe(interaction: discord.Interaction) -> None:
        allowed = interaction.permissions.manage_guild  # re-checked: admins can override the default
        await interaction.response.send_message(
            "wiped" if allowed else "you need Manage Server", ephemeral=not allowed
        )

    lora = app_commands.Group(name="lora", description="Server LoRAs")
    dataset = app_commands.Group(name="dataset", description="Training images", parent=lora)

    @dataset.command(name="add", description="Add a training image")
    async def dataset_add(interaction: discord.Interaction, name: str, image: discord.Attachment) -> None:
        bot.seen["dataset add"] = interaction
        data = await image.read()
        digest = hashlib.sha256(data).hexdigest()[:12]
        await interaction.response.send_message(
            f"{name}: {image.filename} {len(data)} bytes {digest}", ephemeral=True
        )

    tree.add_command(lora)

    @tree.context_menu(name="Count images")
    async def count_images(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_message(f"{len(message.attachments)} images by {message.author.name}")

    @tree.context_menu(name="Inspect")
    async def inspect(interaction: discord.Interaction, member: discord.Member) -> None:
        await interaction.response.send_message(f"{member.display_name} seen from {interaction.locale}")


@pytest.fixture
def world(fake_discord: FakeDiscord) -> StandardWorld:
    return fake_discord.add_standard_world()


@pytest.fixture
async def bot(fake_discord: FakeDiscord, world: StandardWorld, run_client):
    async with run_client(TinyBot()) as client:
        await client.tree.sync()
        yield client


# ---- connecting -----------------------------------------------------------------------------


async def test_login_ready_and_guild_state(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    assert bot.user is not None and bot.user.id == fake_discord.bot.id
    assert bot.application_id == fake_discord.app_id
    guild = bot.get_guild(world.guild.id)
    assert guild is not None and guild.name == world.guild.name
    general, nsfw = guild.get_channel(world.general.id), guild.get_channel(world.nsfw.id)
    assert isinstance(general, discord.TextChannel) and not general.is_nsfw()
    assert isinstance(nsfw, discord.TextChannel) and nsfw.is_nsfw()
    assert guild.default_role.id == guild.id
    assert guild.default_role.permissions.send_messages
    assert guild.me is not None and guild.me.guild_permissions.attach_files
    assert [r.name for r in guild.me.roles] == ["@everyone", fake_discord.bot.username]
    # A plain Client logs in with two REST calls and identifies once.
    assert [r.route for r in fake_discord.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    assert fake_discord.identify_count == 1
    assert fake_discord.gateway.connections[0].heartbeats >= 1


async def test_command_sync_is_recorded_with_stable_ids(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    assert fake_discord.sync_count == 1
    first = {c["name"]: c for c in fake_discord.sync_calls[0].commands}
    assert {"imagine", "lora", "Inspect"} <= set(first)
    assert first["Inspect"]["type"] == 2

    synced = await bot.tree.sync()  # unchanged: same ids and versions
    assert fake_discord.sync_count == 2
    assert {c.name: c.id for c in synced} == {n: int(c["id"]) for n, c in first.items()}
    assert all(c["version"] == first[c["name"]]["version"] for c in fake_discord.sync_calls[1].commands)

    guild_synced = await bot.tree.sync(guild=discord.Object(world.guild.id))
    assert guild_synced == [] and fake_discord.sync_calls[-1].guild_id == world.guild.id
    assert [c.name for c in await bot.tree.fetch_commands()] == [
        c["name"] for c in fake_discord.commands_for()
    ]


# ---- interactions -----------------------------------------------------------------------------


async def test_slash_defer_then_followup_with_files_and_button(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    interaction = await fake_discord.slash(
        world.wei, world.general, "imagine", {"prompt": "一只猫 on a motorbike"}
    )

    response = await fake_discord.wait_for_response(interaction)
    assert response.type == 5 and not response.ephemeral
    assert response.delay is not None and response.delay < fake_discord.ack_deadline
    message = await fake_discord.wait_for_followup(interaction)

    assert message.content == "**一只猫 on a motorbike**"
    assert message.files == {"red.png": PNG_RED, "blue.png": PNG_BLUE}
    assert [(a.width, a.height, a.content_type) for a in message.attachments] == [
        (3, 2, "image/png"),
        (2, 4, "image/png"),
    ]
    assert message.custom_ids == ["tiny:reroll"]
    # The first followup after a "thinking" defer replaces the loading message.
    assert message is interaction.original and not message.loading
    assert [r.via for r in message.revisions] == ["callback 5", "followup"]

    # What the bot saw, and what it can download back through the fake CDN.
    seen = bot.seen["imagine"]
    assert seen.locale is discord.Locale.chinese and seen.guild_locale is discord.Locale.american_english
    assert abs(seen.created_at.timestamp() - time.time()) < 60 and not seen.is_expired()
    assert seen.filesize_limit == 10 * 1024 * 1024 and seen.app_permissions.attach_files
    original = await seen.original_response()
    assert [await a.read() for a in original.attachments] == [PNG_RED, PNG_BLUE]
    assert original.components[0].children[0].custom_id == "tiny:reroll"  # type: ignore[union-attr]


async def test_button_click_updates_the_message(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    interaction = await fake_discord.slash(world.alice, world.general, "imagine", {"prompt": "a fox"})
    message = await fake_discord.wait_for_followup(interaction)

    click = await fake_discord.click(world.wei, message, "tiny:reroll")
    response = await fake_discord.wait_for_response(click)
    await fake_discord.wait_for_edit(message, count=2)

    assert response.type == 7
    assert bot.clicks == [(message.id, world.wei.id)]
    assert message.content == "rerolled by wei" and message.files == {
        "red.png": PNG_RED,
        "blue.png": PNG_BLUE,
    }
    assert [r.via for r in message.edits] == ["followup", "callback 7"]
    with pytest.raises(FakeDiscordUsageError, match="no component"):
        await fake_discord.click(world.wei, message, "tiny:nope")


async def test_modal_submit(fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot) -> None:
    ask = await fake_discord.slash(world.alice, world.general, "ask")
    assert (await fake_discord.wait_for_response(ask)).type == 9
    assert ask.modal is not None and ask.modal["title"] == "Describe your image"

    submit = await fake_discord.submit_modal(ask, {"tiny:prompt": "a red fox, 水彩"})
    await fake_discord.wait_for_response(submit)

    assert submit.original is not None and submit.original.content == "modal got: a red fox, 水彩"
    with pytest.raises(FakeDiscordUsageError, match="200"):
        await fake_discord.submit_modal(ask, {"tiny:prompt": "x" * 201})


async def test_modal_with_labels_and_file_upload(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    upload = await fake_discord.slash(world.admin, world.general, "upload")
    await fake_discord.wait_for_response(upload)

    submit = await fake_discord.submit_modal(
        upload, {"up:name": "cats", "up:images": [("a.png", PNG_RED), ("b.png", PNG_BLUE)]}
    )
    await fake_discord.wait_for_response(submit)

    assert submit.original is not None and submit.original.ephemeral
    assert submit.original.content == f"cats: {[len(PNG_RED), len(PNG_BLUE)]}"
    with pytest.raises(FakeDiscordUsageError, match="0..3 files|1..3 files"):
        await fake_discord.submit_modal(upload, {"up:name": "cats", "up:images": [("a.png", PNG_RED)] * 4})


async def test_select_menu(fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot) -> None:
    pick = await fake_discord.slash(world.alice, world.general, "pick")
    await fake_discord.wait_for_response(pick)
    assert pick.original is not None

    choice = await fake_discord.select(world.alice, pick.original, "tiny:pick", ["ink", "oil"])
    await fake_discord.wait_for_response(choice)

    assert choice.original is not None and choice.original.content == "picked ink, oil"
    with pytest.raises(FakeDiscordUsageError, match="not an option"):
        await fake_discord.select(world.alice, pick.original, "tiny:pick", ["crayon"])


async def test_autocomplete_choices_and_the_25_limit(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    choices = await fake_discord.autocomplete(
        world.alice, world.general, "style", {"name": "wa"}, focused="name"
    )
    assert choices == [{"name": "watercolor", "value": "watercolor"}, {"name": "wash", "value": "wash"}]

    # 30 choices: the fake refuses the callback like Discord (discord.py does not truncate).
    with pytest.raises(AssertionError, match="BASE_TYPE_MAX_LENGTH"):
        await fake_discord.autocomplete(world.alice, world.general, "many", {"name": ""}, focused="name")


async def test_raw_reaction_event(fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot) -> None:
    channel = bot.get_channel(world.general.id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("react to me")
    message = fake_discord.message(sent.id)

    await fake_discord.react(world.alice, message, "🔁")
    await fake_discord.wait_until(lambda: bot.raw_reactions, description="on_raw_reaction_add")

    event = bot.raw_reactions[0]
    assert (str(event.emoji), event.user_id, event.message_id) == ("🔁", world.alice.id, sent.id)
    assert event.member is not None and event.member.id == world.alice.id

    await sent.add_reaction("🔁")  # the bot's own reaction goes through the URL-quoted route
    await fake_discord.wait_for_reaction(message, "🔁")
    assert message.reactions["🔁"] == [world.alice.id, fake_discord.bot.id]


async def test_ephemeral_response_is_flagged_and_private(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    interaction = await fake_discord.slash(world.alice, world.general, "secret")
    response = await fake_discord.wait_for_response(interaction)

    assert response.type == 4 and response.ephemeral
    assert interaction.original is not None and interaction.original.ephemeral
    assert interaction.original not in fake_discord.channel_messages(world.general)
    channel = bot.get_channel(world.general.id)
    assert isinstance(channel, discord.TextChannel)
    assert [m async for m in channel.history()] == []


async def test_attachment_option_in_a_subcommand_group(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    interaction = await fake_discord.slash(
        world.admin, world.general, "lora dataset add", {"name": "cats"}, attachments=[("cat 1.png", PNG_RED)]
    )
    await fake_discord.wait_for_response(interaction)

    digest = hashlib.sha256(PNG_RED).hexdigest()[:12]
    assert interaction.original is not None
    assert interaction.original.content == f"cats: cat 1.png {len(PNG_RED)} bytes {digest}"
    seen = bot.seen["dataset add"]
    assert seen.command is not None and seen.command.qualified_name == "lora dataset add"
    assert seen.permissions.administrator and seen.user.guild_permissions.manage_guild  # type: ignore[union-attr]
    with pytest.raises(FakeDiscordUsageError, match="required options missing"):
        await fake_discord.slash(world.admin, world.general, "lora dataset add", {"name": "cats"})


async def test_context_menus(fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot) -> None:
    interaction = await fake_discord.user_command(
        world.alice, world.general, "Inspect", world.wei, locale="en-GB"
    )
    await fake_discord.wait_for_response(interaction)
    # display_name is the global name: UTF-8 round-trips through the fake.
    assert interaction.original is not None and interaction.original.content == "张伟 seen from en-GB"

    imagine = await fake_discord.slash(world.alice, world.general, "imagine", {"prompt": "two"})
    images = await fake_discord.wait_for_followup(imagine)
    counted = await fake_discord.message_command(world.wei, world.general, "Count images", images)
    await fake_discord.wait_for_response(counted)
    assert counted.original is not None and counted.original.content == "2 images by Brushwork"


async def test_message_content_needs_the_privileged_intent(
    fake_discord: FakeDiscord, world: StandardWorld, run_client
) -> None:
    async with run_client(TinyBot()) as plain:
        await fake_discord.post_message(
            world.alice, world.general, "hello bot", attachments=[Upload("a.png", PNG_RED)]
        )
        await fake_discord.wait_until(lambda: plain.messages_seen, description="on_message")
        assert plain.messages_seen[0].content == "" and plain.messages_seen[0].attachments == []

    intents = discord.Intents.default()
    intents.message_content = True
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with run_client(TinyBot(intents=intents)):
            pass

    fake_discord.configure_bot(privileged_intents={"message_content"})
    async with run_client(TinyBot(intents=intents)) as reader:
        await fake_discord.post_message(
            world.alice, world.general, "hello again", attachments=[Upload("a.png", PNG_RED)]
        )
        await fake_discord.wait_until(lambda: reader.messages_seen, description="on_message")
        assert reader.messages_seen[0].content == "hello again"
        assert await reader.messages_seen[0].attachments[0].read() == PNG_RED


async def test_response_edits_and_followup_lifecycle(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    interaction = await fake_discord.slash(world.alice, world.general, "edits")
    await fake_discord.wait_until(
        lambda: interaction.followups and interaction.followups[0].deleted, description="delete"
    )

    original, extra = interaction.original, interaction.followups[0]
    assert original is not None and original.content == "v2" and original.files == {}
    assert [r.files[0].filename for r in interaction.responses] == ["red.png"]  # what the callback carried
    assert [r.content for r in original.revisions] == ["v1", "v2"]
    assert [r.content for r in extra.revisions] == ["extra", "extra v2"] and extra is not original
    assert fake_discord.channel_messages(world.general) == [original]


async def test_command_visibility_like_the_discord_client(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    with pytest.raises(FakeDiscordUsageError, match="age-restricted"):
        await fake_discord.slash(world.alice, world.general, "adult")
    thread = fake_discord.add_thread(world.nsfw, "renders")
    for channel in (world.nsfw, thread):  # threads inherit the parent's age restriction
        interaction = await fake_discord.slash(world.alice, channel, "adult")
        assert (await fake_discord.wait_for_response(interaction)).type == 4
    assert bot.get_channel(thread.id) is not None

    with pytest.raises(FakeDiscordUsageError, match="default_member_permissions"):
        await fake_discord.slash(world.alice, world.general, "wipe")
    admin = await fake_discord.slash(world.admin, world.general, "wipe")
    override = await fake_discord.slash(world.alice, world.general, "wipe", bypass_visibility=True)
    await fake_discord.wait_for_response(admin)
    await fake_discord.wait_for_response(override)
    assert admin.original is not None and admin.original.content == "wiped"
    assert override.original is not None and override.original.ephemeral


# ---- faults -----------------------------------------------------------------------------------


async def test_429_once_then_success(fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot) -> None:
    fault = fake_discord.rate_limit("POST", "/channels/{channel_id}/messages", retry_after=0.05)
    channel = bot.get_channel(world.general.id)
    assert isinstance(channel, discord.TextChannel)

    sent = await channel.send("after a rate limit")

    assert fault.hits == 1 and fault.exhausted
    statuses = [r.status for r in fake_discord.requests_to("POST", "/channels/{channel_id}/messages")]
    assert statuses == [429, 200]
    assert [m.id for m in fake_discord.channel_messages(world.general)] == [sent.id]


async def test_429_on_a_followup_is_retried_too(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    fake_discord.rate_limit("POST", "/webhooks/{webhook_id}/{webhook_token}", retry_after=0.05)
    interaction = await fake_discord.slash(world.alice, world.general, "imagine", {"prompt": "retry"})

    message = await fake_discord.wait_for_followup(interaction)

    assert message.files == {"red.png": PNG_RED, "blue.png": PNG_BLUE}  # the files were re-sent intact
    assert [r.status for r in fake_discord.requests_to("POST", "/webhooks/{webhook_id}/{webhook_token}")] == [
        429,
        200,
    ]


async def test_500_is_retried(fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot) -> None:
    fake_discord.server_error("POST", "/channels/{channel_id}/messages", status=500)
    channel = bot.get_channel(world.general.id)
    assert isinstance(channel, discord.TextChannel)

    await channel.send("after a 500")  # discord.py sleeps 1 s, then retries

    assert [r.status for r in fake_discord.requests_to("POST", "/channels/{channel_id}/messages")] == [
        500,
        200,
    ]


async def test_502_html_is_retried(fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot) -> None:
    fake_discord.server_error(
        "PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", status=502
    )
    interaction = await fake_discord.slash(world.alice, world.general, "imagine", {"prompt": "edit"})
    message = await fake_discord.wait_for_followup(interaction)

    await bot.seen["imagine"].edit_original_response(content="edited")  # webhook adapter: retried after 1 s

    assert message.content == "edited"
    routes = fake_discord.requests_to("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original")
    assert [r.status for r in routes] == [502, 200]


async def test_missing_permissions(fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot) -> None:
    channel = bot.get_channel(world.general.id)
    assert isinstance(channel, discord.TextChannel)
    fake_discord.forbid_channel(world.general)
    with pytest.raises(discord.Forbidden) as raised:
        await channel.send("nope")
    assert raised.value.code == 50013

    fake_discord.clear_faults()
    fake_discord.set_permission_overwrite(
        world.general, world.guild, deny=discord.Permissions(attach_files=True).value
    )
    await channel.send("text is still fine")
    with pytest.raises(discord.Forbidden):
        await channel.send(file=discord.File(io.BytesIO(PNG_RED), "a.png"))


async def test_expired_token_followup_fails_and_channel_fallback_works(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    interaction = await fake_discord.slash(world.alice, world.general, "later", expired=True)
    assert (await fake_discord.wait_for_response(interaction)).type == 5

    bot.job_done.set()
    fallback = await fake_discord.wait_for_message(
        lambda m: "token expired" in m.content, channel=world.general
    )

    error = bot.errors[0]
    assert isinstance(error, discord.HTTPException) and (error.status, error.code) == (401, 50027)
    assert fallback.content.startswith(world.alice.mention) and fallback.interaction is None
    assert interaction.original is not None and interaction.original.loading  # still "thinking"


async def test_late_first_response_is_an_unknown_interaction(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    fake_discord.ack_deadline = 0.2
    interaction = await fake_discord.slash(world.alice, world.general, "slow")
    await fake_discord.wait_until(lambda: bot.errors, description="the late response to fail")

    assert isinstance(bot.errors[0], discord.NotFound) and bot.errors[0].code == 10062
    assert interaction.response is None and interaction.responses[0].delay > 0.2  # type: ignore[operator]


async def test_discord_limits_surface_as_http_errors(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    world.guild.attachment_size_limit = 1024
    for what in ("content", "custom_id", "filesize"):
        await fake_discord.slash(world.alice, world.general, "broken", {"what": what})
    await fake_discord.wait_until(lambda: len(bot.errors) == 3, description="three refusals")

    codes = [(e.status, e.code) for e in bot.errors if isinstance(e, discord.HTTPException)]
    assert codes == [(400, 50035), (400, 50035), (413, 40005)]
    assert "2000 or fewer" in str(bot.errors[0]) and "custom_id" in str(bot.errors[1])


async def test_gateway_drop_resumes_and_replays(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    channel = bot.get_channel(world.general.id)
    assert isinstance(channel, discord.TextChannel)
    message = fake_discord.message((await channel.send("still here?")).id)

    assert await fake_discord.drop_gateway(4000) == 1
    await fake_discord.react(world.wei, message, "👍")  # while disconnected: buffered, replayed on RESUME
    await fake_discord.wait_resumed()
    await fake_discord.wait_until(
        lambda: bot.raw_reactions and bot.resumed, description="replay + on_resumed"
    )

    assert fake_discord.identify_count == 1 and fake_discord.resume_count == 1
    assert fake_discord.gateway.connections[-1].replayed >= 1
    assert fake_discord.gateway.connections[-1].path == "/gateway-resume"
    assert str(bot.raw_reactions[0].emoji) == "👍"
    interaction = await fake_discord.slash(world.alice, world.general, "secret")
    assert (await fake_discord.wait_for_response(interaction)).type == 4


async def test_reconnect_and_invalid_session(
    fake_discord: FakeDiscord, world: StandardWorld, bot: TinyBot
) -> None:
    await fake_discord.request_reconnect()  # op 7: the client resumes
    await fake_discord.wait_resumed()
    assert fake_discord.identify_count == 1

    async def no_identify_delay(shard_id: int | None, *, initial: bool = False) -> None:
        pass  # discord.py sleeps 5 s before every IDENTIFY but the first

    bot.before_identify_hook = no_identify_delay  # type: ignore[method-assign]
    await fake_discord.invalidate_session(resumable=False)  # op 9 false: the client identifies again
    await fake_discord.wait_until(lambda: fake_discord.identify_count == 2, description="re-IDENTIFY")
    await fake_discord.wait_ready()
    # discord.py keeps dialing the last gateway URL it used, even for a fresh IDENTIFY.
    assert fake_discord.gateway.connections[-1].path == "/gateway-resume"
    interaction = await fake_discord.slash(world.alice, world.general, "secret")
    assert (await fake_discord.wait_for_response(interaction)).type == 4


async def test_members_intent_chunks_the_guild(
    fake_discord: FakeDiscord, world: StandardWorld, run_client
) -> None:
    fake_discord.configure_bot(privileged_intents={"members"})
    intents = discord.Intents.default()
    intents.members = True
    async with run_client(TinyBot(intents=intents)) as client:
        guild = client.get_guild(world.guild.id)
        assert guild is not None and guild.chunked
        assert {m.name for m in guild.members} >= {"alice", "wei", "root", fake_discord.bot.username}


async def test_wrong_token_is_a_login_failure(fake_discord: FakeDiscord, world: StandardWorld) -> None:
    with pytest.raises(discord.LoginFailure):
        async with running(TinyBot(), fake_discord, token="not-the-token"):
            pass
    assert fake_discord.requests[0].status == 401 and fake_discord.identify_count == 0
