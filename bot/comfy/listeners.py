"""Telling listeners about a change, each on its own: one that raises is logged, never the rest.

The client tells its connection listeners and a prompt's success listeners this way, and the
pool its backend listeners; each passes its own logger and words, so the log line still says
whose listener failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = ["notify"]

T = TypeVar("T")


def notify(
    listeners: Iterable[Callable[[T], None]],
    value: T,
    log: logging.Logger,
    failed: str,
    *args: object,
) -> None:
    """Call every listener with ``value`` (over a copy of ``listeners``, which may change).

    A listener that raises is logged on ``log`` with ``log.exception(failed, *args)``.
    """
    for listener in list(listeners):
        try:
            listener(value)
        except Exception:
            log.exception(failed, *args)
