"""The fair queue on its own: round-robin across members, priorities, running limits."""

from bot.jobs.model import Job
from bot.jobs.scheduler import FairQueue


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
