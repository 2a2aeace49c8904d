"""Pacing a burst of requests so the GPUs never wait on it.

A burst of commands (400 members' `/imagine` at once) arrives as 400 tasks on the event loop.
Left alone, every step of every one of them queues ahead of the runner's next step, so a GPU's
next prompt waits behind hundreds of them: measured with eight 0.1 s GPUs, each went idle for
a few hundred milliseconds at the start of every burst. An `Intake` lets a few requests at a
time do their work (admission, storing the jobs, the reply's first state) in the order they
came; the others wait outside the loop's queue, and the runner's steps stay near its front.

A turn is held while its request waits on a quick answer (handling the answer is work too), but
for `NETWORK_HOLD` at most, and given back before a download, so a slow peer never holds one.
A request that has waited for a turn until its `deadline` goes ahead without one: pacing may
delay a command's acknowledgement, never past what Discord allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator

#: Requests worked on at once: enough that the next one is always ready when one waits on the
#: network, few enough that the runner's steps never queue behind many of theirs.
AT_ONCE = 8
#: How long a turn is kept while its request waits on the network.
NETWORK_HOLD = 0.005


class Turn:
    """One request's turn (or none, for a request that went ahead without one); `release`
    gives it back early, and may be called any number of times."""

    def __init__(self, intake: Intake | None) -> None:
        self._intake = intake
        self._timer: asyncio.TimerHandle | None = None

    @property
    def held(self) -> bool:
        return self._intake is not None

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._intake is not None:
            intake, self._intake = self._intake, None
            intake._give_back()

    def release_within(self, seconds: float) -> None:
        """Keep the turn while the request waits on the network, for `seconds` at most: a
        quick answer is handled within the turn, a slow peer doesn't hold it."""
        if self._intake is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(seconds, self.release)


class Intake:
    """Turns for requests, first come first served, `at_once` at a time."""

    def __init__(self, at_once: int = AT_ONCE) -> None:
        if at_once < 1:
            raise ValueError("an intake needs at least one turn")
        self.at_once = at_once
        self._free = at_once
        self._waiting: deque[asyncio.Future[None]] = deque()
        self.went_ahead = 0  # requests that reached their deadline without a turn

    @property
    def free(self) -> int:
        """Turns no request holds now."""
        return self._free

    @contextlib.asynccontextmanager
    async def turn(self, deadline: float | None = None) -> AsyncIterator[Turn]:
        """Wait for a turn and hold it for the block (or until released). `deadline`, a
        `time.time()`, is when the request goes ahead without one."""
        turn = Turn(self if await self._take(deadline) else None)
        try:
            yield turn
        finally:
            turn.release()

    async def _take(self, deadline: float | None) -> bool:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
            return True
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return True  # given at the last moment: it is ours
            waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiting.remove(waiter)
            self.went_ahead += 1
            return False
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give_back()  # given to a request that is no more
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
            raise

    def _give_back(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the turn passes straight to the next in line
                return
        self._free += 1
