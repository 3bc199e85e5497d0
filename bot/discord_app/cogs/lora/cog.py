"""The ``/lora`` commands (see the package's docstring): each reads who asks and calls ONE service method."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.attachments import fit_image
from bot.discord_app.cogs.lora.follower import REF_VERSION, TrainingFollower
from bot.discord_app.cogs.lora.texts import (
    CHOICES,
    MAX_CONTENT,
    AddOutcome,
    TrainingHead,
    add_text,
    choices,
    clip,
    code,
    dataset_list_embed,
    find_image,
    info_embed,
    list_embed,
    plain,
    sheet_embed,
    size_text,
    status_label,
    usage_hint,
)
from bot.discord_app.cogs.lora.views import (
    CAPTION_INPUT_ID,
    CAPTION_MODAL,
    MAX_CAPTION,
    CancelTrainingButton,
    CaptionButton,
    CaptionModal,
    ConfirmDeleteButton,
    KeepButton,
    cancel_view,
    caption_view,
    confirm_view,
)
from bot.discord_app.components import modal_values
from bot.discord_app.context import (
    Caller,
    caller,
    missing_permissions,
    missing_permissions_text,
    report_error,
    send,
)
from bot.discord_app.follow import NO_MENTIONS, FollowerTasks
from bot.discord_app.translator import text
from bot.lora_services import (
    Refusal,
    ServerLoraError,
    TrainOptions,
    Upload,
    UploadRefused,
    before_after_png,
    may_manage,
)
from bot.preferences import check_manage_guild
from generation.errors import BrushworkError
from storage.records import LoraStatus

if TYPE_CHECKING:
    from bot.discord_app.client import BrushworkBot
    from bot.lora_services import DatasetService, LoraService
    from storage.records import DatasetImageRecord, DatasetRecord, LoraRecord


log = logging.getLogger("brushwork.discord.lora")

# ---------------------------------------------------------------------- who may do what


def member_role_ids(interaction: discord.Interaction) -> tuple[int, ...]:
    """The member's role ids, from the interaction itself (its member object carries them)."""
    user = interaction.user
    if not isinstance(user, discord.Member):
        return ()
    ids = {role.id for role in user.roles}
    ids.update(int(role_id) for role_id in getattr(user, "_roles", ()))  # roles not in the cache yet
    return tuple(sorted(ids))


async def can_manage(interaction: discord.Interaction, who: Caller) -> bool:
    """Manage Server (``interaction.permissions``) or the server's trainer role, read now."""
    loras: LoraService = interaction.client.container.loras  # type: ignore[attr-defined]
    return await asyncio.to_thread(loras.may_manage, who.guild_id, manage_guild=who.manage_guild,
                                   role_ids=member_role_ids(interaction))
# ---------------------------------------------------------------------- the cog


