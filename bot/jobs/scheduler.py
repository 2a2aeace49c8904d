"""The fair shared queue.

Jobs wait here until a slot on ComfyUI frees up. The next job is chosen round-robin across
members: the member served longest ago (or never) goes first, so a member with twenty jobs
waiting delays a member with one by at most one turn. A job with a higher priority (moderators,
when the server says so) goes ahead of the rotation. Members at their running limit are skipped
until one of their jobs finishes.

The fair order is kept sorted, not recomputed. Each waiting job has a key such that sorting by
key gives the order the jobs would start in if slots were free for all:

    (-priority, round, member's place in that priority's rotation)

Within one priority the rotation is the same in every round: members never served (oldest
first job first), then the others by when they were last served. A member whose earlier jobs
had a higher priority enters a lower priority's rotation after everyone who had none, in the
order they were last served up there. A job's key depends only on its own member, so a change
(add, remove, start) re-keys only that member's jobs: O((c + 1) log n) for n waiting jobs and
c jobs of that member waiting (bounded by `max_queued_per_member`). The position of a job and
the job at a position are O(log n).

Positions matter to members in bands (1, 2, 3, 5, 10, 20, 50, ...): `take_band_changes()`
says which jobs entered another band since it was last called, looking only at the jobs that
moved and at those within reach of a band boundary: O(b k log n) for b bands and k jobs moved.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedList

from bot.jobs.model import Job

RunningLimit = Callable[[Job], int | None]


def _bands(limit: int = 10**7) -> tuple[int, ...]:
    bands = [1, 2, 3]
    scale = 1
    while scale * 5 <= limit:
        bands += [b * scale for b in (5, 10, 20) if b * scale <= limit]
        scale *= 10
    return tuple(bands)


#: Positions where what a member sees changes: 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, ...
BANDS = _bands()


def band_of(position: int) -> int:
    """Index of the band `position` (1-based) is in; -1 for 0 (started) or less."""
    return bisect.bisect_right(BANDS, position) - 1 if position >= 1 else -1


@dataclass
class _Member:
    """One member's waiting jobs, in the order they will be served."""

    jobs: list[tuple[tuple[int, float, int], Job]] = field(default_factory=list)
    served: int = 0  # tick of their last start, 0 if never


