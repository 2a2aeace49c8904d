"""The fair shared queue.

Jobs wait here until a slot on ComfyUI frees up. The next job is chosen round-robin across
members: the member served longest ago (or never) goes first, so a member with twenty jobs
waiting delays a member with one by at most one turn. A job with a higher priority (moderators,
when the server says so) goes ahead of the rotation. Members at their running limit are skipped
until one of their jobs finishes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping

from bot.jobs.model import Job

RunningLimit = Callable[[Job], int | None]


class FairQueue:
    """Queued jobs in fair order. Not thread-safe; used from the event loop only."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._served: dict[str, int] = {}
        self._tick = itertools.count(1)

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[Job]:
        return iter(self.order())

    def add(self, job: Job) -> None:
        self._jobs[job.id] = job

    def remove(self, job_id: str) -> Job | None:
        return self._jobs.pop(job_id, None)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def _heads(self) -> dict[str, list[Job]]:
        by_owner: dict[str, list[Job]] = {}
        for job in sorted(self._jobs.values(), key=lambda j: (-j.priority, j.created_at)):
            by_owner.setdefault(job.owner_id, []).append(job)
        return by_owner

    def order(self) -> list[Job]:
        """Every queued job in the order it would start if slots were free for all."""
        by_owner = self._heads()
        served = dict(self._served)
        tick = max(served.values(), default=0)
        result: list[Job] = []
        while by_owner:
            owner = min(by_owner, key=lambda o: _rank(by_owner[o][0], served.get(o)))
            job = by_owner[owner].pop(0)
            if not by_owner[owner]:
                del by_owner[owner]
            tick += 1
            served[owner] = tick
            result.append(job)
        return result

    def positions(self) -> dict[str, int]:
        """Job id -> 1-based place in the fair order."""
        return {job.id: i for i, job in enumerate(self.order(), start=1)}

    def pop_next(self, running: Mapping[str, int], limit: RunningLimit) -> Job | None:
        """Take the next job to start, skipping members already at their running limit.

        Args:
            running: member id -> jobs of theirs running now.
            limit: the running limit for a job's member (None: no limit).
        """
        by_owner = self._heads()
        eligible = []
        for owner, jobs in by_owner.items():
            cap = limit(jobs[0])
            if cap is not None and running.get(owner, 0) >= cap:
                continue
            eligible.append(owner)
        if not eligible:
            return None
        owner = min(eligible, key=lambda o: _rank(by_owner[o][0], self._served.get(o)))
        job = by_owner[owner][0]
        del self._jobs[job.id]
        self._served[owner] = next(self._tick)
        return job


def _rank(head: Job, served: int | None) -> tuple[int, int, float]:
    return (-head.priority, served if served is not None else 0, head.created_at)
