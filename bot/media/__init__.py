"""Media: what a result file is (from its bytes), and fitting it to an upload limit."""

from bot.media.sniff import TEXT, UNKNOWN, Kind, MediaType, mime_of, sniff

__all__ = ["TEXT", "UNKNOWN", "Kind", "MediaType", "mime_of", "sniff"]