class FairQueue:
    """Queued jobs in fair order. Not thread-safe; used from the event loop only."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._seq: dict[str, int] = {}  # first time a job was added: breaks exact ties
        self._keys: dict[str, tuple[Any, ...]] = {}
        self._order: SortedList[tuple[Any, ...]] = SortedList()
        self._heads: SortedList[tuple[Any, ...]] = SortedList()  # (first job's key, member)
        self._head_key: dict[str, tuple[Any, ...]] = {}
        self._members: dict[str, _Member] = {}
        self._served: dict[str, int] = {}
        self._tick = itertools.count(1)
        self._counter = itertools.count()
        # band tracking
        self._reported: dict[str, int] = {}
        self._touched: set[str] = set()
        self._shift = 0

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[Job]:
        return iter(self.order())

    # changes ----------------------------------------------------------------------------------
    def add(self, job: Job) -> None:
        """Queue a job, or replace the queued job with the same id (e.g. changed meta)."""
        old = self._jobs.get(job.id)
        if old is not None and (old.owner_id, old.priority, old.created_at) == (
            job.owner_id,
            job.priority,
            job.created_at,
        ):
            self._jobs[job.id] = job  # same place in the order
            member = self._members[job.owner_id]
            member.jobs = [(k, job if j.id == job.id else j) for k, j in member.jobs]
            return
        if old is not None:
            self.remove(job.id)
        self._seq.setdefault(job.id, next(self._counter))
        self._jobs[job.id] = job
        if job.owner_id not in self._members:
            self._members[job.owner_id] = _Member(served=self._served.get(job.owner_id, 0))
        member = self._members[job.owner_id]
        bisect.insort(member.jobs, ((-job.priority, job.created_at, self._seq[job.id]), job))
        self._shift += 1
        self._rekey(job.owner_id)

    def remove(self, job_id: str) -> Job | None:
        """Take a job out of the queue (cancelled); None if it is not queued."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return None
        self._seq.pop(job_id, None)
        self._order.remove((self._keys.pop(job_id), job_id))
        self._reported.pop(job_id, None)
        self._touched.discard(job_id)
        self._shift += 1
        member = self._members[job.owner_id]
        member.jobs = [(k, j) for k, j in member.jobs if j.id != job_id]
        self._rekey(job.owner_id)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def pop_next(
        self,
        running: Mapping[str, int],
        limit: RunningLimit,
        accept: Callable[[Job], bool] | None = None,
    ) -> Job | None:
        """Take the next job to start, skipping members already at their running limit.

        Args:
            running: member id -> jobs of theirs running now.
            limit: the running limit for a job's member (None: no limit).
            accept: whether a member's next job can start now (e.g. a free backend can run
                it); a member whose next job can't is skipped, their later jobs wait behind it.
        """
        for _, owner in self._heads:
            member = self._members[owner]
            cap = limit(member.jobs[0][1])
            if cap is not None and running.get(owner, 0) >= cap:
                continue
            if accept is not None and not accept(member.jobs[0][1]):
                continue
            job = member.jobs[0][1]
            self._served[owner] = member.served = next(self._tick)
            self.remove(job.id)
            return job
        return None

    def _rekey(self, owner: str) -> None:
        """Recompute the keys of one member's jobs; only changed ones move in the order."""
        member = self._members[owner]
        old_head = self._head_key.pop(owner, None)
        if old_head is not None:
            self._heads.remove((old_head, owner))
        if not member.jobs:
            del self._members[owner]
            return
        for job_id, key in _member_keys(member).items():
            old = self._keys.get(job_id)
            if old == key:
                continue
            if old is not None:
                self._order.remove((old, job_id))
            self._order.add((key, job_id))
            self._keys[job_id] = key
            self._touched.add(job_id)
        head = self._keys[member.jobs[0][1].id]
        self._head_key[owner] = head
        self._heads.add((head, owner))

    # reading ----------------------------------------------------------------------------------
    def order(self) -> list[Job]:
        """Every queued job in the order it would start if slots were free for all (O(n))."""
        return [self._jobs[job_id] for _, job_id in self._order]

    def positions(self) -> dict[str, int]:
        """Job id -> 1-based place in the fair order (O(n))."""
        return {job_id: i for i, (_, job_id) in enumerate(self._order, start=1)}

    def position(self, job_id: str) -> int | None:
        """1-based place of one job in the fair order, None if not queued (O(log n))."""
        key = self._keys.get(job_id)
        if key is None:
            return None
        return int(self._order.index((key, job_id))) + 1

    def at(self, position: int) -> Job:
        """The job at a 1-based place in the fair order (O(log n)).

        Raises:
            IndexError: no job there.
        """
        if position < 1:
            raise IndexError(position)
        return self._jobs[self._order[position - 1][1]]

    def waiting_of(self, owner_id: str) -> int:
        """How many jobs a member has waiting."""
        member = self._members.get(owner_id)
        return len(member.jobs) if member else 0

    def take_band_changes(self) -> list[tuple[Job, int]]:
        """Jobs whose position entered another band (see `BANDS`) since the last call.

        Returns (job, position now) pairs. Looks only at jobs that were re-keyed or added, and at
        those close enough to a band boundary to have crossed it.
        """
        n = len(self._order)
        positions: dict[str, int] = {}
        shift = self._shift
        if shift * len(BANDS) * 2 >= n:
            positions = self.positions()
        else:
            for boundary in BANDS:
                if boundary - shift > n:
                    break
                lo, hi = max(1, boundary - shift), min(n, boundary + shift)
                for offset, (_, job_id) in enumerate(self._order.islice(lo - 1, hi)):
                    positions[job_id] = lo + offset
            for job_id in self._touched:
                if job_id not in positions and job_id in self._keys:
                    positions[job_id] = int(self._order.index((self._keys[job_id], job_id))) + 1
        self._touched.clear()
        self._shift = 0
        changes = []
        for job_id, position in positions.items():
            band = band_of(position)
            if self._reported.get(job_id) != band:
                self._reported[job_id] = band
                changes.append((self._jobs[job_id], position))
        changes.sort(key=lambda change: change[1])
        return changes


def _member_keys(member: _Member) -> dict[str, tuple[Any, ...]]:
    """The order keys of one member's jobs: (-priority, round, place in that rotation)."""
    keys: dict[str, tuple[Any, ...]] = {}
    tier_key: tuple[Any, ...] | None = None
    tier: int | None = None
    count = 0
    for (neg_priority, created_at, seq), job in member.jobs:
        if neg_priority != tier:
            if tier is None:
                # never served: oldest first job first; served: by when (ticks are unique)
                tier_key = (0, member.served, created_at, seq)
            else:
                # served in the higher tier just before: after those who were not, in the order
                # of their last turn there (earlier tiers first, then round, then rotation)
                tier_key = (1, tier, count, tier_key)
            tier, count = neg_priority, 0
        count += 1
        keys[job.id] = (neg_priority, count, tier_key)
    return keys
