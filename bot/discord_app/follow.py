"""Following a job to its end in Discord: status edits, previews, results, errors.

One :class:`JobFollower` task per job reads ``handle.events(previews=True)`` and edits the job's
status message through a :class:`~bot.discord_app.delivery.ThrottledEditor` (at most one edit
per ``edit_interval`` seconds, a preview image at most every ``preview_interval``), then
delivers the terminal event: the images (fitted into the upload limit, split over messages if
needed, the recipe PNG whenever it fits) with the result buttons, or the error, or "cancelled".

Where answers go is the job's :class:`~bot.discord_app.delivery.ReplyRef`, stored with the job:
the interaction's webhook while its token lives (``discord.Webhook.partial``, so a restarted bot
can use it too), else the channel, mentioning the user; a channel the bot may not post in gets
a log line and a direct message to the user.  :class:`Followers` owns the tasks and, at start,
re-attaches to every unfinished job that has a reply reference.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import discord

from bot.attachments import Upload
from bot.discord_app.components import result_view, status_view
from bot.discord_app.delivery import (
    ReplyRef,
    Status,
    ThrottledEditor,
    headline,
    results_text,
    status_for,
    status_text,
)
from generation.errors import BrushworkError
from generation.i18n import translate
from generation.queue import JobCancelled, JobDone, JobEvent, JobFailed, JobProgress
from storage.records import Scope

if TYPE_CHECKING:
    from bot.chat import ChatService
    from bot.discord_app.client import BrushworkBot
    from bot.services import SavedImage

log = logging.getLogger("brushwork.discord")

NO_MENTIONS = discord.AllowedMentions.none()
#: Seconds a closing bot waits for answers that are being written (the job already ended).
DELIVERY_GRACE_S = 10.0
#: Webhook answers that mean "this interaction token is no longer usable".
TOKEN_GONE = {(401, 50027), (404, 10015)}
#: Seconds between tries of a job's final answer that failed on Discord's side (429, 5xx, network)
#: after discord.py's own retries: three more tries within the same run, then the next start.
DELIVERY_RETRY_S = (2.0, 10.0, 30.0)


def transient(error: BaseException) -> bool:
    """A failure worth trying again later: a rate limit, a Discord server error, the network."""
    if isinstance(error, discord.HTTPException):
        return error.status == 429 or error.status >= 500
    return isinstance(error, OSError | asyncio.TimeoutError)


def mention_only(user_id: int) -> discord.AllowedMentions:
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(user_id)], replied_user=False)


class Outbox:
    """Where one job's messages go: the interaction webhook while the token lives, else the channel."""

    def __init__(self, bot: BrushworkBot, ref: ReplyRef) -> None:
        self.bot = bot
        self.ref = ref
        self.expired = not ref.token_valid()

    def _webhook(self) -> discord.Webhook:
        assert self.ref.app is not None and self.ref.token is not None
        return discord.Webhook.partial(self.ref.app, self.ref.token, client=self.bot)

    def _token_gone(self, error: discord.HTTPException) -> bool:
        gone = (error.status, error.code) in TOKEN_GONE or error.status == 401
        if gone:
            self.expired = True
        return gone

    async def channel(self) -> discord.abc.Messageable:
        channel_id = self.ref.channel
        channel = self.bot.get_channel(channel_id) if channel_id else None
        if channel is None and channel_id:
            channel = await self.bot.fetch_channel(channel_id)
        if channel is None:
            raise RuntimeError("the job has no channel to answer in")
        return channel  # type: ignore[return-value]

    async def edit(self, message_id: int | None, *, fallback: bool = True, **fields: Any) -> bool:
        """Edit a message of this job (the status message), through the webhook while the token
        lives, else (``fallback``) through the channel; False when it could not be done that way."""
        if message_id is None:
            return False
        if not self.expired and self.ref.via == "interaction":
            try:
                await self._webhook().edit_message(message_id, **fields)
                return True
            except discord.HTTPException as error:
                if not self._token_gone(error):
                    raise
        if self.ref.via == "interaction" and not fallback:
            return False
        channel = await self.channel()
        await channel.get_partial_message(message_id).edit(**fields)  # type: ignore[attr-defined]
        return True

    async def original(self) -> int | None:
        """The id of the interaction's original response (its acknowledgement) while the token
        lives; None when there is none: the interaction was never answered, or the token is gone."""
        if self.expired or self.ref.via != "interaction":
            return None
        try:
            # discord.py's partial webhook fetches by id; Discord's route also takes "@original"
            message = await self._webhook().fetch_message(cast(int, "@original"))
        except discord.HTTPException as error:
            if self._token_gone(error) or error.status == 404:
                return None
            raise
        return message.id

    async def followup(self, **fields: Any) -> discord.Message | None:
        """A further message of this job's answer (results that need more than one message)."""
        if not self.expired and self.ref.via == "interaction":
            try:
                return await self._webhook().send(wait=True, **fields)
            except discord.HTTPException as error:
                if not self._token_gone(error):
                    raise
        return await self.post(**fields)

    async def post(self, *, content: str | None = None, **fields: Any) -> discord.Message | None:
        """A channel message mentioning the user; a channel that refuses gets a direct message instead."""
        mention = self.ref.mention
        text = content if content and mention in content else f"{mention} {content or ''}".strip()
        fields.setdefault("allowed_mentions", mention_only(self.ref.user))
        try:
            channel = await self.channel()
            return await channel.send(content=text, **fields)
        except discord.HTTPException as error:
            log.warning("cannot post in channel %s for user %s (%s %s): trying a direct message",
                        self.ref.channel, self.ref.user, error.status, error.code)
            sent = await self.direct(content, fields)
            if sent is None and transient(error):
                raise  # nowhere reached, but the channel may take it later: the caller tries again
            return sent

    async def direct(self, content: str | None, fields: dict[str, Any]) -> discord.Message | None:
        fields = {k: v for k, v in fields.items() if k in ("files", "file", "embed", "embeds")}
        note = translate("imagine.dm_fallback", self.ref.locale, channel=f"<#{self.ref.channel}>")
        try:
            user = self.bot.get_user(self.ref.user) or await self.bot.fetch_user(self.ref.user)
            for upload_field in ("files", "file"):
                if upload_field in fields:
                    fields[upload_field] = _reopened(fields[upload_field])
            return await user.send(content=f"{note}\n{content or ''}".strip()[:2000], **fields)
        except discord.HTTPException as error:
            log.warning("could not reach user %s by direct message either (%s %s)", self.ref.user, error.status,
                        error.code)
            return None


