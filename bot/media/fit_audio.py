"""Fitting a sound to an upload limit: re-encoded to Opus in Ogg (what Discord's own voice
messages are) at the bitrate its duration allows, measured and encoded again when over.
"""

from __future__ import annotations

import io
import logging
import math
from fractions import Fraction

import av
import av.error

from bot.media.budget import (
    ATTEMPTS,
    HEADROOM,
    CannotFit,
    Clock,
    Fitted,
    duration_words,
    rate_words,
    size_words,
    unreadable,
)
from bot.media.sniff import Kind, MediaType, sniff

log = logging.getLogger(__name__)

OGG = MediaType(Kind.AUDIO, "audio/ogg", "ogg")
#: Opus: below this, speech still works; music does not.
_MIN_OPUS_RATE = 12_000
_MAX_OPUS_RATE = {1: 96_000, 2: 160_000}


def fit_audio(data: bytes, limit: int, clock: Clock, path: str) -> Fitted:
    channels, duration = _probe_audio(data, clock)
    channels = min(channels, 2)
    # Ogg headers and Opus tags, then a page header per second or so and a byte per packet
    overhead = 1024 + duration * 80
    rate = min((limit - overhead) * 8 * HEADROOM / duration, _MAX_OPUS_RATE[channels])
    size = 0
    for _ in range(ATTEMPTS):
        if rate < _MIN_OPUS_RATE:
            raise CannotFit(
                f"the audio is {duration_words(duration)} long; even at the lowest quality "
                f"it does not fit in {size_words(limit)}"
            )
        out = _encode_audio(data, channels, int(rate), clock, path)
        size = len(out)
        if size <= limit:
            note = (
                f"re-encoded to Opus at {rate_words(size * 8 / duration)} to fit the "
                f"{size_words(limit)} upload limit"
            )
            return Fitted(out, sniff(out), note)
        log.info("re-encoded audio came to %d bytes for a %d limit; again", size, limit)
        rate *= limit / size * 0.9
    raise CannotFit(
        f"even re-encoded the audio is {size_words(size)}, over the "
        f"{size_words(limit)} upload limit"
    )


def _probe_audio(data: bytes, clock: Clock) -> tuple[int, float]:
    """A sound's channels and duration in seconds (from its packets' timestamps)."""
    try:
        with av.open(io.BytesIO(data), "r") as src:
            if not src.streams.audio:
                raise unreadable("audio")
            stream = src.streams.audio[0]
            channels = stream.codec_context.channels
            start, end = math.inf, 0.0
            for packet in src.demux(stream):
                clock.check()
                if packet.size == 0 or packet.pts is None:
                    continue
                at = float(packet.pts * packet.time_base)
                start = min(start, at)
                end = max(end, at + float((packet.duration or 0) * packet.time_base))
            if start == math.inf and src.duration:
                start, end = 0.0, src.duration / 1_000_000
    except av.error.FFmpegError as exc:
        raise unreadable("audio") from exc
    if channels <= 0 or start == math.inf or end <= start:
        raise unreadable("audio")
    return channels, end - start


def _encode_audio(data: bytes, channels: int, rate: int, clock: Clock, path: str) -> bytes:
    try:
        with av.open(io.BytesIO(data), "r") as src, av.open(path, "w", format="ogg") as out:
            stream = src.streams.audio[0]
            opus = out.add_stream("libopus", rate=48000)
            opus.layout = "mono" if channels == 1 else "stereo"
            opus.bit_rate = rate
            samples = 0
            for frame in clock.frames(src.demux(stream)):
                frame.pts, frame.time_base = samples, Fraction(1, frame.sample_rate)
                samples += frame.samples
                out.mux(opus.encode(frame))
            clock.check()
            out.mux(opus.encode(None))
    except av.error.FFmpegError as exc:
        raise unreadable("audio") from exc
    if samples == 0:
        raise unreadable("audio")
    with open(path, "rb") as file:
        return file.read()
