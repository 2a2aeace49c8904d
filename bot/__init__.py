"""comfycord: ComfyUI workflows as Discord slash commands.

Everything in `bot/` except `bot/app.py` is the engine and never imports discord.
"""
