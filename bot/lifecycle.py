"""Stopping on SIGTERM / SIGINT: what `docker stop`, systemd and Ctrl-C send.

`comfycord run` and `generate` wait for `stop_requested` next to their work; on a signal they shut
down in order (stop taking requests, tell waiting members, leave running jobs to be collected
after the restart, flush the store, close the connections) and exit within `SHUTDOWN_SECONDS`.
A second signal during that time is ignored: the shutdown is already bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 8.0  # what a shutdown may take; service managers allow 10 s by default
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_requested() -> Iterator[asyncio.Event]:
    """An event set when the process receives SIGTERM or SIGINT (handlers removed on exit)."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if not event.is_set():
            log.info("%s received: shutting down", sig.name)
        event.set()

    installed = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no Unix signals
            continue
        installed.append(sig)
    try:
        yield event
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
