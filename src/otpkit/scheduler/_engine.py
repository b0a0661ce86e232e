"""The holder's tick engine: when each job fires, and the claim and dispatch of its runs.

The :class:`FireQueue` holds each active job's next fire time; one timer (:meth:`Engine.arm`)
wakes the engine ``lead`` seconds before the first (at most ``max_wait`` later). At a
wake (:meth:`Engine.wake`) ``plan_misfires`` says, per due job, which ticks since its
highest claimed one run and which were missed (settled at once: claimed and finished
``missed``, :meth:`Engine.settle`); :func:`pick_nodes` picks the run strategy's nodes.
:meth:`Engine.claim_and_dispatch` claims the runs in the ledger, has the writer take
the claims to a majority, and only then sends each run to its node's task pool; a job
that does not overlap and still runs has the tick ``skipped``. ``@reboot`` jobs fire
once per cluster start (:meth:`Engine.fire_reboot`).

The engine keeps the job lanes it knows (``job_lanes``: the ledger lanes of each job)
and each job parsed once per version (``job_of``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from otpkit import actors
from otpkit.errors import OtpkitError
from otpkit.scheduler._events import EventBus, JobEvent, new_event
from otpkit.scheduler._finishes import Finishes
from otpkit.scheduler._job import Job
from otpkit.scheduler._ledger import ClaimKey, claim_all, finish_all
from otpkit.scheduler._ledger_attempts import attempt_of, start_all
from otpkit.scheduler._member import Member
from otpkit.scheduler._peers import Peers
from otpkit.scheduler._plan import plan_misfires
from otpkit.scheduler._queue import FireQueue
from otpkit.scheduler._replica import JobEntry, encode_key
from otpkit.scheduler._replication import Writer

log = logging.getLogger("otpkit.scheduler")

#: The lane of manual runs (``run_job``): ``@manual``, or ``@manual:<node>`` per node
#: under ``run_strategy="all"``.
MANUAL = "@manual"
_US = timedelta(microseconds=1)


def wall_now() -> datetime:
    return datetime.now(UTC)


def pick_nodes(
    strategy: str | Sequence[str], me: str, connected: Iterable[str], rng: random.Random
) -> list[str]:
    """The nodes one tick runs on: ``local`` this node, ``random`` one node of the
    cluster, ``all`` each node, a list: one of its nodes that is up (none: empty)."""
    if isinstance(strategy, str) and strategy not in ("local", "random", "all"):
        raise ValueError(f"run_strategy {strategy!r}: expected 'local', 'random', 'all' or a list")
    if strategy == "local":
        return [me]
    alive = sorted({me, *connected})
    if strategy == "random":
        return [rng.choice(alive)]
    if strategy == "all":
        return alive
    allowed = [n for n in strategy if n in alive]
    return [rng.choice(allowed)] if allowed else []


class Engine:
    """The tick engine of one holder term of scheduler ``name`` on ``node``."""

    def __init__(
        self,
        *,
        name: str,
        node: str,
        lead: float,
        max_wait: float,
        member: Member,
        writer: Writer,
        finishes: Finishes,
        bus: EventBus,
        peers: Peers,
        rng: random.Random,
        pool_svc: str,
        later: Callable[[str, float | None], Any],
        cancel: Callable[[Any], Any],
    ) -> None:
        self.name = name
        self.node = node
        self.lead = lead
        self.max_wait = max_wait
        self.member = member
        self.writer = writer
        self.finishes = finishes
        self.bus = bus
        self.peers = peers
        self.rng = rng
        self.pool_svc = pool_svc
        self.later = later
        self.cancel = cancel
        self.queue = FireQueue()
        self.timer: Any = None
        self.timer_at: float | None = None
        self.job_lanes: dict[str, set[str | None]] = {}
        self.jobs_cache: dict[str, tuple[tuple[int, int], Job]] = {}
        # open claims whose failed attempt waits for its retry: when the next is due
        self.retries: dict[ClaimKey, datetime] = {}
        # since when (monotonic) a waiting attempt found no node to run on
        self.retry_stuck: dict[ClaimKey, float] = {}
        finishes.job_named = self.job_named
        finishes.retry_later = self.retry_later

    def start(self, now: datetime) -> None:
        """The term is recovered: know the ledger's lanes, and queue every active job
        from ``now`` (a recovery after a refused write starts afresh)."""
        for (lane_job, lane_node), lane in self.member.rep.ledger.lanes.items():
            self.job_lanes.setdefault(lane_job, set()).add(lane_node)
            for tick, _, retry_at in lane.tries:
                if retry_at is not None:  # a retry a former holder wrote: due here
                    self.retries[ClaimKey(lane_job, tick, lane_node)] = retry_at
        self.queue = FireQueue()
        for name, entry in self.member.rep.live_jobs().items():
            if entry.spec is not None and entry.spec.get("state") == "active":
                self.queue.add(name, now)

    def requeue(self, name: str, now: datetime) -> None:
        """Job ``name`` changed: due from ``now`` if it is active, else not queued."""
        self.unqueue(name)
        entry = self.member.rep.jobs.get(name)
        if entry is not None and entry.spec is not None and entry.spec.get("state") == "active":
            self.queue.add(name, now)
            self.arm()

    def unqueue(self, name: str) -> None:
        if name in self.queue:
            self.queue.remove(name)

    # ------------------------------------------------------------------ the timer

    def job_named(self, name: str) -> Job | None:
        entry = self.member.rep.jobs.get(name)
        return None if entry is None or entry.spec is None else self.job_of(name, entry)

    def retry_later(self, key: ClaimKey, at: datetime) -> None:
        """The next attempt of ``key`` is due at ``at`` (its wait is in the ledger)."""
        self.retries[key] = at
        self.arm()

    def arm(self) -> None:
        nxt = self.queue.next_at()
        if self.retries:
            first = min(self.retries.values())
            nxt = first if nxt is None else min(nxt, first)
        if nxt is None:
            return
        delay = (nxt - wall_now()).total_seconds() - self.lead
        delay = max(0.0, min(delay, self.max_wait))
        due = time.monotonic() + delay
        if self.timer is not None and self.timer_at is not None and self.timer_at <= due:
            return
        if self.timer is not None:
            self.cancel(self.timer)
        self.timer = self.later("wake", delay)
        self.timer_at = due

    def woken(self) -> None:
        """The timer fired."""
        self.timer = None
        self.timer_at = None

    def stop(self) -> None:
        """Cancel the timer."""
        if self.timer is not None:
            self.cancel(self.timer)
            self.timer, self.timer_at = None, None

    # ------------------------------------------------------------------ ticks

    def wake(self) -> None:
        if not self.writer.recovered:
            return
        real_now = wall_now()
        retry = [
            k for k, at in self.retries.items() if at <= real_now + timedelta(seconds=self.lead)
        ]
        if retry:
            self.start_attempts(retry)
        due = self.queue.pop_due(real_now + timedelta(seconds=self.lead))
        runs: list[tuple[str, datetime]] = []
        settle: list[tuple[ClaimKey, str, JobEvent]] = []
        held: list[tuple[str, datetime, JobEvent]] = []
        for at, name in due:
            entry = self.member.rep.jobs.get(name)
            if entry is None or entry.spec is None or entry.spec.get("state") != "active":
                continue
            job = self.job_of(name, entry)
            if job is None:
                continue
            now = max(real_now, at)
            last = self.last_claimed(name)
            try:
                floor = entry.since - _US
                plan = plan_misfires(
                    job.schedule,
                    floor if last is None or last < floor else last,
                    now,
                    job.misfire,
                    job.misfire_grace,
                )
            except OverflowError as exc:
                # times beyond the years 1-9999 (a misfire_grace of millennia, a since
                # of year 1): the job cannot be planned, the others still fire
                log.error(
                    "%s: scheduler %s: job %r cannot be planned (%s); it does not fire",
                    self.node,
                    self.name,
                    name,
                    exc,
                )
                continue
            if plan.missed:
                settle_key = ClaimKey(name, plan.missed.last or now, None)
                missed = plan.missed
                extra = {"first": missed.first, "last": missed.last, "ticks": missed.count()}
                event = new_event("run_missed", name, tick=plan.missed.first, extra=extra)
                if not plan.run:
                    settle.append((settle_key, "missed", event))
                else:
                    # reported once the run after the span is claimed (a claim that no
                    # majority takes settles nothing: the span is due again)
                    held.append((name, plan.run[0], event))
            for tick in plan.run:
                runs.append((name, tick))
            if plan.next_at is not None:
                self.queue.add(name, plan.next_at)
        if settle:
            self.settle(settle)
        if runs:
            self.claim_and_dispatch(runs, manual=False)
        for name, first_run, event in held:
            last = self.last_claimed(name)
            if last is not None and last >= first_run:
                self.bus.emit(event)
        self.arm()

    def fire_reboot(self, now: datetime) -> None:
        """Run every active ``@reboot`` job once, at ``now``."""
        runs = []
        for name, entry in self.member.rep.live_jobs().items():
            spec = entry.spec
            if spec is None or spec.get("state") != "active":
                continue
            if str(spec.get("schedule", "")).strip().lower() == "@reboot":
                runs.append((name, now))
        if runs:
            self.claim_and_dispatch(runs, manual=False)

    def job_of(self, name: str, entry: JobEntry) -> Job | None:
        """The entry's job, parsed once per version of it."""
        cached = self.jobs_cache.get(name)
        if cached is not None and cached[0] == entry.stamp:
            return cached[1]
        try:
            job = Job.from_spec(entry.spec or {})
        except Exception as exc:  # its task's module runs its code on import: anything may raise
            log.error("scheduler: job %r cannot be read back (%r); it does not fire", name, exc)
            return None
        self.jobs_cache[name] = (entry.stamp, job)
        return job

    def last_claimed(self, job: str) -> datetime | None:
        """The highest tick claimed for ``job`` by its scheduled runs (manual runs have
        lanes of their own)."""
        lanes = self.member.rep.ledger.lanes
        best = None
        for node in self.job_lanes.get(job, ()):
            if node is not None and node.startswith("@"):
                continue
            lane = lanes.get((job, node))
            if lane is not None and (best is None or lane.high > best):
                best = lane.high
        return best

    def has_open(self, job: str) -> bool:
        """Whether a run of ``job`` is claimed and not finished."""
        lanes = self.member.rep.ledger.lanes
        return any(
            (lane := lanes.get((job, node))) is not None and lane.open
            for node in self.job_lanes.get(job, ())
        )

    def manual_high(self, job: str) -> datetime | None:
        """The highest tick of ``job``'s manual runs."""
        lanes = self.member.rep.ledger.lanes
        manual = [
            lane.high
            for node in self.job_lanes.get(job, ())
            if node is not None
            and node.startswith(MANUAL)
            and (lane := lanes.get((job, node))) is not None
        ]
        return max(manual) if manual else None

    def settle(self, items: list[tuple[ClaimKey, str, JobEvent]]) -> None:
        """Claim and finish at once: ticks settled without a run (missed, skipped)."""
        epoch = self.writer.epoch
        ledger, claimed = claim_all(self.member.rep.ledger, [k for k, _, _ in items], epoch)
        claimed_set = set(claimed)
        ledger, _ = finish_all(ledger, [(k, o) for k, o, _ in items if k in claimed_set], epoch)
        updates = self.writer.lane_updates(ledger, claimed)
        if updates and self.writer.write(updates):
            for key in claimed:
                self.job_lanes.setdefault(key.job, set()).add(key.node)
            done = set(claimed)
            for key, _, event in items:
                if key in done:
                    self.bus.emit(event)

    def claim_and_dispatch(self, runs: list[tuple[str, datetime]], manual: bool) -> list[ClaimKey]:
        """Claim each run's key(s) in one write, then send them to their pools."""
        plans: list[tuple[ClaimKey, str, Mapping[str, Any]]] = []
        skipped: list[tuple[ClaimKey, str, JobEvent]] = []
        for name, tick in runs:
            entry = self.member.rep.jobs.get(name)
            job = None if entry is None or entry.spec is None else self.job_of(name, entry)
            if job is None:
                continue
            spec: Mapping[str, Any] = job.to_spec()  # the entry's spec, checked
            if not manual and not spec.get("overlap", True) and self.has_open(name):
                key = ClaimKey(name, tick, None)
                event = new_event(
                    "run_skipped", name, tick=tick, error="the previous run is still running"
                )
                skipped.append((key, "skipped", event))
                continue
            targets = pick_nodes(
                spec.get("run_strategy", "local"), self.node, self.peers.targets(), self.rng
            )
            if not targets:
                key = ClaimKey(name, tick, MANUAL if manual else None)
                event = new_event("run_missed", name, tick=tick, error="no node of its strategy")
                skipped.append((key, "missed", event))
                continue
            every = spec.get("run_strategy") == "all"
            for target in targets:
                lane_node = target if every else None
                if manual:
                    lane_node = f"{MANUAL}:{target}" if every else MANUAL
                plans.append((ClaimKey(name, tick, lane_node), target, spec))
        if skipped:
            self.settle(skipped)
        if not plans:
            return []
        epoch = self.writer.epoch
        ledger, claimed = claim_all(self.member.rep.ledger, [k for k, _, _ in plans], epoch)
        if not claimed:
            return []
        done = set(claimed)
        chosen = [(k, t, s) for k, t, s in plans if k in done]
        updates = self.writer.lane_updates(ledger, claimed)
        updates += [["where", encode_key(k), t] for k, t, _ in chosen]
        if not self.writer.write(updates):
            # not accepted by a majority: never started; a later check reports the claim
            self.finishes.schedule_check(1.0)
            return []
        for key, target, spec in chosen:
            self.job_lanes.setdefault(key.job, set()).add(key.node)
            self._send(key, target, spec, 1)
        self.finishes.schedule_check(3.0)
        return claimed

    def _retry_done(self, key: ClaimKey) -> None:
        self.retries.pop(key, None)
        self.retry_stuck.pop(key, None)

    def _attempt_targets(self, key: ClaimKey, spec: Mapping[str, Any]) -> list[str]:
        """Where the next attempt of ``key`` runs: the lane's node (strategy ``all``, a
        manual run on every node) if it is up, else where the strategy picks now."""
        up = self.peers.targets() | {self.node}
        if key.node is not None and not key.node.startswith(MANUAL):
            return [key.node] if key.node in up else []
        if key.node is not None and key.node.startswith(f"{MANUAL}:"):
            target = key.node.partition(":")[2]
            return [target] if target in up else []
        return pick_nodes(
            spec.get("run_strategy", "local"), self.node, self.peers.targets(), self.rng
        )

    def _send(self, key: ClaimKey, target: str, spec: Mapping[str, Any], attempt: int) -> None:
        """Send attempt ``attempt`` of the claimed run ``key`` to ``target``'s pool."""
        self.finishes.sent(key, time.monotonic())
        run = {
            "key": [key.job, key.at, key.node],
            "task": spec["task"],
            "args": list(spec.get("args", ())),
            "kwargs": dict(spec.get("kwargs", {})),
            "timeout": spec.get("timeout"),
            "epoch": self.writer.epoch,
        }
        if attempt > 1 or not self.writer.compat():
            run["attempt"] = attempt
        try:
            actors.send((self.pool_svc, target), ("run", run))
        except OtpkitError as exc:
            log.warning("%s: run %s could not be sent to %s: %s", self.node, key, target, exc)

    def start_attempts(self, keys: list[ClaimKey]) -> None:
        """Claim the next attempt of each of ``keys`` (open claims waiting for their
        retry) in one write, then send them: the attempt runs on the lane's node
        (strategy ``all``) or where the job's strategy picks now."""
        plans: list[tuple[ClaimKey, int, str, Mapping[str, Any]]] = []
        lanes = self.member.rep.ledger.lanes
        now = wall_now()
        for key in keys:
            lane = lanes.get(key.lane)
            job = self.job_named(key.job)
            attempt, retry_at = attempt_of(lane, key.at) if lane is not None else (0, None)
            if retry_at is None:  # settled meanwhile
                self._retry_done(key)
                continue
            manual = key.node is not None and key.node.startswith(MANUAL)
            why = _no_next_attempt(job, attempt, manual)
            if why is not None:
                self._retry_done(key)
                self.finishes.give_up(key, why)
                continue
            assert job is not None
            spec = job.to_spec()
            targets = self._attempt_targets(key, spec)
            if not targets:
                # its node is down: try again in a second; give the run up once no node
                # of its strategy came back for lost_after seconds
                since = self.retry_stuck.setdefault(key, time.monotonic())
                if time.monotonic() - since > self.finishes.lost_after:
                    self._retry_done(key)
                    self.finishes.give_up(key, "no node of its run strategy is up for a retry")
                else:
                    self.retries[key] = now + timedelta(seconds=1.0)
                continue
            plans.append((key, attempt + 1, targets[0], spec))
        if not plans:
            return
        ledger, started = start_all(
            self.member.rep.ledger, [(k, n) for k, n, _, _ in plans], self.writer.epoch
        )
        done = set(started)
        chosen = [p for p in plans if p[0] in done]
        updates = self.writer.lane_updates(ledger, started)
        updates += [["where", encode_key(k), t] for k, _, t, _ in chosen]
        if not started or not self.writer.write(updates):
            for key, _, _, _ in plans:  # due again a moment later
                self.retries[key] = now + timedelta(seconds=0.5)
            return
        for key, attempt, target, job_spec in chosen:
            self._retry_done(key)
            self._send(key, target, job_spec, attempt)
        self.finishes.schedule_check(3.0)


def _no_next_attempt(job: Job | None, attempt: int, manual: bool) -> str | None:
    """Why the attempt after ``attempt`` must not start (the run then ends failed), or
    None: the job was deleted, deactivated (a scheduled run; a manual one runs also for
    an inactive job) or lowered its ``max_attempts`` meanwhile."""
    if job is None:
        return "the job was deleted before its next attempt"
    if job.state != "active" and not manual:
        return "the job was deactivated before its next attempt"
    if attempt >= job.max_attempts:
        return f"max_attempts is now {job.max_attempts}: no attempt after {attempt}"
    return None


__all__ = ["MANUAL", "Engine", "pick_nodes", "wall_now"]
