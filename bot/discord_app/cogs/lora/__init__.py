"""``/lora …``: a server's own LoRA styles — datasets, training with live progress, use, files.

Thin by design: every command reads who asks (:func:`~bot.discord_app.context.caller`, plus the
member's roles for the trainer role), calls ONE method of :class:`~bot.lora_services.DatasetService`
or :class:`~bot.lora_services.LoraService` in a thread, and answers in the user's language
(``bot/locales/*/lora_cmd.json``).  Mistakes and refusals are the services' localized errors,
answered ephemerally by the tree's error handler.

==================================  =========================================================
command                             does
==================================  =========================================================
``dataset create|list``             a new, empty dataset / this server's datasets
``dataset add name images …``       up to 10 attachments (images, or zips with same-named
                                    ``.txt`` captions): announced sizes are checked BEFORE
                                    anything is downloaded; what is refused is listed with why
``dataset show``                    the numbered contact sheet and the captions, ✏️ buttons
``dataset caption|remove``          one image's caption (a form when no text is given) / out
``dataset delete``                  after a confirmation (Manage Server or the trainer role)
``train``                           a long job on the shared queue: a public message edited
                                    with step, loss, ETA and the newest sample image, a cancel
                                    button, then the LoRA announced with a before/after pair
``cancel|list|info|delete``         the server's LoRAs (delete asks for a confirmation)
``export``                          the ``.safetensors`` as an attachment (``kohya`` keys too)
``import``                          a ``.safetensors`` attachment, checked (size before the
                                    download, pickles refused, keys and shapes)
``config``                          Manage Server: the trainer role, folder LoRAs on/off
==================================  =========================================================

**Rights** are read on every call: ``interaction.permissions`` (Manage Server) and the member's
roles, turned into ``can_manage`` by :meth:`LoraService.may_manage`; hiding a command is only
Discord's default, so nothing relies on it.

**Buttons** are ``DynamicItem``s with short versioned ids (``bwl1:…``, see the table below),
so they work on messages sent before a restart.  The ids are visible to clients: a click
re-reads the clicking member's server, user and rights, and the target is looked up again in
that server's own namespace by its public id (another server's id is simply not there).

==============================  ==============================================================
``bwl1:c:<lora>``               ✖ cancel a training (its starter, or a manager)
``bwl1:dl:<lora>:<user>``       confirm deleting a LoRA (only the member who asked; rights)
``bwl1:dd:<dataset>:<user>``    confirm deleting a dataset
``bwl1:k:<user>``               keep (dismiss a confirmation)
``bwl1:e:<dataset>:<image>``    ✏️ edit a caption: opens the caption form
``bwl1:m:<dataset>:<image>``    the caption form's submission (an ``on_interaction``
                                listener: forms cannot be templates, and this one must work
                                after a restart too)
==============================  ==============================================================

**A training's message** is followed like an ``/imagine`` job (:class:`.follower.TrainingFollower`): the
job's reply reference (``v`` ``lora1``: the interaction webhook, message and token, user,
channel, language) is stored with the job, so a training still waiting or running when the bot
stops is followed again at the next start; edits go through the delivery helpers
(:class:`~bot.discord_app.follow.Outbox`: the webhook while the token lives, then the channel),
throttled (:class:`~bot.discord_app.delivery.ThrottledEditor`, the bot's edit interval, 1.5 s),
and the announcement after the token expired is a new channel message that mentions the user.

The package: ``cog.py`` (the commands, rights, autocomplete, ``setup``), ``views.py`` (the buttons,
the caption form, the views), ``texts.py`` (messages and embeds, pure), ``follower.py`` (a training's
message, followed to its end).  ``bot.discord_app.client.COGS`` loads it by this package's name.
"""

from bot.discord_app.cogs.lora.cog import Lora, setup

__all__ = ["Lora", "setup"]
