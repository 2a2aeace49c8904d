"""ComfyUI client: HTTP routes, one persistent websocket, typed events (no Discord here)."""

from bot.comfy.client import (
    ComfyClient,
    PromptResult,
    PromptTracker,
    QueueItem,
    QueueSnapshot,
    safe_filename,
)
from bot.comfy.events import Event, ImageRef, parse_binary, parse_message
from bot.comfy.rejection import explain_rejection

__all__ = [
    "ComfyClient",
    "Event",
    "ImageRef",
    "PromptResult",
    "PromptTracker",
    "QueueItem",
    "QueueSnapshot",
    "explain_rejection",
    "parse_binary",
    "parse_message",
    "safe_filename",
]
