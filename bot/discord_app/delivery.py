"""What the bot writes about a job, and how often: pure functions and values, no Discord calls.

* :class:`ReplyRef` — where a job's answers go, stored with the job (``jobs.reply_ref``) so a
  restarted bot can finish what the previous one acknowledged: the interaction's webhook
  (application id + token, 15 minutes) and its message, else the channel, mentioning the user.
* The texts: the acknowledgement, queue position/ETA, progress (step i/N with a bar), the
  result footer (each image's short id and seed, the key settings), errors, ℹ️ Info.
* :class:`ThrottledEditor` — applies only the latest of a stream of states, at most once per
  interval (editing one message more than about once a second only burns rate limits).

Everything here is unit-tested without Discord (``tests/bot/test_discord_delivery.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from bot.services import ComparePlan
from bot.texts import clip as _clip
from bot.texts import duration, progress_bar
from bot.texts import shorten as _shorten
from generation.i18n import translate
from generation.queue import JobProgress, JobQueued, JobRequeued, JobStalled, JobStarted
from generation.request import Request, format_number

if TYPE_CHECKING:
    from bot.chat import FileRecipe, ImageInfo, Prepared
    from bot.services import GenerationPlan
    from generation.queue import JobEvent
    from storage.records import ImageRecord

log = logging.getLogger("brushwork.discord")

TOKEN_LIFETIME_S = 15 * 60.0
#: Stop using an interaction token this long before Discord does (clock skew, slow uploads).
TOKEN_MARGIN_S = 60.0
MAX_CONTENT = 2000  # Discord's message content limit
PROMPT_SHOWN = 300  # characters of the prompt repeated in status and result messages
NUMBER_EMOJI = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")


# ---------------------------------------------------------------------- where answers go


@dataclass(frozen=True, slots=True)
class ReplyRef:
    """A job's reply reference (``v`` 1): everything a bot needs to answer for the job later.

    ``via`` "interaction": ``message`` is the interaction's original response, edited through
    the webhook ``app``/``token`` while the token lives (``created`` + 15 min).  ``via``
    "channel" (reactions, and interactions whose token expired): ``message`` is a channel
    message of the bot's, edited through the channel, and results mention ``user``.
    """

    user: int
    channel: int | None
    guild: int | None = None
    locale: str = "en"
    via: str = "interaction"
    app: int | None = None
    token: str | None = field(default=None, repr=False)
    message: int | None = None
    created: float = 0.0  # when the interaction was created (UNIX seconds)
    limit: int = 10 * 1024 * 1024  # upload limit per file (filesize_limit)
    screened: bool = False  # the server's safety policy applies to the results
    delivered: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplyRef:
        def integer(key: str) -> int | None:
            value = data.get(key)
            return int(value) if value is not None else None

        return cls(user=int(data["user"]), channel=integer("channel"), guild=integer("guild"),
                   locale=str(data.get("locale") or "en"), via=str(data.get("via") or "interaction"),
                   app=integer("app"), token=data.get("token"), message=integer("message"),
                   created=float(data.get("created") or 0.0), limit=int(data.get("limit") or 10 * 1024 * 1024),
                   screened=bool(data.get("screened")), delivered=bool(data.get("delivered")))

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "user": self.user, "channel": self.channel, "guild": self.guild, "locale": self.locale,
                "via": self.via, "app": self.app, "token": self.token, "message": self.message,
                "created": self.created, "limit": self.limit, "screened": self.screened, "delivered": self.delivered}

    def token_valid(self, now: float | None = None) -> bool:
        """Whether the interaction webhook may still be used (with a safety margin)."""
        if self.via != "interaction" or not self.token or self.app is None:
            return False
        now = time.time() if now is None else now
        return now < self.created + TOKEN_LIFETIME_S - TOKEN_MARGIN_S

    @property
    def mention(self) -> str:
        return f"<@{self.user}>"


# ---------------------------------------------------------------------- small texts


def shorten(text: str, limit: int = PROMPT_SHOWN) -> str:
    return _shorten(text, limit)


def _escape_markdown(text: str) -> str:
    for char in ("\\", "*", "_", "~", "`", "|", ">"):
        text = text.replace(char, "\\" + char)
    return text.replace("@", "@\u200b")  # never a ping from a prompt


def clip(text: str, limit: int = MAX_CONTENT) -> str:
    return _clip(text, limit)


def headline(plan_kind: str, prompt: str, parent: str | None, locale: str, *, mention: str | None = None) -> str:
    """``**a cat on a motorbike**`` (``⬆️ Upscale of `k3x9fq2a` —`` for operations), then who asked."""
    shown = f"**{_escape_markdown(shorten(prompt))}**" if prompt else ""
    parts = []
    if plan_kind != "generate" and parent:
        parts.append(translate(f"imagine.kind.{plan_kind}", locale, parent=parent))
    if shown:
        parts.append(shown)
    if mention:
        parts.append(f"— {mention}")
    return " ".join(parts)


# ---------------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class Status:
    """What a job's status message shows now."""

    text: str
    cancellable: bool = True
    preview: Any = field(default=None, compare=False)  # a small PIL image, or None: keep what is shown