def _reopened(files: Any) -> Any:
    """discord.File objects are consumed by a failed send: rewind them for a second try."""
    items = files if isinstance(files, list) else [files]
    for item in items:
        try:
            item.reset(seek=True)
        except Exception:
            pass
    return files


def _files(uploads: Sequence[Upload]) -> list[discord.File]:
    return [discord.File(io.BytesIO(upload.data), filename=upload.filename) for upload in uploads]


def _placements(uploads: Sequence[Upload], channel_id: int | None, message_id: int) -> list[tuple[str, int, int]]:
    return [(upload.filename.rsplit(".", 1)[0], channel_id or 0, message_id) for upload in uploads]


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def follow_events(handle: Any, editor: ThrottledEditor[Any], status_of: Callable[[Any], Any], *,
                        previews: bool = True) -> Any:
    """Read a job's events until its end: each other event's status (``status_of``; ``None``:
    nothing to show) goes to the throttled ``editor``, closed when the events end; returns the
    terminal event (done, failed, cancelled), or ``None`` if the stream ended without one."""
    terminal = None
    try:
        async for event in handle.events(previews=previews):  # ends after the terminal event
            if event.terminal:
                terminal = event
                continue
            status = status_of(event)
            if status is not None:
                editor.submit(status)
    finally:
        await editor.close()
    return terminal


async def deliver_with_retries(job_id: str, deliver: Callable[[], Awaitable[None]]) -> None:
    """Run a job's final answer (``deliver``), trying again after ``DELIVERY_RETRY_S`` while it
    fails on Discord's side; a failure that will not pass (403, a bug) ends it at once.  Each
    step of an answer is safe to run twice (edits, and followers that remember what they sent)."""
    for pause in (*DELIVERY_RETRY_S, None):
        try:
            await deliver()
            return
        except Exception as error:
            if pause is None or not transient(error):
                raise
            log.warning("delivering the answer of job %s failed (%s); trying again in %.0f s", job_id, error, pause)
            await asyncio.sleep(pause)


