"""What the bot does for commands, buttons, the Remix modal and reactions — one place for all four.

Each entry point reads who is asking (:func:`~bot.discord_app.context.caller`), calls ONE
:class:`~bot.chat.ChatService` method in a thread (it may read the database), and answers:

* a job: the acknowledgement is sent as soon as the plan is checked and the queue said it would
  admit it (reads only — so it is fast whatever the queue holds), THEN the job is stored with
  the reply reference the acknowledgement produced, and a follower edits that message until the
  images replace it (:mod:`bot.discord_app.follow`);
* anything else (info, cancel, delete, a mistake): an ephemeral answer in the user's language.

Reactions have no interaction: they answer with channel messages that mention the user, in the
language stored for the user (recorded from their interactions) or the server's.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord

from bot.chat import Origin, Prepared, ReplyRecord, Submit
from bot.discord_app.components import RemixModal, modal_values, status_view
from bot.discord_app.context import (
    caller,
    channel_is_age_restricted,
    missing_permissions,
    missing_permissions_text,
    report_error,
    send,
)
from bot.discord_app.delivery import NUMBER_EMOJI, InfoCard, ReplyRef, file_info_card, info_card
from bot.discord_app.follow import NO_MENTIONS, mention_only
from bot.discord_app.replies import acknowledgement
from bot.group_commit import GroupCommit
from generation.errors import BrushworkError
from generation.i18n import normalize_locale, translate
from generation.queue import JobState
from storage.ids import new_public_id

if TYPE_CHECKING:
    from bot.chat import ChatService, ImageInfo
    from bot.discord_app.client import BrushworkBot
    from bot.services import PendingUpload
    from generation.queue import JobHandle

log = logging.getLogger("brushwork.discord")

#: Reactions on a result message: 🔁 reroll, ⬆️ upscale, 🔀 vary (variation selectors ignored).
REACTIONS = {"🔁": "reroll", "⬆": "upscale", "🔀": "vary"}
NUMBERS = {emoji.replace("\ufe0f", ""): index for index, emoji in enumerate(NUMBER_EMOJI)}
PICK_TTL_S = 600.0
ACK_THREADS = 4
LOCALE_FLUSH_S = 2.0


def _plain(emoji: str) -> str:
    return emoji.replace("\ufe0f", "")


class Actions:
    def __init__(self, bot: BrushworkBot) -> None:
        self.bot = bot
        self._picks: dict[tuple[int, int], dict[str, Any]] = {}  # (message, user) -> action and/or image index
        self._locales: dict[int, str] = {}
        self._unsaved_locales: dict[int, str] = {}
        self._locale_flush: asyncio.Task[None] | None = None
        # Acknowledging within 3 s must not depend on what else waits for a thread: the checks run
        # in a pool of their own; job inserts (SQLite takes one writer at a time) in one thread.
        self._ack_lane = ThreadPoolExecutor(max_workers=ACK_THREADS, thread_name_prefix="brushwork-ack")
        self._write_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="brushwork-submit")
        # Jobs are stored before they are acknowledged, and every write of the bot's goes through
        # this one thread, grouped (SQLite's busy-wait between two writers of one process would
        # cost more than the writes themselves).
        self._writer: GroupCommit[Submit | ReplyRecord, Any] = GroupCommit(
            lambda items: self.chat.write_many(items), name="brushwork-writes")

    def close(self) -> None:
        if self._locale_flush is not None:
            self._locale_flush.cancel()
        self._ack_lane.shutdown(wait=False, cancel_futures=True)
        self._write_lane.shutdown(wait=False, cancel_futures=True)
        self._writer.close()

    @property
    def chat(self) -> ChatService:
        return self.bot.container.chat

    # ================================================================== starting a job
    async def start(self, interaction: discord.Interaction, prepare: Callable[[Origin], Prepared]) -> None:
        """Check → store the job → acknowledge (public) → follow it.  Mistakes: ephemeral."""
        who = caller(interaction)
        self._remember_locale(who.user_id, who.locale)
        if not await self._may_post(interaction, who):
            return
        try:
            prepared = await self._checked(prepare, who.origin)
        except BrushworkError as error:
            await self._privately(interaction, error.message(who.locale))
            return
        ref = ReplyRef(user=who.user_id, channel=who.channel_id, guild=who.guild_id, locale=who.locale,
                       via="interaction", app=interaction.application_id, token=interaction.token,
                       message=None, created=interaction.created_at.timestamp(),
                       limit=interaction.filesize_limit, screened=prepared.screened)
        try:  # durable before it is acknowledged: a "queued" message always stands for a stored job
            handle = await self._store(prepared, ref)
        except BrushworkError as error:  # the queue filled up since the check
            await self._privately(interaction, error.message(who.locale))
            return
        ack = {"content": acknowledgement(prepared, who.locale), "view": status_view(handle.job_id, who.locale),
               "allowed_mentions": NO_MENTIONS}
        message_id: int | None = None
        try:
            if interaction.response.is_done():  # deferred while a picture was fetched: the ack replaces "thinking…"
                message_id = (await interaction.edit_original_response(**ack)).id
            else:
                response = await interaction.response.send_message(**ack)
                message_id = response.message_id
                if message_id is None:
                    message_id = (await interaction.original_response()).id
        except discord.HTTPException as error:  # the job is stored: its follower finds or makes a status message
            log.warning("could not acknowledge job %s (%s %s)", handle.job_id, error.status, error.code)
        self.bot.followers.follow(handle.job_id, replace(ref, message=message_id), prepared.plan,
                                  fresh=message_id is not None, record=True)

    async def start_from_picture(self, interaction: discord.Interaction, picture: discord.Attachment,
                                 prepare: Callable[[Origin, PendingUpload], Prepared]) -> None:
        """``/imagine picture:``: the attachment's announced size checked, then a public
        "thinking…" while it is fetched and checked (``ChatService.prepare_picture``); the
        request is checked with it (``prepare(origin, picture)``) and only then is the picture
        kept (``keep_picture``), so a refused request stores nothing; then :meth:`start`, the
        acknowledgement replacing "thinking…".  A refusal: the reason, privately."""
        who = caller(interaction)
        chat = self.chat
        if not await self._may_post(interaction, who):
            return
        try:
            chat.check_picture(picture.filename, picture.size)
        except BrushworkError as error:
            await send(interaction, error.message(who.locale))
            return
        await interaction.response.defer(thinking=True)
        loop = asyncio.get_running_loop()
        try:
            data = await picture.read()
            pending = await loop.run_in_executor(self._ack_lane, chat.prepare_picture, who.origin,
                                                 picture.filename, data)
            await self._checked(lambda origin: prepare(origin, pending), who.origin)  # before anything is kept
            await loop.run_in_executor(self._write_lane, chat.keep_picture, who.origin, pending)
        except BrushworkError as error:
            await self._privately(interaction, error.message(who.locale))
            return
        except discord.HTTPException:
            await self._privately(interaction, translate("bot.picture_unreadable", who.locale,
                                                         name=picture.filename[:100]))
            return
        await self.start(interaction, lambda origin: prepare(origin, pending))

    async def _may_post(self, interaction: discord.Interaction, who: Any) -> bool:
        """In a server: the bot may post its answer here (else the user is told, privately)."""
        if who.in_dm:
            return True
        missing = missing_permissions(interaction.app_permissions, interaction.channel)
        if missing:
            await self._privately(interaction, missing_permissions_text(missing, who.channel_id, who.locale))
        return not missing

    @staticmethod
    async def _privately(interaction: discord.Interaction, text: str) -> None:
        """An ephemeral answer, or, after a public "thinking…", that message turned into the
        answer: Discord gives the first follow-up of a defer the defer's visibility, and a
        follow-up after the loading message was deleted fails (404 Unknown Message)."""
        await send(interaction, text)

    async def _checked(self, prepare: Callable[[Origin], Prepared], origin: Origin) -> Prepared:
        """The pre-acknowledgement check (reads only), in its own threads: it never waits behind
        the writes (job inserts, image rows) queued in the default executor."""
        return await asyncio.get_running_loop().run_in_executor(self._ack_lane, prepare, origin)

    async def _store(self, prepared: Prepared, ref: ReplyRef) -> JobHandle:
        """Store the job (the queue checks its limits again: a :class:`BrushworkError` says why it
        refused).  Requests that arrive together are written in one transaction
        (:class:`~bot.group_commit.GroupCommit`), so a burst does not queue up behind itself."""
        future = self._writer.submit(Submit(prepared, ref.to_dict(), new_public_id()))
        return await asyncio.wrap_future(future)

    async def record_reply(self, job_id: str, ref: ReplyRef) -> None:
        """Write where a stored job's answers go (its status message), grouped with the other writes."""
        await asyncio.wrap_future(self._writer.submit(ReplyRecord(job_id, ref.to_dict()), urgent=False))

    def _remember_locale(self, user_id: int, locale: str) -> None:
        """Record the user's Discord language (answers to reactions use it): only changes, written
        together a moment later (a burst of new users costs one transaction, after the acks)."""
        if self._locales.get(user_id) == locale:
            return
        self._locales[user_id] = locale
        self._unsaved_locales[user_id] = locale
        if self._locale_flush is None or self._locale_flush.done():
            self._locale_flush = asyncio.get_running_loop().create_task(self._save_locales())

    async def _save_locales(self) -> None:
        await asyncio.sleep(LOCALE_FLUSH_S)
        pending, self._unsaved_locales = self._unsaved_locales, {}
        chat = self.chat

        try:
            await asyncio.get_running_loop().run_in_executor(self._write_lane, chat.remember_locales, pending)
        except Exception:
            log.warning("could not record the languages of %d user(s)", len(pending), exc_info=True)

    # ================================================================== buttons
    async def button(self, interaction: discord.Interaction, action: str, ref: str) -> None:
        chat = self.chat
        try:
            if action == "u":
                await self.start(interaction, lambda origin: chat.prepare_upscale(origin, ref))
            elif action == "v":
                await self.start(interaction, lambda origin: chat.prepare_vary(origin, ref))
            elif action == "r":
                await self.start(interaction, lambda origin: chat.prepare_reroll(origin, ref))
            elif action == "x":
                await self.open_remix(interaction, job_id=ref)
            elif action == "i":
                await self.show_info(interaction, job_id=ref)
            elif action == "c":
                await self.cancel(interaction, ref)
            elif action == "d":
                await self.delete(interaction, ref)
        except Exception as error:
            await report_error(interaction, error)

    async def cancel(self, interaction: discord.Interaction, job_id: str) -> None:
        who = caller(interaction)
        state = await asyncio.to_thread(self.chat.cancel, who.origin, job_id)
        code = {JobState.CANCELLED: "cancelled", JobState.RUNNING: "cancel_running"}.get(state, "already_finished")
        await send(interaction, translate(f"imagine.reply.{code}", who.locale, id=job_id))

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None:
        """🗑: the requester or Manage Messages (checked now, from this interaction's permissions)."""
        who = caller(interaction)
        deleted = await asyncio.to_thread(self.chat.delete_job, who.origin, job_id)
        await interaction.response.defer()
        clicked = interaction.message.id if interaction.message is not None else None
        try:
            await interaction.delete_original_response()
        except discord.HTTPException as error:
            log.info("could not delete the result message of job %s: %s", job_id, error)
        others = {(r.channel_id, r.message_id) for r in deleted if r.message_id and r.message_id != clicked}
        for channel_id, message_id in others:
            channel = self.bot.get_channel(channel_id or 0)
            if channel is not None:
                try:
                    await channel.get_partial_message(message_id).delete()  # type: ignore[union-attr]
                except discord.HTTPException:
                    pass
        await interaction.followup.send(translate("imagine.reply.deleted", who.locale, count=len(deleted)),
                                        ephemeral=True)

    # ================================================================== info
    async def show_info(self, interaction: discord.Interaction, *, job_id: str | None = None,
                        image_ref: str | None = None, message_id: int | None = None) -> None:
        """ℹ️ Info, ``/info`` and "Show settings": ephemeral, in the reader's language."""
        who = caller(interaction)
        self._remember_locale(who.user_id, who.locale)
        origin, chat = who.origin, self.chat

        def look() -> ImageInfo:
            if job_id is not None:
                return chat.job_info(origin, job_id)
            if message_id is not None:
                return chat.message_info(origin, message_id)
            return chat.info(origin, image_ref or "")

        info = await asyncio.to_thread(look)
        embed, files = info_embed(info_card(info, who.locale), who.locale)
        await interaction.response.send_message(embed=embed, files=files, ephemeral=True)

    async def show_file_info(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        """``/info file:``: the recipe inside an uploaded image, ephemeral.  The announced size is
        checked before a byte is downloaded; the file is read, never decoded."""
        who = caller(interaction)
        chat = self.chat
        chat.check_recipe_file(file.filename, file.size)
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await file.read()
        recipe = await asyncio.to_thread(chat.file_recipe, who.origin, file.filename, data)
        embed, files = info_embed(file_info_card(recipe, who.locale), who.locale)
        await interaction.followup.send(embed=embed, files=files, ephemeral=True)

    # ================================================================== remix
    async def open_remix(self, interaction: discord.Interaction, *, job_id: str | None = None,
                         message_id: int | None = None, image_ref: str | None = None) -> None:
        who = caller(interaction)
        origin, chat = who.origin, self.chat

        def form():
            if message_id is not None:
                records = chat.images_on_message(origin, message_id)
                if not records:
                    raise BrushworkError("bot.no_images_on_message")
                return chat.remix_form(origin, image_ref=records[0].public_id)
            return chat.remix_form(origin, job_id=job_id, image_ref=image_ref)

        await interaction.response.send_modal(RemixModal(await asyncio.to_thread(form), who.locale))

    async def remix_submitted(self, interaction: discord.Interaction, image_id: str) -> None:
        from bot.discord_app.components import REMIX_FLAGS_ID, REMIX_PROMPT_ID

        values = modal_values(interaction.data)
        text = f"{values.get(REMIX_PROMPT_ID, '')} {values.get(REMIX_FLAGS_ID, '')}".strip()
        chat = self.chat
        try:
            await self.start(interaction, lambda origin: chat.prepare_remix(origin, image_id, text))
        except Exception as error:
            await report_error(interaction, error)

    # ================================================================== reactions
    async def reaction(self, payload: discord.RawReactionActionEvent) -> None:
        """🔁 ⬆️ 🔀 on a result (1️⃣–4️⃣ pick the image of a multi-image one)."""
        bot = self.bot
        if bot.user is None or payload.user_id == bot.user.id:
            return
        author = getattr(payload, "message_author_id", None)
        if author is not None and author != bot.user.id:
            return
        emoji = _plain(str(payload.emoji))
        if emoji not in REACTIONS and emoji not in NUMBERS:
            return
        origin = await self._reaction_origin(payload)
        records = await asyncio.to_thread(self.chat.images_on_message, origin, payload.message_id)
        if not records:
            return  # not a result message, or not visible from here
        key = (payload.message_id, payload.user_id)
        now = time.monotonic()
        self._picks = {k: v for k, v in self._picks.items() if now - v["at"] < PICK_TTL_S}
        entry = self._picks.setdefault(key, {"at": now})
        entry["at"] = now
        if emoji in NUMBERS:
            entry["pick"] = NUMBERS[emoji]
        else:
            entry["action"] = REACTIONS[emoji]
        action = entry.get("action")
        if action is None:
            return
        chat = self.chat
        if action == "reroll":
            self._picks.pop(key, None)
            first = records[0].public_id
            await self.start_in_channel(origin, lambda o: chat.prepare_reroll_image(o, first))
            return
        pick = entry.get("pick")
        if pick is None and len(records) == 1:
            pick = 0
        if pick is None:
            await self._offer_numbers(payload, len(records))
            return
        self._picks.pop(key, None)
        if pick >= len(records):
            return
        image = records[pick].public_id
        prepare = (lambda o: chat.prepare_upscale(o, image)) if action == "upscale" else (
            lambda o: chat.prepare_vary(o, image))
        await self.start_in_channel(origin, prepare)

    async def _reaction_origin(self, payload: discord.RawReactionActionEvent) -> Origin:
        bot = self.bot
        channel = bot.get_channel(payload.channel_id)
        locale = self._locales.get(payload.user_id) or await asyncio.to_thread(self.chat.user_locale, payload.user_id)
        manage = False
        if payload.guild_id is not None:
            guild = bot.get_guild(payload.guild_id)
            if locale is None and guild is not None:
                locale = str(guild.preferred_locale)
            if payload.member is not None and channel is not None and hasattr(channel, "permissions_for"):
                manage = channel.permissions_for(payload.member).manage_messages  # type: ignore[union-attr]
        return Origin(user_id=payload.user_id, guild_id=payload.guild_id, channel_id=payload.channel_id,
                      locale=normalize_locale(locale), age_restricted=channel_is_age_restricted(channel),
                      manage_messages=manage,
                      parent_channel_id=channel.parent_id if isinstance(channel, discord.Thread) else None)

    async def _offer_numbers(self, payload: discord.RawReactionActionEvent, count: int) -> None:
        """A multi-image result and no image picked yet: show 1️⃣–4️⃣ to click."""
        channel = self.bot.get_channel(payload.channel_id)
        if channel is None:
            return
        message = channel.get_partial_message(payload.message_id)  # type: ignore[union-attr]
        for emoji in NUMBER_EMOJI[:count]:
            try:
                await message.add_reaction(emoji)
            except discord.HTTPException:
                return

    async def start_in_channel(self, origin: Origin, prepare: Callable[[Origin], Prepared]) -> None:
        """A job asked for by a reaction: answered with channel messages that mention the user."""
        bot = self.bot
        mention = f"<@{origin.user_id}>"
        channel = bot.get_channel(origin.channel_id or 0)
        if channel is None:
            try:
                channel = await bot.fetch_channel(origin.channel_id or 0)
            except discord.HTTPException:
                return
        guild = getattr(channel, "guild", None)
        if guild is not None:
            missing = missing_permissions(channel.permissions_for(guild.me), channel)  # type: ignore[union-attr]
            if missing:
                await self._tell_privately(origin, missing_permissions_text(missing, origin.channel_id, origin.locale))
                return
        try:
            prepared = await self._checked(prepare, origin)
        except BrushworkError as error:
            await self._say(channel, origin, f"{mention} {error.message(origin.locale)}")
            return
        limit = guild.filesize_limit if guild is not None else 10 * 1024 * 1024
        ref = ReplyRef(user=origin.user_id, channel=origin.channel_id, guild=origin.guild_id, locale=origin.locale,
                       via="channel", message=None, created=time.time(), limit=limit, screened=prepared.screened)
        try:  # stored first: the acknowledgement always stands for a job that exists
            handle = await self._store(prepared, ref)
        except BrushworkError as error:
            await self._say(channel, origin, f"{mention} {error.message(origin.locale)}")
            return
        message = await self._say(channel, origin, acknowledgement(prepared, origin.locale, mention=mention),
                                  view=status_view(handle.job_id, origin.locale))
        if message is None:  # neither the channel nor a direct message took it: nobody knows of this job
            await asyncio.to_thread(self._withdraw, origin, handle.job_id, ref)
            return
        # The job's answers go where its acknowledgement went: the channel, or the direct message.
        ref = replace(ref, message=message.id, channel=message.channel.id)
        self.bot.followers.follow(handle.job_id, ref, prepared.plan, fresh=True, record=True)

    def _withdraw(self, origin: Origin, job_id: str, ref: ReplyRef) -> None:
        """Cancel a stored job that could not be announced anywhere, and mark its answer given."""
        try:
            self.chat.cancel(origin, job_id)
            self.chat.finish_reply(job_id, ref.to_dict())
        except Exception:
            log.warning("could not withdraw job %s, which nobody was told about", job_id, exc_info=True)

    async def _say(self, channel: Any, origin: Origin, text: str, **fields: Any) -> discord.Message | None:
        """A channel message mentioning the user; when the channel does not take it (even after
        discord.py's retries), a direct message saying why it came there.  None: neither did."""
        try:
            return await channel.send(text[:2000], allowed_mentions=mention_only(origin.user_id), **fields)
        except discord.HTTPException as error:
            log.warning("cannot answer a reaction in channel %s (%s %s)", origin.channel_id, error.status, error.code)
            why = "imagine.dm_fallback" if isinstance(error, discord.Forbidden) else "imagine.dm_fallback_error"
            note = translate(why, origin.locale, channel=f"<#{origin.channel_id}>")
            return await self._tell_privately(origin, f"{note}\n{text}", **fields)

    async def _tell_privately(self, origin: Origin, text: str, **fields: Any) -> discord.Message | None:
        try:
            user = self.bot.get_user(origin.user_id) or await self.bot.fetch_user(origin.user_id)
            return await user.send(text[:2000], **fields)
        except discord.HTTPException as error:
            log.warning("could not reach user %s by direct message (%s %s)", origin.user_id, error.status, error.code)
            return None


def info_embed(card: InfoCard, locale: str) -> tuple[discord.Embed, list[discord.File]]:
    """ℹ️ Info as an embed; the infotext and the code go to files when they would not fit."""
    embed = discord.Embed(title=card.title, colour=discord.Colour.blurple())
    files: list[discord.File] = []
    for name, value in card.fields:
        embed.add_field(name=name[:256], value=value[:1024] or "—", inline=len(value) < 40)
    infotext = card.infotext or ""
    code_block = f"```\n{infotext}\n```" if infotext else translate("imagine.info.no_infotext", locale)
    python = f"```py\n{card.python}\n```"
    if len(python) > 1024:
        files.append(discord.File(io.BytesIO(card.python.encode("utf-8")), filename="reproduce.py"))
        python = translate("imagine.info.in_file", locale, file="reproduce.py")
    budget = 5800 - len(embed) - len(python) - 64
    if len(code_block) > min(4000, budget):
        files.append(discord.File(io.BytesIO(infotext.encode("utf-8")), filename="infotext.txt"))
        code_block = translate("imagine.info.in_file", locale, file="infotext.txt")
    embed.description = f"**{translate('imagine.info.infotext', locale)}**\n{code_block}"
    embed.add_field(name=translate("imagine.info.python", locale), value=python, inline=False)
    return embed, files


__all__ = ["Actions", "info_embed"]