def ack_text(prepared: Prepared, locale: str, *, mention: str | None = None) -> str:
    """The acknowledgement of a stored job: what it is, and how much waits before it."""
    plan = prepared.plan
    assert not isinstance(plan, ComparePlan), "a comparison has its own acknowledgement (compare_follow)"
    lines = [headline(plan.kind, plan.request.prompt, plan.parent_public_id, locale, mention=mention),
             waiting_line(prepared, locale), *note_lines(plan, locale)]
    return clip("\n".join(line for line in lines if line))


def waiting_line(prepared: Prepared, locale: str) -> str:
    """An acknowledgement's status: how much waits before the job, when it was checked."""
    if prepared.waiting:
        return translate("imagine.status.waiting", locale, waiting=prepared.waiting,
                         eta=duration(prepared.eta_s, locale))
    return translate("imagine.status.submitting", locale)


def note_lines(plan: GenerationPlan, locale: str) -> list[str]:
    """What the resolver changed (sizes rounded, …): said, never silent."""
    return [f"ℹ️ {note.message(locale)}" for note in plan.notes]


def status_for(event: JobEvent, locale: str) -> Status | None:
    """The status line for one queue event; None for events that change nothing shown."""
    if isinstance(event, JobQueued):
        eta = duration(event.eta_s, locale)
        if event.position <= 0:
            return Status(translate("imagine.status.next", locale, eta=eta))
        return Status(translate("imagine.status.queued", locale, position=event.position + 1, eta=eta))
    if isinstance(event, JobStarted):
        return Status(translate("imagine.status.started", locale))
    if isinstance(event, JobProgress):
        bar = progress_bar(event.step, event.total)
        if event.eta_s is None:
            text = translate("imagine.status.progress", locale, step=event.step, total=event.total, bar=bar)
        else:
            text = translate("imagine.status.progress_eta", locale, step=event.step, total=event.total, bar=bar,
                             eta=duration(event.eta_s, locale))
        return Status(text, preview=event.preview)
    if isinstance(event, JobStalled):
        return Status(translate("imagine.status.stalled", locale, seconds=duration(event.seconds, locale)))
    if isinstance(event, JobRequeued):
        return Status(translate("imagine.status.requeued", locale))
    return None


def status_text(head: str, status: Status) -> str:
    return clip(f"{head}\n{status.text}" if head else status.text)


# ---------------------------------------------------------------------- results


def key_settings(request: Request, width: int, height: int, locale: str) -> str:
    """``64×64 · tiny · DPM++ 2M Karras · 20 steps · CFG 7`` (+ hires, LoRAs, negative prompt)."""
    parts = [f"{width}×{height}", str(request.model), str(request.sampler),
             translate("imagine.result.steps", locale, steps=request.steps),
             f"CFG {format_number(request.cfg) if request.cfg is not None else '?'}"]
    if request.image is not None:
        strength = request.hires.strength if request.hires is not None else None
        parts.append(translate("imagine.result.start_image", locale, image=request.image,
                               strength=format_number(strength) if strength is not None else "—"))
    if request.hires is not None and not (request.image is not None and request.hires.scale == 1):
        hires = request.hires
        if hires.steps is not None and hires.steps != request.steps:  # chosen apart: say how many
            parts.append(translate("imagine.result.hires_steps", locale, scale=format_number(hires.scale),
                                   steps=hires.steps))
        else:
            parts.append(translate("imagine.result.hires", locale, scale=format_number(hires.scale)))
    if request.loras:
        parts.append("LoRA " + ", ".join(ref.render() for ref in request.loras))
    if request.vary_seed is not None and request.vary_strength is not None:
        parts.append(translate("imagine.result.variation", locale, strength=format_number(request.vary_strength)))
    text = " · ".join(parts)
    if request.negative_prompt:
        text += "\n" + translate("imagine.result.negative", locale, negative=_escape_markdown(
            shorten(request.negative_prompt, 150)))
    return text


