"""What bounds a re-encode, shared by the video and the audio fitting: the refusal a member
reads (`CannotFit`), the file that fits (`Fitted`), the deadline a worker checks between packets
(`Clock`, which also hands out the frames it decodes), the attempts and headroom of the rate
control, and the words that say sizes, rates and durations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import av.error

from bot.errors import UserError
from bot.media.sniff import MediaType

#: Encodes tried before giving up (each measured, the next one aimed lower).
ATTEMPTS = 3
#: Share of the limit the first attempt aims at (the encoder's rate control is not exact).
HEADROOM = 0.92


class CannotFit(UserError):
    """The file cannot be made to fit the upload limit; the message says why, for the member."""


@dataclass(frozen=True)
class Fitted:
    """A file that fits: its bytes, what it is, and what was done to it (None when untouched)."""

    data: bytes
    media: MediaType
    note: str | None


F = TypeVar("F")


class Decodes(Protocol[F]):
    """A packet: what it decodes to."""

    def decode(self) -> list[F]: ...


class Clock:
    """The deadline, checked by the worker between packets; also set when the caller gives up."""

    def __init__(self, until: float, seconds: float) -> None:
        self.until = until
        self.seconds = seconds
        self.stopped = threading.Event()

    def check(self) -> None:
        if self.stopped.is_set() or time.monotonic() > self.until:
            raise CannotFit(f"re-encoding took longer than {seconds_words(self.seconds)}")

    def frames(self, packets: Iterable[Decodes[F]]) -> Iterator[F]:
        """The frames of `packets` in their order, the deadline checked before each packet; a
        packet that does not decode is skipped, as players do."""
        for packet in packets:
            self.check()
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue
            yield from frames


def unreadable(noun: str) -> CannotFit:
    return CannotFit(
        f"the {noun} could not be read: it is damaged or in a format that cannot be decoded"
    )


# --- words --------------------------------------------------------------------------------------


def size_words(size: int) -> str:
    """10485760 -> "10 MiB", 1536 -> "1.5 KiB"."""
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            value = size / scale
            return (
                f"{value:.0f} {unit}"
                if value >= 10 or value.is_integer()
                else f"{value:.1f} {unit}"
            )
    return f"{size} bytes"


def rate_words(bits_per_second: float) -> str:
    """1_400_000 -> "1.4 Mbit/s", 850_000 -> "850 kbit/s"."""
    if bits_per_second >= 1_000_000:
        return f"{bits_per_second / 1_000_000:.1f} Mbit/s"
    return f"{bits_per_second / 1000:.0f} kbit/s"


def duration_words(seconds: float) -> str:
    """2400 -> "40 minutes", 3 -> "3 seconds", 0.4 -> "0.4 seconds"."""
    if seconds < 10:
        value = f"{seconds:.1f}".rstrip("0").rstrip(".")
        return f"{value} second" if value == "1" else f"{value} seconds"
    if seconds < 120:
        return f"{round(seconds)} seconds"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} minutes"
    return f"{minutes / 60:.1f}".rstrip("0").rstrip(".") + " hours"


def seconds_words(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"
