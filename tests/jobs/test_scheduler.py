"""The fair queue on its own: round-robin across members, priorities, running limits."""

import random

import pytest

from bot.jobs.model import Job
from bot.jobs.scheduler import BANDS, FairQueue, band_of


def job(job_id: str, owner: str, t: float, priority: int = 0) -> Job:
    return Job(job_id, "wf", {}, owner, created_at=t, priority=priority)


def test_round_robin_across_members() -> None:
    queue = FairQueue()
    for i in range(5):
        queue.add(job(f"a{i}", "A", i))
    queue.add(job("b0", "B", 10))
    queue.add(job("c0", "C", 11))
    assert [j.id for j in queue.order()] == ["a0", "b0", "c0", "a1", "a2", "a3", "a4"]


def test_member_served_recently_waits_for_the_others() -> None:
    queue = FairQueue()
    for i in range(20):
        queue.add(job(f"a{i}", "A", i))
    first = queue.pop_next({}, lambda j: None)
    assert first is not None and first.id == "a0"
    queue.add(job("b0", "B", 30))
    queue.add(job("c0", "C", 31))
    nxt = [queue.pop_next({}, lambda j: None) for _ in range(2)]
    assert {j.id for j in nxt if j} == {"b0", "c0"}


def test_positions_follow_the_fair_order() -> None:
    queue = FairQueue()
    queue.add(job("a0", "A", 0))
    queue.add(job("a1", "A", 1))
    queue.add(job("b0", "B", 2))
    assert queue.positions() == {"a0": 1, "b0": 2, "a1": 3}
    queue.remove("a0")
    assert queue.positions() == {"a1": 1, "b0": 2}  # a0 was cancelled, not served


def test_priority_goes_first() -> None:
    queue = FairQueue()
    queue.add(job("a0", "A", 0))
    queue.add(job("m0", "M", 5, priority=1))
    assert queue.pop_next({}, lambda j: None).id == "m0"  # type: ignore[union-attr]


def test_member_at_running_limit_is_skipped() -> None:
    queue = FairQueue()
    queue.add(job("a0", "A", 0))
    queue.add(job("b0", "B", 1))
    picked = queue.pop_next({"A": 1}, lambda j: 1)
    assert picked is not None and picked.id == "b0"
    assert queue.pop_next({"A": 1}, lambda j: 1) is None
    assert queue.pop_next({}, lambda j: 1).id == "a0"  # type: ignore[union-attr]


# the kept order against the full computation it replaced ----------------------------------------
def reference_order(jobs: list[Job], served: dict[str, int]) -> list[str]:
    """The fair order computed from scratch, as the queue did before it kept it incrementally."""
    by_owner: dict[str, list[Job]] = {}
    for j in sorted(jobs, key=lambda j: (-j.priority, j.created_at)):
        by_owner.setdefault(j.owner_id, []).append(j)
    served = dict(served)
    tick = max(served.values(), default=0)
    result = []
    while by_owner:
        owner = min(
            by_owner,
            key=lambda o: (-by_owner[o][0].priority, served.get(o, 0), by_owner[o][0].created_at),
        )
        result.append(by_owner[owner].pop(0).id)
        if not by_owner[owner]:
            del by_owner[owner]
        tick += 1
        served[owner] = tick
    return result


def reference_pick(jobs: list[Job], served: dict[str, int], running: dict[str, int]) -> str | None:
    heads: dict[str, Job] = {}
    for j in sorted(jobs, key=lambda j: (-j.priority, j.created_at)):
        heads.setdefault(j.owner_id, j)
    eligible = [o for o in heads if running.get(o, 0) < 1]
    if not eligible:
        return None
    owner = min(eligible, key=lambda o: (-heads[o].priority, served.get(o, 0), heads[o].created_at))
    return heads[owner].id


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_kept_order_equals_the_full_computation_on_random_changes(seed: int) -> None:
    rng = random.Random(seed)
    queue = FairQueue()
    waiting: dict[str, Job] = {}
    served: dict[str, int] = {}
    ticks = 0
    owners = [f"m{i}" for i in range(rng.randint(2, 12))]
    for step in range(600):
        action = rng.random()
        if action < 0.5 or not waiting:
            owner = rng.choice(owners)
            created = rng.choice([step, rng.randint(0, step)]) + step / 10**6  # some older
            new = job(f"j{step}", owner, created, priority=rng.choice([0, 0, 0, 1, 2]))
            queue.add(new)
            waiting[new.id] = new
        elif action < 0.65:
            victim = rng.choice(sorted(waiting))
            assert queue.remove(victim) is waiting.pop(victim)
        elif action < 0.7:
            changed = rng.choice(sorted(waiting))  # same job, new meta: keeps its place
            waiting[changed] = waiting[changed].evolve(meta={"step": step})
            queue.add(waiting[changed])
        else:
            running = {o: 1 for o in owners if rng.random() < 0.3}
            expected = reference_pick(list(waiting.values()), served, running)
            picked = queue.pop_next(running, lambda j: 1)
            assert (picked.id if picked else None) == expected
            if picked is not None:
                del waiting[picked.id]
                ticks += 1
                served[picked.owner_id] = ticks
        expected_order = reference_order(list(waiting.values()), served)
        assert [j.id for j in queue.order()] == expected_order
        assert queue.positions() == {j: i for i, j in enumerate(expected_order, start=1)}
        for i, job_id in enumerate(expected_order, start=1):
            assert queue.position(job_id) == i
            assert queue.at(i).id == job_id


@pytest.mark.parametrize("seed", [7, 8])
def test_band_changes_name_exactly_the_jobs_that_entered_another_band(seed: int) -> None:
    rng = random.Random(seed)
    queue = FairQueue()
    shown: dict[str, int] = {}
    for step in range(1500):
        if rng.random() < 0.55 or len(queue) < 5:
            queue.add(job(f"j{step}", f"m{rng.randint(0, 40)}", float(step)))
        elif rng.random() < 0.2:
            queue.remove(rng.choice(sorted(queue.positions())))
        else:
            queue.pop_next({}, lambda j: None)
        changes = queue.take_band_changes()
        positions = queue.positions()
        expected = {job_id for job_id, p in positions.items() if shown.get(job_id) != band_of(p)}
        assert {j.id for j, _ in changes} == expected
        assert all(positions[j.id] == p for j, p in changes)
        shown = {job_id: band_of(p) for job_id, p in positions.items()}


def test_bands_are_the_ones_members_see() -> None:
    assert BANDS[:11] == (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)
    assert [band_of(p) for p in (0, 1, 2, 3, 4, 5, 9, 10, 49, 50)] == [
        -1,
        0,
        1,
        2,
        2,
        3,
        3,
        4,
        5,
        6,
    ]