def results_text(head: str, records: Sequence[ImageRecord], locale: str, *, withheld: int = 0,
                 reencoded: Sequence[str] = (), notes: Sequence[str] = ()) -> str:
    """The result message: headline, one line per image (``1`` id · seed), the key settings."""
    lines = [head] if head else []
    images = [translate("imagine.result.image", locale, index=i + 1, id=r.public_id, seed=r.seed)
              for i, r in enumerate(records)]
    if images:
        lines.append("   ".join(images))
        first = records[0]
        lines.append(key_settings(Request.from_dict(first.request), first.width, first.height, locale))
    if withheld:
        lines.append(translate("imagine.result.withheld", locale, count=withheld))
    if reencoded:
        lines.append(translate("imagine.result.reencoded", locale, ids=", ".join(f"`{i}`" for i in reencoded)))
    lines.extend(notes)
    return clip("\n".join(lines))


# ---------------------------------------------------------------------- ℹ️ Info


@dataclass(frozen=True, slots=True)
class InfoCard:
    """ℹ️ Info as title, fields and code blocks (the cog turns it into an embed)."""

    title: str
    fields: tuple[tuple[str, str], ...]
    infotext: str | None
    python: str


def python_snippet(request: Request, public_id: str, *, upscale_of: str | None = None) -> str:
    """Code that reproduces the image with Brushwork's Python API."""
    from generation.api import python_code

    lines = python_code(request, save_as=f"{public_id}.png").split("\n")
    if upscale_of:
        lines.insert(0, f"# an upscale starts from image {upscale_of}: reproduce that one first, then run its "
                        "hires pass (brushwork upscale)")
    return "\n".join(lines)


def info_card(info: ImageInfo, locale: str) -> InfoCard:
    record = info.record
    request = info.details.request

    def t(code: str, **params: Any) -> str:
        return translate(f"imagine.info.{code}", locale, **params)

    fields: list[tuple[str, str]] = [(t("prompt"), shorten(request.prompt, 1000) or "—")]
    if request.negative_prompt:
        fields.append((t("negative"), shorten(request.negative_prompt, 1000)))
    fields.append((t("settings"), key_settings(request, record.width, record.height, locale).split("\n")[0]))
    fields.append((t("seed"), str(request.seed)))
    if info.siblings and len(info.siblings) > 1:
        fields.append((t("batch"), "   ".join(f"`{i + 1}` {s.public_id} · {s.seed}" for i, s in enumerate(info.siblings))))
    if record.parent_public_id and record.relation:
        fields.append((t("parent"), t("parent_value", parent=record.parent_public_id,
                                      relation=translate(f"imagine.relation.{record.relation.value}", locale))))
    if request.image is not None and request.hires is not None:
        fields.append((t("start"), t("start_value", image=request.image,
                                     strength=format_number(request.hires.strength or 0))))
    fields.append((t("flags"), f"`{shorten(request.render(), 1000)}`"))
    batch = info.batch if info.batch is not None and (info.batch.n or 1) > 1 else None
    code = python_snippet(batch or request, record.public_id,
                          upscale_of=record.parent_public_id if record.relation and
                          record.relation.value == "upscale" else None)
    return InfoCard(title=t("title", id=record.public_id), fields=tuple(fields),
                    infotext=info.details.infotext, python=code)


