"""The Discord bot: discord.py glue over the services (the only package that imports discord).

Layout: ``client.py`` (the bot, its start-up and command sync), ``context.py`` (who is
asking, in which language, with which rights), ``translator.py`` (command names and
descriptions in the user's language), ``cogs/`` (one module per feature: parse → call one
service → reply), ``views.py`` (persistent buttons and modals whose ``custom_id`` carries
the ids they need, so they keep working after a restart).
"""
