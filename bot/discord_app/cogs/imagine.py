"""``/imagine``, ``/tweak``, ``/info`` and the message menus "Remix" and "Show settings".

Thin by design: read the options, hand ONE service call to :class:`~bot.discord_app.actions.Actions`
(which acknowledges, queues and follows), answer.  Command and option descriptions are shown
in the user's Discord language (``bot/locales/*/imagine.json``, keys ``cmd.*``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.chat import MAX_CHOICES, ImagineOptions, choices
from bot.discord_app.components import REMIX_MODAL
from bot.discord_app.context import caller
from bot.discord_app.translator import text
from generation.errors import BrushworkError

if TYPE_CHECKING:
    from bot.discord_app.client import BrushworkBot

#: Aspect ratios offered while typing ``aspect`` (any W:H from 1:4 to 4:1 is accepted).
ASPECTS = ("1:1", "4:5", "5:4", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "1:2", "2:1", "21:9")
MAX_SEED = 2**32 - 1


def _choices(names: list[str]) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=name[:100], value=name[:100]) for name in names[:MAX_CHOICES]]


class Imagine(commands.Cog):
    def __init__(self, bot: BrushworkBot) -> None:
        self.bot = bot
        self.remix_menu = app_commands.ContextMenu(name=text("Remix", "cmd.menu.remix"), callback=self.remix_message)
        self.settings_menu = app_commands.ContextMenu(name=text("Show settings", "cmd.menu.settings"),
                                                      callback=self.settings_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.remix_menu)
        self.bot.tree.add_command(self.settings_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.remix_menu.name, type=self.remix_menu.type)
        self.bot.tree.remove_command(self.settings_menu.name, type=self.settings_menu.type)

    # ------------------------------------------------------------------ /imagine
    @app_commands.command(name="imagine", description=text("Make images from a prompt with inline flags",
                                                           "cmd.imagine"))
    @app_commands.describe(
        prompt=text("What to draw, with flags if you like: a cat --ar 3:2 --seed 42 --no blurry",
                    "cmd.imagine.prompt"),
        negative=text("What to keep out of the image (like --no)", "cmd.imagine.negative"),
        seed=text("Starting noise: same seed and settings give the same image", "cmd.imagine.seed"),
        steps=text("Denoising steps, 1-150 (20-30 is the sweet spot)", "cmd.imagine.steps"),
        cfg=text("CFG scale, 1-30: how closely to follow the prompt (5-8 is natural)", "cmd.imagine.cfg"),
        sampler=text("Sampler, e.g. DPM++ 2M Karras or Euler a", "cmd.imagine.sampler"),
        aspect=text("Aspect ratio W:H, e.g. 3:2 (from 1:4 to 4:1)", "cmd.imagine.aspect"),
        model=text("Model to draw with (those this server allows)", "cmd.imagine.model"),
        lora=text("LoRA styles, name:weight, separated by commas", "cmd.imagine.lora"),
        n=text("Number of images, 1-4", "cmd.imagine.n"),
        hires=text("Hires fix: upscale by this factor and refine, 1.05-4", "cmd.imagine.hires"),
        image=text("Start from one of your images (id or result link); --strength sets how much changes",
                   "cmd.imagine.image"),
        picture=text("Or start from a picture you upload (PNG, JPEG, WebP); --strength sets how much changes",
                     "cmd.imagine.picture"),
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        negative: app_commands.Range[str, 1, 2000] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, 150] | None = None,
        cfg: app_commands.Range[float, 1.0, 30.0] | None = None,
        sampler: app_commands.Range[str, 1, 100] | None = None,
        aspect: app_commands.Range[str, 1, 20] | None = None,
        model: app_commands.Range[str, 1, 64] | None = None,
        lora: app_commands.Range[str, 1, 300] | None = None,
        n: app_commands.Range[int, 1, 4] | None = None,
        hires: app_commands.Range[float, 1.05, 4.0] | None = None,
        image: app_commands.Range[str, 1, 200] | None = None,
        picture: discord.Attachment | None = None,
    ) -> None:
        options = ImagineOptions(negative=negative, seed=seed, steps=steps, cfg=cfg, sampler=sampler, aspect=aspect,
                                 model=model, lora=lora, n=n, hires=hires, image=image)
        chat = self.bot.container.chat
        if picture is None:
            await self.bot.actions.start(interaction, lambda origin: chat.prepare_imagine(origin, prompt, options))
            return
        if image is not None:
            raise BrushworkError("bot.image_and_picture")
        await self.bot.actions.start_from_picture(
            interaction, picture,
            lambda origin, upload: chat.prepare_imagine(origin, prompt, replace(options, image=upload.public_id),
                                                        picture=upload))

    @imagine.autocomplete("sampler")
    async def _samplers(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return _choices(choices(self.bot.container.chat.sampler_names(), current))

    @imagine.autocomplete("aspect")
    async def _aspects(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return _choices(choices(list(ASPECTS), current))

    @imagine.autocomplete("model")
    async def _models(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        origin = caller(interaction).origin
        names = await asyncio.to_thread(self.bot.container.chat.model_names, origin)
        return _choices(choices(names, current))

    @imagine.autocomplete("lora")
    async def _loras(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Completes the last item of a list (``ink:0.8, wat`` → ``ink:0.8, watercolor``)."""
        origin = caller(interaction).origin
        names = await asyncio.to_thread(self.bot.container.chat.lora_names, origin)
        head, _, last = (current or "").rpartition(",")
        prefix = f"{head.strip()}, " if head.strip() else ""
        typed = last.strip().split(":", 1)[0]
        return _choices([f"{prefix}{name}" for name in choices(names, typed)])

    @imagine.autocomplete("image")
    async def _images(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._image_choices(interaction, current)

    async def _image_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Your recent images here (``id · prompt``); typing filters by id or prompt; a link passes."""
        choices_ = await asyncio.to_thread(self.bot.container.chat.image_choices, caller(interaction).origin, current)
        return [app_commands.Choice(name=label, value=value) for label, value in choices_]

    # ------------------------------------------------------------------ /tweak and /info
    @app_commands.command(name="tweak", description=text("Same seed and settings, with a new prompt and/or flags",
                                                         "cmd.tweak"))
    @app_commands.describe(
        image=text("Image id (e.g. k3x9fq2a) or a link to a result message", "cmd.tweak.image"),
        prompt=text("The new prompt and/or flags, e.g. a red cat --cfg 5, or just --steps 40", "cmd.tweak.prompt"),
    )
    async def tweak(self, interaction: discord.Interaction, image: app_commands.Range[str, 1, 200],
                    prompt: app_commands.Range[str, 1, 4000]) -> None:
        chat = self.bot.container.chat
        await self.bot.actions.start(interaction, lambda origin: chat.prepare_tweak(origin, image, prompt))

    @tweak.autocomplete("image")
    async def _tweak_images(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._image_choices(interaction, current)

    @app_commands.command(name="info", description=text("An image's settings, A1111 infotext and Python code",
                                                        "cmd.info"))
    @app_commands.describe(image=text("Image id (e.g. k3x9fq2a) or a link to a result message", "cmd.info.image"),
                           file=text("Or an image file (PNG, JPEG, WebP) whose recipe to read", "cmd.info.file"))
    async def info(self, interaction: discord.Interaction, image: app_commands.Range[str, 1, 200] | None = None,
                   file: discord.Attachment | None = None) -> None:
        if (image is None) == (file is None):
            raise BrushworkError("bot.info_needs_one")
        if file is not None:
            await self.bot.actions.show_file_info(interaction, file)
        else:
            await self.bot.actions.show_info(interaction, image_ref=image)

    @info.autocomplete("image")
    async def _info_images(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self._image_choices(interaction, current)

    # ------------------------------------------------------------------ message menus
    async def remix_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await self.bot.actions.open_remix(interaction, message_id=message.id)

    async def settings_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await self.bot.actions.show_info(interaction, message_id=message.id)

    # ------------------------------------------------------------------ the Remix modal (restart-proof)
    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        match = REMIX_MODAL.fullmatch(str((interaction.data or {}).get("custom_id", "")))
        if match is not None:
            await self.bot.actions.remix_submitted(interaction, match["image"])


async def setup(bot: BrushworkBot) -> None:
    await bot.add_cog(Imagine(bot))