def file_info_card(recipe: FileRecipe, locale: str) -> InfoCard:
    """``/info file:``: the recipe found in an uploaded image, and whether it runs here as is."""
    request = recipe.request

    def t(code: str, **params: Any) -> str:
        return translate(f"imagine.info.{code}", locale, **params)

    fields: list[tuple[str, str]] = [(t("prompt"), shorten(request.prompt, 1000) or "—")]
    if request.negative_prompt:
        fields.append((t("negative"), shorten(request.negative_prompt, 1000)))
    if request.width is not None and request.height is not None:
        fields.append((t("settings"), key_settings(request, request.width, request.height, locale).split("\n")[0]))
    fields.append((t("seed"), str(request.seed) if request.seed is not None else "—"))
    source = "Brushwork" if recipe.source == "brushwork" else t("source_a1111")
    fields.append((t("source"), f"{source} {recipe.version}" if recipe.version else source))
    if request.model is None:
        fields.append((t("model_here"), t("model_unnamed", models=", ".join(recipe.usable_models) or "—")))
    elif not recipe.model_here:
        fields.append((t("model_here"), t("model_missing", model=request.model,
                                          models=", ".join(recipe.usable_models) or "—")))
    if recipe.unreproduced:
        from generation.metadata import describe_unreproduced

        fields.append((t("not_reproduced"), shorten(describe_unreproduced(recipe.unreproduced), 1000)))
    fields.append((t("flags"), f"`{shorten(request.render(), 1000)}`"))
    stem = recipe.filename.rsplit(".", 1)[0][:60] or "image"
    return InfoCard(title=t("file_title", name=shorten(recipe.filename, 200)), fields=tuple(fields),
                    infotext=recipe.infotext, python=python_snippet(request, stem))


# ---------------------------------------------------------------------- throttling

T = TypeVar("T")


#: Seconds before a failed edit is tried again (doubling while it keeps failing, up to the cap).
EDIT_RETRY_S = 2.0
EDIT_RETRY_MAX_S = 30.0


class ThrottledEditor(Generic[T]):
    """Applies the newest submitted state, at most once per ``interval`` seconds.

    States submitted while an edit is in flight or the interval has not passed replace each
    other: only the newest is applied (``wait_first``: the interval also runs from the start).
    A failing edit is logged, never raised (a status line is not worth a job), and tried again
    later unless a newer state replaces it meanwhile (that one goes at the usual interval): the
    same state after ``EDIT_RETRY_S`` seconds, doubling while it keeps failing (429s and 5xx pass).  :meth:`close` stops it, applying a
    pending state if asked.
    """

    def __init__(self, apply: Callable[[T], Awaitable[None]], interval: float, *,
                 clock: Callable[[], float] = time.monotonic, wait_first: bool = False) -> None:
        self._apply = apply
        self.interval = interval
        self._clock = clock
        self._pending: T | None = None
        self._has_pending = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # wait_first: the message was just written (the acknowledgement): the first edit waits too.
        self._next = clock() + interval if wait_first else float("-inf")
        self._failures = 0  # consecutive failed edits
        self._retry_at: float | None = None  # the pending state is a failed one, tried again then
        self.applied = 0

    def submit(self, state: T) -> None:
        self._pending, self._has_pending, self._retry_at = state, True, None
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="brushwork-status-editor")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._has_pending:
                wait = (self._next if self._retry_at is None else self._retry_at) - self._clock()
                if wait > 0:  # a newer state may end a retry's wait: woken, the wait is worked out again
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    self._wake.clear()
                    continue
                state, self._pending, self._has_pending = self._pending, None, False
                self._retry_at = None
                if not await self._apply_one(state) and not self._has_pending:  # nothing newer came meanwhile
                    delay = min(EDIT_RETRY_MAX_S, EDIT_RETRY_S * 2 ** (self._failures - 1))
                    self._pending, self._has_pending = state, True
                    self._retry_at = self._clock() + delay
                    log.info("the status edit is tried again in %.0f s", delay)

    async def _apply_one(self, state: T | None) -> bool:
        now = self._clock()
        try:
            await self._apply(state)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            raise
        except Exception:
            self._failures += 1
            self._next = now + self.interval
            log.warning("a status edit failed (%d in a row)", self._failures, exc_info=True)
            return False
        self._failures = 0
        self._next = now + self.interval
        self.applied += 1
        return True

    async def close(self, *, flush: bool = False) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if flush and self._has_pending:
            state, self._pending, self._has_pending = self._pending, None, False
            await self._apply_one(state)


__all__ = [
    "InfoCard", "NUMBER_EMOJI", "ReplyRef", "Status", "ThrottledEditor", "ack_text", "duration", "headline",
    "info_card", "key_settings", "progress_bar", "python_snippet", "results_text", "status_for", "status_text",
]