class JobFollower:
    """Follows one job: status edits while it waits and runs, then its result or error."""

    #: Whether its status shows a preview of the picture as it forms.
    previews = True

    def __init__(self, bot: BrushworkBot, job_id: str, ref: ReplyRef, plan: Any, *,
                 fresh: bool = False, record: bool = False) -> None:
        self.bot = bot
        self.fresh = fresh
        self.record = record  # the job was stored before its acknowledgement: record where that went
        self.job_id = job_id
        self.ref = ref
        self.plan = plan
        self.outbox = Outbox(bot, ref)
        self._last_preview = float("-inf")
        self.delivering = False  # the job ended: its answer is being written
        # What the answer's tries have done so far (a failed try is run again from there):
        self._result: tuple[list[list[Upload]], str, list[Any]] | None = None
        self._sent = 0  # messages of the result written
        self._where: tuple[int | None, int] | None = None
        self._placed: list[tuple[str, int, int]] = []

    @property
    def chat(self) -> ChatService:
        return self.bot.container.chat

    def head(self) -> str:
        plan = self.plan
        if plan is None:
            return ""
        mention = self.ref.mention if self.ref.via == "channel" else None
        return headline(plan.kind, plan.request.prompt, plan.parent_public_id, self.ref.locale, mention=mention)

    async def run(self) -> None:
        await self._status_message()
        handle = self.bot.container.queue.handle(self.job_id)
        # A fresh acknowledgement already says where the job stands: the first edit waits its turn
        # too (a burst of requests is not followed by a burst of edits).
        editor: ThrottledEditor[Status] = ThrottledEditor(self._show, self.bot.edit_interval,
                                                          wait_first=self.fresh)
        terminal = await follow_events(handle, editor, self._status, previews=self.previews)
        self.delivering = True
        await deliver_with_retries(self.job_id, lambda: self._end(terminal))

    async def _end(self, terminal: JobEvent | None) -> None:
        if isinstance(terminal, JobDone):
            await self.deliver(list(terminal.result or ()))
        elif isinstance(terminal, JobFailed):
            await self.fail(terminal.error)
        elif isinstance(terminal, JobCancelled):
            await self.cancelled()

    # ------------------------------------------------------------------ while it runs
    async def _status_message(self) -> None:
        """Jobs are stored before they are acknowledged: make sure this one has a status message,
        and that its row says which.  A reference without a message (the bot stopped, or Discord
        failed, between storing the job and acknowledging it): the interaction's original
        response if there is one, else a new status message in the channel (or by direct
        message) that mentions the user."""
        ref, record = self.ref, self.record
        if ref.message is None:
            try:
                found = await self.outbox.original()
                if found is not None:
                    ref = replace(ref, message=found)
                else:
                    status = Status(translate("imagine.status.not_acknowledged", ref.locale))
                    posted = await self.outbox.post(content=status_text(self.head(), status),
                                                    view=status_view(self.job_id, ref.locale))
                    if posted is not None:
                        ref = replace(ref, via="channel", message=posted.id, channel=posted.channel.id)
            except (discord.HTTPException, OSError, RuntimeError) as error:
                log.warning("job %s has no status message and none could be made (%s): its answer will be posted",
                            self.job_id, error)
            record = ref != self.ref
        self.ref = ref
        self.outbox.ref = ref
        if record:
            try:
                await self.bot.actions.record_reply(self.job_id, ref)
            except Exception:
                log.warning("could not record the status message of job %s", self.job_id, exc_info=True)

    def _status(self, event: JobEvent) -> Status | None:
        """The status line for ``event``, with its preview only every ``preview_interval`` seconds."""
        status = status_for(event, self.ref.locale)
        if status is not None and isinstance(event, JobProgress) and status.preview is not None:
            now = time.monotonic()
            if now - self._last_preview >= self.bot.preview_interval:
                self._last_preview = now
            else:
                status = replace(status, preview=None)
        return status

    async def _show(self, status: Status) -> None:
        fields: dict[str, Any] = {"content": status_text(self.head(), status), "allowed_mentions": NO_MENTIONS}
        fields["view"] = status_view(self.job_id, self.ref.locale) if status.cancellable else None
        if status.preview is not None:
            data = await asyncio.to_thread(_png, status.preview)
            fields["attachments"] = [discord.File(io.BytesIO(data), filename="preview.png")]
        await self.outbox.edit(self.ref.message, **fields)

    # ------------------------------------------------------------------ the end
    async def deliver(self, saved: list[SavedImage]) -> None:
        """The result: screened, fitted, the first message, then the rest.  Run again after a
        failure (:func:`deliver_with_retries`), it goes on where the last try stopped."""
        ref, locale = self.ref, self.ref.locale
        if self._result is None:
            verdicts = await asyncio.to_thread(self.chat.screen, saved, ref.to_dict())
            shown = [item for item, verdict in zip(saved, verdicts, strict=True) if verdict.allowed]
            withheld = len(saved) - len(shown)
            groups, reencoded, unfit = await asyncio.to_thread(self._uploads, shown, ref.limit)
            records = [item.record for item in shown]
            notes = [translate("imagine.result.unfit", locale, id=public_id) for public_id in unfit]
            content = results_text(self.head(), records, locale, withheld=withheld, reencoded=reencoded,
                                   notes=notes)
            self._result = (groups, content, records)
        groups, content, records = self._result
        owner = Scope(user_id=ref.user, guild_id=ref.guild)
        first = groups[0] if groups else []
        if self._sent == 0:
            if first and ref.message is not None:  # before the images show: a quick 🔁 on them finds them
                await asyncio.to_thread(self.chat.attach_messages, _placements(first, ref.channel or 0, ref.message),
                                        owner)
            view = result_view(self.job_id, records, locale) if records else None
            self._where = await self._first_message(content, first, view)
            self._sent = 1
            if self._where is not None and self._where != (ref.channel, ref.message):
                self._placed += _placements(first, *self._where)
        for index in range(self._sent, len(groups)):
            group = groups[index]
            names = ", ".join(f"`{u.filename.rsplit('.', 1)[0]}`" for u in group)
            message = await self.outbox.followup(content=translate("imagine.result.continued", locale, ids=names),
                                                 files=_files(group), allowed_mentions=NO_MENTIONS)
            self._sent = index + 1
            if message is not None:
                self._placed += _placements(group, message.channel.id, message.id)
        if self._placed:
            await asyncio.to_thread(self.chat.attach_messages, self._placed, owner)
        await self._finished(message=self._where[1] if self._where else None)

    async def _first_message(self, content: str, uploads: Sequence[Upload],
                             view: discord.ui.View | None) -> tuple[int | None, int] | None:
        """The result: the status message edited into it (while the token lives, or for a job started
        by a reaction); after the token expired, a new channel message that mentions the user."""
        ref = self.ref
        fields = {"content": content, "view": view, "allowed_mentions": NO_MENTIONS}
        if ref.via == "channel":
            try:
                if await self.outbox.edit(ref.message, attachments=_files(uploads), **fields):
                    return ref.channel, ref.message  # type: ignore[return-value]
            except discord.HTTPException as error:
                log.warning("could not edit the status message of job %s (%s %s): posting the result",
                            self.job_id, error.status, error.code)
        else:
            try:
                if await self.outbox.edit(ref.message, fallback=False, attachments=_files(uploads), **fields):
                    return ref.channel, ref.message  # type: ignore[return-value]
            except discord.NotFound:  # the status message was deleted: the result comes as a new one
                message = await self.outbox.followup(files=_files(uploads), **fields)
                return (message.channel.id, message.id) if message is not None else None
            except discord.HTTPException as error:  # 429/5xx after discord.py's retries: post it instead
                log.warning("could not edit the status message of job %s (%s %s): posting the result",
                            self.job_id, error.status, error.code)
        # The token expired: say so on the old message (best effort), post the result as a channel message.
        await self._quiet_edit(translate("imagine.status.results_below", ref.locale))
        message = await self.outbox.post(content=content, files=_files(uploads), view=view)
        return (message.channel.id, message.id) if message is not None else None

    async def _quiet_edit(self, text: str) -> None:
        try:
            await self.outbox.edit(self.ref.message, content=f"{self.head()}\n{text}".strip()[:2000], view=None,
                                   attachments=[], allowed_mentions=NO_MENTIONS)
        except (discord.HTTPException, RuntimeError) as error:
            log.info("could not update the old status message of job %s: %s", self.job_id, error)

    def _uploads(self, shown: Sequence[SavedImage], limit: int) -> tuple[list[list[Upload]], list[str], list[str]]:
        """Read the PNGs (in a thread) and fit them into the upload limit: never dropped."""
        from bot.attachments import fit_image, plan_messages

        fitted: list[Upload] = []
        unfit: list[str] = []
        for item in shown:
            name = f"{item.record.public_id}.png"
            try:
                fitted.append(fit_image(name, item.path.read_bytes(), limit))
            except (ValueError, OSError):
                unfit.append(item.record.public_id)
        reencoded = [u.filename.rsplit(".", 1)[0] for u in fitted if not u.original]
        return plan_messages(fitted, limit), reencoded, unfit

    async def fail(self, error: BrushworkError) -> None:
        text = f"{self.head()}\n❌ {error.message(self.ref.locale)}".strip()
        await self._terminal_text(text)

    async def cancelled(self) -> None:
        await self._terminal_text(f"{self.head()}\n{translate('imagine.status.cancelled', self.ref.locale)}".strip())

    async def _terminal_text(self, text: str) -> None:
        try:
            delivered = await self.outbox.edit(self.ref.message, fallback=False, content=text[:2000], view=None,
                                               attachments=[], allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as error:
            log.info("could not edit the status message of job %s: %s", self.job_id, error)
            delivered = False
        if not delivered:
            await self._quiet_edit(translate("imagine.status.see_below", self.ref.locale))
            await self.outbox.post(content=text[:1900])
        await self._finished()

    async def _finished(self, **changes: Any) -> None:
        try:
            await asyncio.to_thread(self.chat.finish_reply, self.job_id, self.ref.to_dict(), **changes)
        except Exception:
            log.warning("could not record the delivery of job %s", self.job_id, exc_info=True)


class FollowerTasks:
    """Running followers, one task per job: started once (a second ``start`` for a job already
    followed returns its task), forgotten when done, and stopped by :meth:`close`.  A follower
    is anything with ``job_id``, ``async run()`` and ``delivering`` (its job ended and its answer
    is being written); the /imagine followers and the /lora trainings share this."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # for task names and log lines
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.followers: dict[str, Any] = {}

    def start(self, follower: Any) -> asyncio.Task[None]:
        job_id = follower.job_id
        existing = self.tasks.get(job_id)
        if existing is not None and not existing.done():
            return existing
        task = asyncio.get_running_loop().create_task(self._run(follower), name=f"brushwork-{self.kind}-{job_id}")
        self.tasks[job_id] = task
        self.followers[job_id] = follower
        return task

    async def _run(self, follower: Any) -> None:
        try:
            await follower.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a follower must never take the bot down; the job itself is safe in the queue
            log.exception("following %s job %s failed", self.kind, follower.job_id)
        finally:
            if self.tasks.get(follower.job_id) is asyncio.current_task():
                del self.tasks[follower.job_id]
                self.followers.pop(follower.job_id, None)

    async def wait(self, timeout: float | None = None) -> None:
        """Until every follower is done (tests, benchmarks)."""
        tasks = [t for t in self.tasks.values() if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def close(self, grace: float = DELIVERY_GRACE_S) -> None:
        """Stop following.  Answers being written (the job ended) get ``grace`` seconds to finish;
        the others stop at once and are followed again by the next start (their jobs are unfinished)."""
        delivering = [self.tasks[job] for job, f in self.followers.items() if f.delivering and job in self.tasks]
        if delivering:
            await asyncio.wait(delivering, timeout=grace)
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.clear()
        self.followers.clear()


class Followers(FollowerTasks):
    """The bot's /imagine job followers (``bot.followers``)."""

    def __init__(self, bot: BrushworkBot) -> None:
        super().__init__("follow")
        self.bot = bot

    def follow(self, job_id: str, ref: ReplyRef, plan: Any, *,
               fresh: bool = False, record: bool = False) -> asyncio.Task[None]:
        """Follow ``job_id``; ``fresh``: its status message was written just now (the acknowledgement);
        ``record``: the job's row does not know that message yet (it was stored before it)."""
        from bot.discord_app.replies import reply_for  # the table names every follower, this one too

        return self.start(reply_for(plan).follower(self.bot, job_id, ref, plan, fresh=fresh, record=record))

    async def resume(self) -> int:
        """Follow again every job whose chat answer is owed (after a restart)."""
        followed = await asyncio.to_thread(self.bot.container.chat.followed_jobs)
        for item in followed:
            try:
                ref = ReplyRef.from_dict(item.reply_ref)
            except (KeyError, TypeError, ValueError):
                log.warning("job %s has an unreadable reply reference; not following it", item.job_id)
                continue
            self.follow(item.job_id, ref, item.plan)
        if followed:
            log.info("following %d unfinished job(s) again", len(followed))
        return len(followed)


__all__ = ["FollowerTasks", "Followers", "JobFollower", "Outbox", "follow_events"]
