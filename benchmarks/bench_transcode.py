"""Seconds to fit a 5 s 1080p MP4 of about 30 MB under Discord's 10 MiB upload limit.

    .venv/bin/python benchmarks/bench_transcode.py [--runs 3] [--seconds 5] [--limit-mib 10]

Makes the source first: `--seconds` of 1920x1080 at 30 fps, a moving gradient under film-grain
noise (so it needs its bitrate, as generated video does), H.264 at about 48 Mbit/s with an AAC
stereo track, about 30 MB for 5 s. Then times `bot.media.fit.fit_media` on it, `--runs` times
(each a fresh call: probe, encode, measured retries), and prints each run's seconds, attempts,
the result's size, resolution, frame count and bitrates, and the median seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import math
import random
import statistics
import struct
import time
from fractions import Fraction

import av
from PIL import Image, ImageChops, ImageDraw

from bot.media.fit import fit_media

WIDTH, HEIGHT, FPS = 1920, 1080, 30
SOURCE_RATE = 48_000_000
SAMPLE_RATE = 48_000


def make_source(seconds: float) -> bytes:
    """The 1080p30 source with its sound, in memory."""
    rnd = random.Random(1)
    gradient = Image.linear_gradient("L").resize((WIDTH, HEIGHT))
    across = gradient.rotate(90).resize((WIDTH, HEIGHT))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = SOURCE_RATE
        video.options = {
            "preset": "ultrafast",
            "maxrate": str(SOURCE_RATE),
            "bufsize": str(SOURCE_RATE),
        }
        sound = out.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "stereo"
        sound.bit_rate = 192_000
        for index in range(round(seconds * FPS)):
            noise = Image.frombytes("L", (WIDTH, HEIGHT), rnd.randbytes(WIDTH * HEIGHT))
            moving = ImageChops.offset(gradient, index * 16, index * 6)
            red = Image.blend(moving, noise, 0.22)
            green = Image.blend(ImageChops.offset(across, -index * 9, 0), noise, 0.12)
            picture = Image.merge("RGB", (red, green, moving))
            x = (index * 23) % WIDTH
            ImageDraw.Draw(picture).ellipse((x, 400, x + 300, 700), fill=(250, 210, 60))
            frame = av.VideoFrame.from_image(picture).reformat(format="yuv420p")
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        samples = int(seconds * SAMPLE_RATE)
        for start in range(0, samples, 1024):
            out.mux(sound.encode(_tone(start, min(1024, samples - start))))
        out.mux(sound.encode(None))
    return buf.getvalue()


def _tone(start: int, samples: int) -> av.AudioFrame:
    """A 440 Hz tone with some hiss, as s16 stereo."""
    rnd = random.Random(start)
    pcm = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)) + v) * 2
        for i, v in zip(
            range(start, start + samples),
            (rnd.randint(-2000, 2000) for _ in range(samples)),
            strict=True,
        )
    )
    frame = av.AudioFrame(format="s16", layout="stereo", samples=samples)
    frame.planes[0].update(pcm)
    frame.sample_rate = SAMPLE_RATE
    frame.pts = start
    frame.time_base = Fraction(1, SAMPLE_RATE)
    return frame


def describe(data: bytes) -> str:
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        seconds = (container.duration or 0) / 1_000_000
        frames = sum(1 for _ in container.demux(video)) - 1  # less the flush packet
        parts = [
            f"{len(data) / 2**20:.2f} MiB",
            f"{video.codec_context.width}x{video.codec_context.height}",
            f"{video.codec_context.name}",
            f"{frames} frames",
            f"{seconds:.2f} s",
            f"{len(data) * 8 / seconds / 1e6:.2f} Mbit/s overall" if seconds else "",
            f"video {(video.bit_rate or 0) / 1e6:.2f} Mbit/s",
        ]
        if audio is not None:
            parts.append(f"{audio.codec_context.name} {(audio.bit_rate or 0) / 1000:.0f} kbit/s")
    return ", ".join(p for p in parts if p)


class _Attempts(logging.Handler):
    """Counts the re-encodes `fit_media` logs as over the limit (each one meant another try)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().endswith("; again"):
            self.retries += 1


async def run(runs: int, seconds: float, limit: int) -> None:
    started = time.perf_counter()
    source = make_source(seconds)
    print(f"source: {describe(source)} (made in {time.perf_counter() - started:.1f} s)")
    counter = _Attempts()
    log = logging.getLogger("bot.media.fit")
    log.setLevel(logging.INFO)
    log.addHandler(counter)
    timings = []
    for number in range(1, runs + 1):
        counter.retries = 0
        started = time.perf_counter()
        fitted = await fit_media(source, limit)
        elapsed = time.perf_counter() - started
        timings.append(elapsed)
        print(
            f"run {number}: {elapsed:.2f} s, {counter.retries + 1} attempt(s), "
            f"{describe(fitted.data)}; fits: {len(fitted.data) <= limit}"
        )
        print(f"  note: {fitted.note}")
    print(
        f"fit_media to {limit / 2**20:g} MiB: median {statistics.median(timings):.2f} s "
        f"over {runs} run(s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the source")
    parser.add_argument("--limit-mib", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(run(args.runs, args.seconds, int(args.limit_mib * 2**20)))


if __name__ == "__main__":
    main()