class Lora(commands.Cog):
    lora = app_commands.Group(name="lora", description=text("Train and use this server's own LoRA styles",
                                                            "lora_cmd.cmd"))
    dataset = app_commands.Group(name="dataset", parent=lora,
                                 description=text("Training images: create, add, show, caption, remove",
                                                  "lora_cmd.cmd.dataset"))

    def __init__(self, bot: BrushworkBot) -> None:
        self.bot = bot
        self.trainings = FollowerTasks("train")

    @property
    def datasets(self) -> DatasetService:
        return self.bot.container.datasets

    @property
    def loras(self) -> LoraService:
        return self.bot.container.loras

    async def cog_load(self) -> None:
        if getattr(self.bot, "resume_jobs", True):
            await self.resume()

    async def cog_unload(self) -> None:
        await self.trainings.close()

    # ================================================================== datasets
    @dataset.command(name="create", description=text("Create an empty dataset", "lora_cmd.cmd.dataset.create"))
    @app_commands.describe(name=text("Its name: letters, digits, . _ -", "lora_cmd.cmd.new_name"))
    async def dataset_create(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64]) -> None:
        who = caller(interaction)
        record = await asyncio.to_thread(self.datasets.create, who.scope, name)
        await send(interaction, who.t("lora_cmd.dataset.created", name=record.name))

    @dataset.command(name="list", description=text("This server's datasets", "lora_cmd.cmd.dataset.list"))
    async def dataset_list(self, interaction: discord.Interaction) -> None:
        who = caller(interaction)
        records = await asyncio.to_thread(self.datasets.list, who.scope)
        await send(interaction, embed=dataset_list_embed(who, records), allowed_mentions=NO_MENTIONS)

    @dataset.command(name="add", description=text("Add images, or a zip of images with .txt captions",
                                                  "lora_cmd.cmd.dataset.add"))
    @app_commands.describe(
        name=text("The dataset", "lora_cmd.cmd.dataset_name"),
        images=text("A PNG, JPEG or WebP image, or a zip", "lora_cmd.cmd.dataset.add.images"),
        image2=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image3=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image4=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image5=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image6=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image7=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image8=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image9=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        image10=text("Another image or zip", "lora_cmd.cmd.dataset.add.more"),
        caption=text("Caption for images that bring none", "lora_cmd.cmd.dataset.add.caption"),
    )
    async def dataset_add(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 64],
        images: discord.Attachment,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        image6: discord.Attachment | None = None,
        image7: discord.Attachment | None = None,
        image8: discord.Attachment | None = None,
        image9: discord.Attachment | None = None,
        image10: discord.Attachment | None = None,
        caption: app_commands.Range[str, 1, MAX_CAPTION] | None = None,
    ) -> None:
        who = caller(interaction)
        files = [a for a in (images, image2, image3, image4, image5, image6, image7, image8, image9, image10)
                 if a is not None]
        # Sizes as Discord announces them, before a byte is downloaded: only the files that pass
        # are fetched; the others are listed with their reasons beside what was added.
        checked = await asyncio.to_thread(self.datasets.check_upload, who.scope, name,
                                          [(a.filename, a.size) for a in files])
        await interaction.response.defer(ephemeral=True, thinking=True)
        wanted = [files[index] for index in checked.accepted]
        contents = await asyncio.gather(*(a.read() for a in wanted))
        uploads = [Upload(a.filename, data) for a, data in zip(wanted, contents, strict=True)]
        outcome = await asyncio.to_thread(self._add, who, name, uploads, caption, checked.refused)
        await interaction.followup.send(add_text(who, name, outcome), ephemeral=True, allowed_mentions=NO_MENTIONS)

    def _add(self, who: Caller, name: str, uploads: list[Upload], caption: str | None,
             before: Sequence[Refusal]) -> AddOutcome:
        outcome = AddOutcome()
        try:
            outcome.take(self.datasets.add_images(who.scope, name, uploads, caption=caption, before=before))
        except UploadRefused as error:  # every file refused: list each one's reason
            outcome.refused.extend(error.refusals)
        return outcome

    @dataset.command(name="show", description=text("The contact sheet: every image numbered, with its caption",
                                                   "lora_cmd.cmd.dataset.show"))
    @app_commands.describe(name=text("The dataset", "lora_cmd.cmd.dataset_name"))
    async def dataset_show(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64]) -> None:
        who = caller(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        sheet = await asyncio.to_thread(self.datasets.show, who.scope, name)
        upload = await asyncio.to_thread(fit_image, f"{sheet.dataset.name}-sheet.png", sheet.png,
                                         interaction.filesize_limit)
        fields: dict[str, Any] = {"embed": sheet_embed(who, sheet, upload.filename),
                                  "file": discord.File(io.BytesIO(upload.data), filename=upload.filename)}
        view = caption_view(sheet)
        if view is not None:
            fields["view"] = view
        await interaction.followup.send(ephemeral=True, allowed_mentions=NO_MENTIONS, **fields)

    @dataset.command(name="caption", description=text("Set one image's caption (no text: a form)",
                                                      "lora_cmd.cmd.dataset.caption"))
    @app_commands.describe(
        name=text("The dataset", "lora_cmd.cmd.dataset_name"),
        image=text("Its number on the contact sheet, or its id", "lora_cmd.cmd.image"),
        text_=text("The new caption; leave it out to edit it in a form", "lora_cmd.cmd.dataset.caption.text"),
    )
    @app_commands.rename(text_="text")
    async def dataset_caption(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64],
                              image: app_commands.Range[str, 1, 40],
                              text_: app_commands.Range[str, 1, MAX_CAPTION] | None = None) -> None:
        who = caller(interaction)
        manage = await can_manage(interaction, who)
        if text_ is None:  # a form must be the first answer: find the image, then open it
            dataset, number, target = await asyncio.to_thread(self._caption_target, who, manage, name, image)
            await interaction.response.send_modal(CaptionModal(who, dataset, number, target))
            return
        answer = await asyncio.to_thread(self._set_caption, who, manage, name, image, text_)
        await send(interaction, answer, allowed_mentions=NO_MENTIONS)

    def _caption_target(self, who: Caller, manage: bool, name: str,
                        ref: str) -> tuple[DatasetRecord, int, DatasetImageRecord]:
        dataset = self.datasets.get(who.scope, name)
        if not (may_manage(who.scope, manage) or dataset.owner_id == who.user_id):
            raise ServerLoraError("server_dataset.not_yours", name=dataset.name)
        images = self.datasets.images(who.scope, dataset.name)
        found = find_image(images, ref)
        if found is None:
            raise ServerLoraError("server_dataset.image_not_found", name=dataset.name, image=ref[:40],
                                  count=len(images))
        return dataset, found[0], found[1]

    def _set_caption(self, who: Caller, manage: bool, name: str, ref: str, caption: str | None) -> str:
        record = self.datasets.set_caption(who.scope, name, ref, caption, can_manage=manage)
        images = self.datasets.images(who.scope, name)
        number = next((i for i, image in enumerate(images, start=1) if image.public_id == record.public_id), "?")
        if record.caption:
            return who.t("lora_cmd.caption.saved", number=number, name=name, caption=plain(record.caption, 1500))
        return who.t("lora_cmd.caption.cleared", number=number, name=name)

    @dataset.command(name="remove", description=text("Take one image out of a dataset", "lora_cmd.cmd.dataset.remove"))
    @app_commands.describe(name=text("The dataset", "lora_cmd.cmd.dataset_name"),
                           image=text("Its number on the contact sheet, or its id", "lora_cmd.cmd.image"))
    async def dataset_remove(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64],
                             image: app_commands.Range[str, 1, 40]) -> None:
        who = caller(interaction)
        manage = await can_manage(interaction, who)
        record = await asyncio.to_thread(self.datasets.remove_image, who.scope, name, image, can_manage=manage)
        await send(interaction, who.t("lora_cmd.dataset.removed", file=code(record.original_name or record.public_id),
                                      id=record.public_id, name=name), allowed_mentions=NO_MENTIONS)

    @dataset.command(name="delete", description=text("Delete a dataset and its images (asks first)",
                                                     "lora_cmd.cmd.dataset.delete"))
    @app_commands.describe(name=text("The dataset", "lora_cmd.cmd.dataset_name"))
    async def dataset_delete(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64]) -> None:
        who = caller(interaction)
        if not await can_manage(interaction, who):
            raise ServerLoraError("server_lora.not_allowed")
        record = await asyncio.to_thread(self.datasets.get, who.scope, name)
        await send(interaction, who.t("lora_cmd.dataset.confirm_delete", name=record.name, count=record.image_count),
                   view=confirm_view(who, "d", record.public_id))

    # ================================================================== training
    @lora.command(name="train", description=text("Train a LoRA on a dataset (a long job on the shared queue)",
                                                 "lora_cmd.cmd.train"))
    @app_commands.describe(
        name=text("The LoRA's name, used as --lora NAME", "lora_cmd.cmd.train.name"),
        dataset=text("The dataset to train on", "lora_cmd.cmd.train.dataset"),
        trigger_word=text("A word put before every caption, e.g. inkwash", "lora_cmd.cmd.train.trigger_word"),
        steps=text("Training steps (default: the device's)", "lora_cmd.cmd.train.steps"),
        rank=text("LoRA rank: its size, 4-32 is usual", "lora_cmd.cmd.train.rank"),
        learning_rate=text("Learning rate, e.g. 0.0001", "lora_cmd.cmd.train.learning_rate"),
        resolution=text("Training size in pixels, a multiple of 64", "lora_cmd.cmd.train.resolution"),
        base_model=text("The model it is trained for", "lora_cmd.cmd.base_model"),
    )
    async def train(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 64],
        dataset: app_commands.Range[str, 1, 64],
        trigger_word: app_commands.Range[str, 1, 64] | None = None,
        steps: app_commands.Range[int, 1, 100_000] | None = None,
        rank: app_commands.Range[int, 1, 128] | None = None,
        learning_rate: float | None = None,
        resolution: app_commands.Range[int, 64, 2048] | None = None,
        base_model: app_commands.Range[str, 1, 64] | None = None,
    ) -> None:
        who = caller(interaction)
        if not who.in_dm:  # its announcement may have to be posted in the channel
            missing = missing_permissions(interaction.app_permissions, interaction.channel)
            if missing:
                await send(interaction, missing_permissions_text(missing, who.channel_id, who.locale))
                return
        manage = await can_manage(interaction, who)
        if not may_manage(who.scope, manage):
            raise ServerLoraError("server_lora.not_allowed")
        options = TrainOptions(name=name, dataset=dataset, trigger_word=trigger_word, steps=steps, rank=rank,
                               learning_rate=learning_rate, resolution=resolution, model=base_model)
        # The refusals that only read come first, privately (a public "thinking…" can only turn
        # into a public answer); snapshotting and queueing may take longer than Discord's 3 s,
        # so the public acknowledgement (it becomes the training's message) comes before them.
        await asyncio.to_thread(self.loras.check_training, who.scope, options, can_manage=manage)
        response = await interaction.response.defer(thinking=True)
        message_id = getattr(response, "message_id", None)
        if message_id is None:
            with contextlib.suppress(discord.HTTPException):
                message_id = (await interaction.original_response()).id
        ref = {"v": REF_VERSION, "user": who.user_id, "guild": who.guild_id, "channel": who.channel_id,
               "locale": who.locale, "via": "interaction", "app": interaction.application_id,
               "token": interaction.token, "message": message_id, "created": interaction.created_at.timestamp(),
               "limit": interaction.filesize_limit}
        try:
            started = await asyncio.to_thread(self.loras.train, who.scope, options, can_manage=manage,
                                              channel_id=who.channel_id, reply_ref=ref)
        except Exception as error:  # noqa: BLE001 - a late refusal (the dataset changed meanwhile, the
            await report_error(interaction, error)  # queue filled up) replaces the public "thinking…"
            return
        head = TrainingHead.of_started(started)
        self.follow(started.job_id, ref, head, fresh=True)  # first: the job is queued whatever happens below
        try:
            await interaction.edit_original_response(
                content=clip(f"{head.text(who.locale, who.user_id)}\n{who.t('lora_cmd.train.submitted')}", MAX_CONTENT),
                view=cancel_view(head.lora_id, who.locale), allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as error:  # an expired token: the follower edits through the channel
            log.info("could not edit the acknowledgement of training job %s: %s", started.job_id, error)

    def follow(self, job_id: str, ref: dict[str, Any], head: TrainingHead, *, fresh: bool = False) -> asyncio.Task[None]:
        return self.trainings.start(TrainingFollower(self.bot, job_id, ref, head, fresh=fresh))

    async def resume(self) -> int:
        """Follow again the trainings whose answer is owed (waiting, running, or finished while the bot was down)."""
        container = self.bot.container

        def unfinished() -> list[tuple[str, dict[str, Any], TrainingHead]]:
            found = []
            for record in container.chat.owed_jobs(REF_VERSION):
                ref = record.reply_ref
                payload = (record.request or {}).get("training")
                if not payload or ref is None:  # owed jobs have a reply ref; the check is for the type checker
                    continue
                try:
                    found.append((record.public_id, dict(ref), TrainingHead.of_payload(payload)))
                except (KeyError, TypeError, ValueError):
                    log.warning("training job %s has an unreadable payload; not following it", record.public_id)
            return found

        jobs = await asyncio.to_thread(unfinished)
        for job_id, ref, head in jobs:
            self.follow(job_id, ref, head)
        if jobs:
            log.info("following %d unfinished training(s) again", len(jobs))
        return len(jobs)

    async def wait_followers(self, timeout: float | None = None) -> None:
        """Until every followed training's answer is written (tests)."""
        await self.trainings.wait(timeout)

    @lora.command(name="cancel", description=text("Stop a training", "lora_cmd.cmd.cancel"))
    @app_commands.describe(name=text("The LoRA being trained", "lora_cmd.cmd.lora_name"))
    async def cancel(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64]) -> None:
        who = caller(interaction)
        manage = await can_manage(interaction, who)
        record = await asyncio.to_thread(self.loras.cancel, who.scope, name, can_manage=manage)
        await send(interaction, who.t("lora_cmd.cancelled", name=record.name))

    async def cancel_clicked(self, interaction: discord.Interaction, lora_id: str) -> None:
        who = caller(interaction)
        try:
            manage = await can_manage(interaction, who)

            def cancel() -> LoraRecord | None:
                record = self._lora_by_id(who, lora_id)
                return None if record is None else self.loras.cancel(who.scope, record.name, can_manage=manage)

            record = await asyncio.to_thread(cancel)
            if record is None:
                await send(interaction, who.t("lora_cmd.stale"))
            else:
                await send(interaction, who.t("lora_cmd.cancelled", name=record.name))
        except Exception as error:  # noqa: BLE001 - a refusal (not yours, not training) or a fault: answered
            await report_error(interaction, error)

    def _lora_by_id(self, who: Caller, lora_id: str) -> LoraRecord | None:
        """A LoRA of the CLICKING member's namespace, by its public id (another server's is not there)."""
        return next((r for r in self.loras.list(who.scope) if r.public_id == lora_id), None)

    def _dataset_by_id(self, who: Caller, dataset_id: str) -> DatasetRecord | None:
        return next((d for d in self.datasets.list(who.scope) if d.public_id == dataset_id), None)

    # ================================================================== looking
    @lora.command(name="list", description=text("This server's LoRAs", "lora_cmd.cmd.list"))
    async def list_(self, interaction: discord.Interaction) -> None:
        who = caller(interaction)

        def read() -> tuple[list[LoraRecord], list[str]]:
            records = self.loras.list(who.scope)
            own = {r.name.casefold() for r in records}
            folder = [n for n in self.loras.names(who.scope, limit=100) if n.casefold() not in own]
            return records, folder

        records, folder = await asyncio.to_thread(read)
        await send(interaction, embed=list_embed(who, records, folder))

    @lora.command(name="info", description=text("A LoRA's settings, progress and before/after samples",
                                                "lora_cmd.cmd.info"))
    @app_commands.describe(name=text("The LoRA", "lora_cmd.cmd.lora_name"))
    async def info(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64]) -> None:
        who = caller(interaction)
        details = await asyncio.to_thread(self.loras.info, who.scope, name)
        fields: dict[str, Any] = {}
        image_name = None
        if details.before is not None and details.after is not None:
            labels = (who.t("lora_cmd.before"), who.t("lora_cmd.after"))
            with contextlib.suppress(OSError, ValueError):
                data = await asyncio.to_thread(before_after_png, details.before, details.after, labels=labels)
                upload = await asyncio.to_thread(fit_image, f"{details.lora.name}-before-after.png", data,
                                                 interaction.filesize_limit)
                image_name = upload.filename
                fields["file"] = discord.File(io.BytesIO(upload.data), filename=upload.filename)
        await send(interaction, embed=info_embed(who, details, image_name), **fields)

    # ================================================================== deleting
    @lora.command(name="delete", description=text("Delete a LoRA of this server (asks first)", "lora_cmd.cmd.delete"))
    @app_commands.describe(name=text("The LoRA", "lora_cmd.cmd.lora_name"))
    async def delete(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64]) -> None:
        who = caller(interaction)
        if not may_manage(who.scope, await can_manage(interaction, who)):
            raise ServerLoraError("server_lora.not_allowed")
        record = await asyncio.to_thread(self.loras.get, who.scope, name)
        await send(interaction, who.t("lora_cmd.confirm_delete", name=record.name,
                                      status=status_label(who, record.status)),
                   view=confirm_view(who, "l", record.public_id))

    async def delete_confirmed(self, interaction: discord.Interaction, kind: str, ref: str, user_id: int) -> None:
        who = caller(interaction)
        if who.user_id != user_id:
            await send(interaction, who.t("lora_cmd.not_your_button"))
            return
        try:
            manage = await can_manage(interaction, who)

            def delete() -> str | None:
                if kind == "l":
                    lora = self._lora_by_id(who, ref)
                    if lora is None:
                        return None
                    self.loras.delete(who.scope, lora.name, can_manage=manage)
                    return who.t("lora_cmd.deleted", name=lora.name)
                dataset = self._dataset_by_id(who, ref)
                if dataset is None:
                    return None
                deleted = self.datasets.delete(who.scope, dataset.name, can_manage=manage)
                return who.t("lora_cmd.dataset.deleted", name=deleted.name, count=deleted.image_count)

            answer = await asyncio.to_thread(delete)
            await interaction.response.edit_message(content=answer or who.t("lora_cmd.stale"), view=None)
        except Exception as error:  # noqa: BLE001 - a refusal (rights) or a fault: answered
            await report_error(interaction, error)

    # ================================================================== files
    @lora.command(name="export", description=text("Download a LoRA's .safetensors file", "lora_cmd.cmd.export"))
    @app_commands.describe(name=text("The LoRA", "lora_cmd.cmd.lora_name"),
                           kohya=text("kohya key names, for AUTOMATIC1111 and ComfyUI", "lora_cmd.cmd.export.kohya"))
    async def export(self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 64],
                     kohya: bool = False) -> None:
        who = caller(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        export = await asyncio.to_thread(self.loras.export, who.scope, name, kohya=kohya)
        limit = interaction.filesize_limit
        if export.size > limit:
            await interaction.followup.send(who.t("lora_cmd.export.too_large", filename=export.filename,
                                                  size=size_text(export.size), limit=size_text(limit), name=name),
                                            ephemeral=True)
            return
        await interaction.followup.send(
            who.t("lora_cmd.export.done", filename=export.filename, size=size_text(export.size),
                  format=who.t("lora_cmd.export.kohya" if export.format == "kohya"
                               else "lora_cmd.export.diffusers")),
            file=discord.File(export.path, filename=export.filename), ephemeral=True)

    @lora.command(name="import", description=text("Add an existing .safetensors LoRA", "lora_cmd.cmd.import"))
    @app_commands.describe(
        file=text("The LoRA's .safetensors file (pickles are refused)", "lora_cmd.cmd.import.file"),
        name=text("Its name here (default: the file's)", "lora_cmd.cmd.import.name"),
        base_model=text("The model it is trained for", "lora_cmd.cmd.base_model"),
    )
    async def import_(self, interaction: discord.Interaction, file: discord.Attachment,
                      name: app_commands.Range[str, 1, 64] | None = None,
                      base_model: app_commands.Range[str, 1, 64] | None = None) -> None:
        who = caller(interaction)
        manage = await can_manage(interaction, who)
        if not may_manage(who.scope, manage):
            raise ServerLoraError("server_lora.not_allowed")
        # The name and the announced size, before a byte is downloaded.
        await asyncio.to_thread(self.loras.check_import_size, file.filename, file.size)
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await file.read()
        record = await asyncio.to_thread(self.loras.import_lora, who.scope, file.filename, data, name=name,
                                         model=base_model, can_manage=manage)
        await interaction.followup.send(
            "\n".join([who.t("lora_cmd.imported", name=record.name, rank=record.rank, model=record.base_model,
                             hash=record.short_hash or "—"), usage_hint(who, record)]), ephemeral=True)

    # ================================================================== the server's settings
    @lora.command(name="config", description=text("Manage Server: who may train, and folder LoRAs",
                                                  "lora_cmd.cmd.config"))
    @app_commands.describe(
        trainer_role=text("Members with this role may train, import and delete", "lora_cmd.cmd.config.trainer_role"),
        no_trainer_role=text("Remove the trainer role (Manage Server only)", "lora_cmd.cmd.config.no_trainer_role"),
        folder_loras=text("Allow the bot's own LoRA files here", "lora_cmd.cmd.config.folder_loras"),
    )
    async def config(self, interaction: discord.Interaction, trainer_role: discord.Role | None = None,
                     no_trainer_role: bool = False, folder_loras: bool | None = None) -> None:
        who = caller(interaction)
        guild = check_manage_guild(who.manage_guild, who.guild_id)  # checked on every call
        loras, preferences = self.loras, self.bot.container.preferences

        def save() -> str:
            if no_trainer_role:
                loras.set_trainer_role(guild, None)
            elif trainer_role is not None:
                loras.set_trainer_role(guild, trainer_role.id)
            if folder_loras is not None:
                loras.set_folder_loras(guild, folder_loras)
            record = preferences.guild_settings(guild)
            changed = no_trainer_role or trainer_role is not None or folder_loras is not None
            role = who.t("lora_cmd.config.role", role=f"<@&{record.trainer_role_id}>") if record.trainer_role_id \
                else who.t("lora_cmd.config.no_role")
            folder = who.t("lora_cmd.config.folder_on" if record.folder_loras else "lora_cmd.config.folder_off")
            heading = who.t("lora_cmd.config.saved" if changed else "lora_cmd.config.title")
            return "\n".join([heading, role, folder])

        await send(interaction, await asyncio.to_thread(save), allowed_mentions=NO_MENTIONS)

    # ================================================================== buttons and the form
    async def caption_clicked(self, interaction: discord.Interaction, dataset_id: str, image_id: str) -> None:
        who = caller(interaction)
        try:
            manage = await can_manage(interaction, who)

            def target() -> tuple[DatasetRecord, int, DatasetImageRecord] | None:
                dataset = self._dataset_by_id(who, dataset_id)
                if dataset is None:
                    return None
                return self._caption_target(who, manage, dataset.name, image_id)

            found = await asyncio.to_thread(target)
            if found is None:
                await send(interaction, who.t("lora_cmd.stale"))
                return
            await interaction.response.send_modal(CaptionModal(who, *found))
        except Exception as error:  # noqa: BLE001 - not yours, image gone, or a fault: answered
            await report_error(interaction, error)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        match = CAPTION_MODAL.fullmatch(str((interaction.data or {}).get("custom_id", "")))
        if match is None:
            return
        who = caller(interaction)
        try:
            manage = await can_manage(interaction, who)
            caption = modal_values(interaction.data).get(CAPTION_INPUT_ID, "").strip() or None

            def save() -> str | None:
                dataset = self._dataset_by_id(who, match["dataset"])
                if dataset is None:
                    return None
                return self._set_caption(who, manage, dataset.name, match["image"], caption)

            answer = await asyncio.to_thread(save)
            await send(interaction, answer or who.t("lora_cmd.stale"), allowed_mentions=NO_MENTIONS)
        except Exception as error:  # noqa: BLE001 - answered, never "interaction failed"
            await report_error(interaction, error)

    # ================================================================== autocomplete
    async def _dataset_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        who = caller(interaction)
        try:
            records = await asyncio.to_thread(self.datasets.list, who.scope)
        except BrushworkError:
            return []
        return choices([r.name for r in records], current)

    async def _lora_names(self, interaction: discord.Interaction, current: str,
                          statuses: tuple[LoraStatus, ...] | None = None) -> list[app_commands.Choice[str]]:
        """This namespace's own LoRAs (what can be inspected, exported, cancelled or deleted here)."""
        who = caller(interaction)
        records = await asyncio.to_thread(self.loras.list, who.scope)
        return choices([r.name for r in records if statuses is None or r.status in statuses], current)

    async def _image_refs(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """``#3 · cat.png — a cat on a roof`` for the dataset named in the same command."""
        who = caller(interaction)
        name = str(getattr(interaction.namespace, "name", "") or "")
        try:
            images = await asyncio.to_thread(self.datasets.images, who.scope, name)
        except BrushworkError:
            return []
        typed = (current or "").strip().lstrip("#").casefold()
        out = []
        for number, image in enumerate(images, start=1):
            label = f"#{number} · {image.original_name} — {image.caption or ''}".strip(" —")
            if not typed or str(number).startswith(typed) or typed in label.casefold():
                out.append(app_commands.Choice(name=label[:100], value=str(number)))
        return out[:CHOICES]

    async def _model_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return choices(self.bot.container.registry.names(), current)

    @dataset_add.autocomplete("name")
    async def _add_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._dataset_names(interaction, current)

    @dataset_show.autocomplete("name")
    async def _show_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._dataset_names(interaction, current)

    @dataset_caption.autocomplete("name")
    async def _caption_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._dataset_names(interaction, current)

    @dataset_caption.autocomplete("image")
    async def _caption_image(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._image_refs(interaction, current)

    @dataset_remove.autocomplete("name")
    async def _remove_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._dataset_names(interaction, current)

    @dataset_remove.autocomplete("image")
    async def _remove_image(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._image_refs(interaction, current)

    @dataset_delete.autocomplete("name")
    async def _delete_dataset_name(self, interaction: discord.Interaction,
                                   current: str) -> list[app_commands.Choice[str]]:
        return await self._dataset_names(interaction, current)

    @train.autocomplete("dataset")
    async def _train_dataset(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._dataset_names(interaction, current)

    @train.autocomplete("base_model")
    async def _train_model(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._model_names(interaction, current)

    @import_.autocomplete("base_model")
    async def _import_model(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._model_names(interaction, current)

    @cancel.autocomplete("name")
    async def _cancel_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._lora_names(interaction, current, (LoraStatus.TRAINING,))

    @info.autocomplete("name")
    async def _info_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._lora_names(interaction, current)

    @delete.autocomplete("name")
    async def _delete_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._lora_names(interaction, current)

    @export.autocomplete("name")
    async def _export_name(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._lora_names(interaction, current, (LoraStatus.READY,))


async def setup(bot: BrushworkBot) -> None:
    bot.add_dynamic_items(CancelTrainingButton, ConfirmDeleteButton, KeepButton, CaptionButton)
    await bot.add_cog(Lora(bot))
