r"""The fair scheduler: which waiting job runs next, and which others can ride in its batch.

Pure data structures, no threads, no I/O; the caller passes the time.

Order:

1. **Interactive before long.**  Long jobs (training) run only when no interactive job
   waits; they come back between chunks, so an interactive job waits at most one chunk.
2. **Across servers, then across users within the server**, the one with the least *recent
   GPU time* goes first: each user and each server carries its GPU-seconds, decaying with a
   half-life (10 minutes by default).  Ties (e.g. nobody has used anything yet) go to whoever
   was served longest ago — plain round-robin.  Direct messages and the command line
   (``guild=None``) form one more "server".
3. **Within a user**: higher ``priority`` first, then first come, first served.

Why this meets "50 queued jobs from one user delay another user's single job by at most one
job slot": a job is charged (with its estimated cost) the moment it is dispatched, so after
the flooder's first job their recent GPU time exceeds the newcomer's, and the newcomer's job
is the next one dispatched.  A newcomer who used *more* GPU recently than the flooder waits
until the flooder has caught up: that is the weighting.

Data structures: per job class, a heap of servers keyed by (recent usage, last served);
per server, a heap of users keyed the same way; per user, a heap of jobs by (-priority,
submission order).  Decay is by a common factor for everyone, so it never changes the
order; usage is therefore kept *normalised* to a fixed time origin — ``log(Σ cᵢ·e^{tᵢ/τ})``
— and a charge is a log-add on one user and one server.  Heap entries whose key changed are
skipped when they surface (lazy deletion), so each dispatch is O(log n).

Several dispatchers (worker processes on one database): each has its own scheduler, so
before each dispatch the queue :meth:`rebase`\ s it on the usage the store records for every
process, under the store's dispatch lock (``JobStore.dispatch``): the argument above then
holds across processes — the first job of a flood, wherever it ran, counts everywhere.

Batching: jobs with the same ``batch_key`` wait in a side index (per key, per owner, FIFO).
When a job with a key is dispatched, compatible jobs ride along, taken round-robin across
their owners so one user's pile cannot fill every seat; each rider is charged like any job.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from generation.queue.jobs import JobClass, JobSpec

NEG_INF = -math.inf
GuildKey = int | None
#: How many images may share a run with this job (the caller's memory rule).
BatchLimit = Callable[[JobSpec], int]

_CLASSES = (JobClass.INTERACTIVE, JobClass.LONG)


def _log_add(log_total: float, amount: float, at: float, tau: float) -> float:
    """``log(e^log_total + amount·e^{at/τ})``, without overflow (log-sum-exp)."""
    if amount <= 0:
        return log_total
    term = math.log(amount) + at / tau
    if log_total == NEG_INF:
        return term
    high, low = (log_total, term) if log_total >= term else (term, log_total)
    return high + math.log1p(math.exp(low - high))


def _log_sub(log_total: float, amount: float, at: float, tau: float) -> float:
    """Undo a :func:`_log_add` of the same amount at the same time (an estimate replaced)."""
    if amount <= 0 or log_total == NEG_INF:
        return log_total
    term = math.log(amount) + at / tau
    if term >= log_total - 1e-12:  # everything (or rounding noise) is removed
        return NEG_INF
    return log_total + math.log1p(-math.exp(term - log_total))


def decayed(log_total: float, now: float, tau: float) -> float:
    """The usage, in seconds, as it stands at ``now``."""
    return 0.0 if log_total == NEG_INF else math.exp(log_total - now / tau)


@dataclass(slots=True)
class _UserLane:
    activated: int
    jobs: list[tuple[int, int, str]] = field(default_factory=list)  # (-priority, seq, job id)
    pending: int = 0


@dataclass(slots=True)
class _GuildLane:
    activated: int
    users: dict[int, _UserLane] = field(default_factory=dict)
    heap: list[tuple[float, int, int, int]] = field(default_factory=list)  # (usage, served, activated, user)
    pending: int = 0


@dataclass(slots=True)
class _Lane:
    guilds: dict[GuildKey, _GuildLane] = field(default_factory=dict)
    # (usage, served, activated, guild); ``activated`` is unique, so None and ints are never compared
    heap: list[tuple[float, int, int, GuildKey]] = field(default_factory=list)
    pending: int = 0


class FairScheduler:
    """See the module docstring.  ``cost(spec)`` estimates a job's GPU-seconds."""

    def __init__(self, *, half_life_s: float = 600.0, cost: Callable[[JobSpec], float] | None = None) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s must be positive")
        self.tau = half_life_s / math.log(2)
        self._cost = cost or (lambda spec: spec.work)
        self._jobs: dict[str, JobSpec] = {}
        self._lanes = {cls: _Lane() for cls in _CLASSES}
        self._user_usage: dict[int, float] = {}
        self._guild_usage: dict[GuildKey, float] = {}
        self._user_served: dict[int, int] = {}
        self._guild_served: dict[GuildKey, int] = {}
        self._user_lanes: dict[int, set[tuple[JobClass, GuildKey]]] = {}
        self._user_pending: Counter[int] = Counter()
        self._guild_pending: Counter[GuildKey] = Counter()
        self._compat: dict[str, OrderedDict[int, deque[str]]] = {}
        self._inflight: dict[str, tuple[int, GuildKey, float, float]] = {}
        self._served = 0
        self._activations = itertools.count()
        self.version = 0  # changes whenever the order may have changed (cache key for positions)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def get(self, job_id: str) -> JobSpec | None:
        return self._jobs.get(job_id)

    def jobs(self) -> Iterator[JobSpec]:
        return iter(list(self._jobs.values()))

    def pending(self, *, owner: int | None = None, guild: GuildKey | None = None) -> int:
        if owner is not None:
            return self._user_pending[owner]
        if guild is not None:
            return self._guild_pending[guild]
        return len(self._jobs)

    def has_pending(self, job_class: JobClass) -> bool:
        return self._lanes[job_class].pending > 0

    def usage(self, now: float, *, owner: int | None = None, guild: GuildKey = None) -> float:
        """Recent GPU-seconds of a user (``owner``) or else of a server, decayed to ``now``."""
        if owner is not None:
            return decayed(self._user_usage.get(owner, NEG_INF), now, self.tau)
        return decayed(self._guild_usage.get(guild, NEG_INF), now, self.tau)

    # ------------------------------------------------------------------ changing
    def add(self, spec: JobSpec) -> bool:
        """Queue a job (False if it is queued already: adding is idempotent)."""
        if spec.job_id in self._jobs:
            return False
        self._jobs[spec.job_id] = spec
        lane = self._lanes[spec.job_class]
        guild = lane.guilds.get(spec.guild)
        if guild is None:
            guild = lane.guilds[spec.guild] = _GuildLane(next(self._activations))
        user = guild.users.get(spec.owner)
        if user is None:
            user = guild.users[spec.owner] = _UserLane(next(self._activations))
            self._user_lanes.setdefault(spec.owner, set()).add((spec.job_class, spec.guild))
        heapq.heappush(user.jobs, (-spec.priority, spec.seq, spec.job_id))
        user.pending += 1
        guild.pending += 1
        lane.pending += 1
        self._user_pending[spec.owner] += 1
        self._guild_pending[spec.guild] += 1
        if user.pending == 1:
            self._push_user(guild, spec.owner, user)
        if guild.pending == 1:
            self._push_guild(lane, spec.guild, guild)
        if spec.job_class is JobClass.INTERACTIVE and spec.batch_key is not None:
            owners = self._compat.setdefault(spec.batch_key, OrderedDict())
            owners.setdefault(spec.owner, deque()).append(spec.job_id)
        self.version += 1
        return True

    def remove(self, job_id: str) -> JobSpec | None:
        """Take a waiting job out (cancelled, or claimed elsewhere); None if it is not here."""
        spec = self._jobs.pop(job_id, None)
        if spec is not None:
            self._detach(spec)
            self.version += 1
        return spec

    def next_batch(self, now: float, limit: BatchLimit | int = 1) -> list[JobSpec]:
        """The next job to run and the compatible jobs that share its run (empty when idle).

        ``limit`` caps the images of the run (an int, or a rule per first job).  The jobs
        are removed and charged their estimated cost; call :meth:`settle` with the real one.
        """
        for job_class in _CLASSES:
            lane = self._lanes[job_class]
            if lane.pending == 0:
                continue
            guild_key, guild = self._peek_guild(lane)
            owner, user = self._peek_user(guild)
            first = self._pop_job(user)
            batch = [first]
            room = (limit(first) if callable(limit) else limit) - first.images
            if job_class is JobClass.INTERACTIVE and first.batch_key is not None and room > 0:
                batch.extend(self._riders(first.batch_key, room))
            for spec in batch:
                self._charge(spec, now)
            self.version += 1
            return batch
        return []

    def settle(self, job_id: str, seconds: float, now: float) -> None:
        """Replace a dispatched job's estimated cost by the GPU-seconds it really used."""
        owner_guild = self._inflight.pop(job_id, None)
        if owner_guild is None:
            return
        owner, guild, estimate, at = owner_guild
        self._user_usage[owner] = _log_add(_log_sub(self._user_usage.get(owner, NEG_INF), estimate, at, self.tau),
                                           seconds, now, self.tau)
        self._guild_usage[guild] = _log_add(
            _log_sub(self._guild_usage.get(guild, NEG_INF), estimate, at, self.tau), seconds, now, self.tau)
        self._repush(owner, guild)
        self.version += 1

    def rebase(self, charges: Iterable[tuple[int, GuildKey, float, float]]) -> None:
        """Replace everyone's recent GPU time by ``charges`` — (owner, server, seconds, at) —
        which count every dispatcher's jobs, not just this one's.

        Several processes dispatching from one store each keep a scheduler; each rebases on
        what the store says was used (finished jobs' measured time, running jobs' estimates)
        just before it dispatches, so a flood spread over three workers counts three times
        in every one of them.  The estimates of jobs dispatched here are in ``charges`` too:
        they are forgotten as in-flight (their :meth:`settle` is then a no-op).  O(charges +
        waiting users and servers).
        """
        self._user_usage.clear()
        self._guild_usage.clear()
        self._inflight.clear()
        for owner, guild, seconds, at in charges:
            amount = max(0.0, float(seconds))
            self._user_usage[owner] = _log_add(self._user_usage.get(owner, NEG_INF), amount, at, self.tau)
            self._guild_usage[guild] = _log_add(self._guild_usage.get(guild, NEG_INF), amount, at, self.tau)
        for lane in self._lanes.values():  # every key may have changed: fresh heaps
            for guild in lane.guilds.values():
                guild.heap = [(self._user_usage.get(o, NEG_INF), self._user_served.get(o, -1), u.activated, o)
                              for o, u in guild.users.items()]
                heapq.heapify(guild.heap)
            lane.heap = [(self._guild_usage.get(k, NEG_INF), self._guild_served.get(k, -1), g.activated, k)
                         for k, g in lane.guilds.items()]
            heapq.heapify(lane.heap)
        self.version += 1

    def charge(self, owner: int, guild: GuildKey, seconds: float, at: float) -> None:
        """Record GPU time used outside a dispatch (rebuilding usage after a restart)."""
        self._user_usage[owner] = _log_add(self._user_usage.get(owner, NEG_INF), seconds, at, self.tau)
        self._guild_usage[guild] = _log_add(self._guild_usage.get(guild, NEG_INF), seconds, at, self.tau)
        self._repush(owner, guild)
        self.version += 1

    # ------------------------------------------------------------------ order preview
    def order(self, now: float, limit: int | None = None) -> list[str]:
        """The order jobs would start in if nothing else arrived (batching left out).

        A simulation on copies (O(n log n)): positions and ETAs for ``brushwork queue`` and
        for the ``JobQueued`` events.  ``limit`` stops after that many jobs.
        """
        user_usage = dict(self._user_usage)
        guild_usage = dict(self._guild_usage)
        user_served = dict(self._user_served)
        guild_served = dict(self._guild_served)
        served = self._served
        out: list[str] = []
        for job_class in _CLASSES:
            lane = self._lanes[job_class]
            if lane.pending == 0:
                continue
            queues: dict[tuple[GuildKey, int], deque[JobSpec]] = {}
            user_heaps: dict[GuildKey, list[tuple[float, int, int, int]]] = {}
            guild_heap: list[tuple[float, int, int, GuildKey]] = []
            for guild_key, guild in lane.guilds.items():
                heap = []
                for owner, user in guild.users.items():
                    alive = sorted(entry for entry in user.jobs if entry[2] in self._jobs)
                    queues[(guild_key, owner)] = deque(self._jobs[entry[2]] for entry in alive)
                    heap.append((user_usage.get(owner, NEG_INF), user_served.get(owner, -1), user.activated, owner))
                heapq.heapify(heap)
                user_heaps[guild_key] = heap
                guild_heap.append((guild_usage.get(guild_key, NEG_INF), guild_served.get(guild_key, -1),
                                   guild.activated, guild_key))
            heapq.heapify(guild_heap)
            while guild_heap:
                g_usage, g_served, g_act, guild_key = heapq.heappop(guild_heap)
                if (g_usage, g_served) != (guild_usage.get(guild_key, NEG_INF), guild_served.get(guild_key, -1)):
                    heapq.heappush(guild_heap, (guild_usage.get(guild_key, NEG_INF),
                                                guild_served.get(guild_key, -1), g_act, guild_key))
                    continue
                heap = user_heaps[guild_key]
                while True:  # the guild's user with the least usage (keys refreshed lazily)
                    u_usage, u_served, u_act, owner = heapq.heappop(heap)
                    current = (user_usage.get(owner, NEG_INF), user_served.get(owner, -1))
                    if (u_usage, u_served) == current:
                        break
                    heapq.heappush(heap, (*current, u_act, owner))
                spec = queues[(guild_key, owner)].popleft()
                out.append(spec.job_id)
                if limit is not None and len(out) >= limit:
                    return out
                cost = self._cost(spec)
                served += 1
                user_usage[owner] = _log_add(user_usage.get(owner, NEG_INF), cost, now, self.tau)
                guild_usage[guild_key] = _log_add(guild_usage.get(guild_key, NEG_INF), cost, now, self.tau)
                user_served[owner] = guild_served[guild_key] = served
                if queues[(guild_key, owner)]:
                    heapq.heappush(heap, (user_usage[owner], served, u_act, owner))
                if heap:
                    heapq.heappush(guild_heap, (guild_usage[guild_key], served, g_act, guild_key))
        return out

    # ------------------------------------------------------------------ internals
    def _push_user(self, guild: _GuildLane, owner: int, user: _UserLane) -> None:
        if len(guild.heap) > 4 * len(guild.users) + 64:  # mostly stale entries: rebuild
            guild.heap = [(self._user_usage.get(o, NEG_INF), self._user_served.get(o, -1), u.activated, o)
                          for o, u in guild.users.items() if o != owner]
            heapq.heapify(guild.heap)
        heapq.heappush(guild.heap, (self._user_usage.get(owner, NEG_INF), self._user_served.get(owner, -1),
                                    user.activated, owner))

    def _push_guild(self, lane: _Lane, guild_key: GuildKey, guild: _GuildLane) -> None:
        if len(lane.heap) > 4 * len(lane.guilds) + 64:
            lane.heap = [(self._guild_usage.get(k, NEG_INF), self._guild_served.get(k, -1), g.activated, k)
                         for k, g in lane.guilds.items() if g is not guild]
            heapq.heapify(lane.heap)
        heapq.heappush(lane.heap, (self._guild_usage.get(guild_key, NEG_INF),
                                   self._guild_served.get(guild_key, -1), guild.activated, guild_key))

    def _peek_guild(self, lane: _Lane) -> tuple[GuildKey, _GuildLane]:
        heap = lane.heap
        while True:
            usage, served, activated, guild_key = heap[0]
            guild = lane.guilds.get(guild_key)
            if (guild is not None and guild.activated == activated
                    and usage == self._guild_usage.get(guild_key, NEG_INF)
                    and served == self._guild_served.get(guild_key, -1)):
                return guild_key, guild
            heapq.heappop(heap)  # stale: the guild left, or its key changed (a fresh entry exists)

    def _peek_user(self, guild: _GuildLane) -> tuple[int, _UserLane]:
        heap = guild.heap
        while True:
            usage, served, activated, owner = heap[0]
            user = guild.users.get(owner)
            if (user is not None and user.activated == activated
                    and usage == self._user_usage.get(owner, NEG_INF)
                    and served == self._user_served.get(owner, -1)):
                return owner, user
            heapq.heappop(heap)

    def _pop_job(self, user: _UserLane) -> JobSpec:
        while True:
            _, _, job_id = heapq.heappop(user.jobs)
            spec = self._jobs.pop(job_id, None)
            if spec is not None:  # else removed earlier (cancelled, or rode in a batch)
                self._detach(spec)
                return spec

    def _detach(self, spec: JobSpec) -> None:
        lane = self._lanes[spec.job_class]
        guild = lane.guilds[spec.guild]
        user = guild.users[spec.owner]
        user.pending -= 1
        guild.pending -= 1
        lane.pending -= 1
        self._user_pending[spec.owner] -= 1
        if not self._user_pending[spec.owner]:
            del self._user_pending[spec.owner]
        self._guild_pending[spec.guild] -= 1
        if not self._guild_pending[spec.guild]:
            del self._guild_pending[spec.guild]
        if user.pending == 0:
            del guild.users[spec.owner]
            lanes = self._user_lanes[spec.owner]
            lanes.discard((spec.job_class, spec.guild))
            if not lanes:
                del self._user_lanes[spec.owner]
        if guild.pending == 0:
            del lane.guilds[spec.guild]
            if lane.pending == 0:
                lane.heap.clear()  # every entry is stale

    def _riders(self, batch_key: str, room: int) -> list[JobSpec]:
        """Compatible jobs, one per owner per round (least recently taken owner first)."""
        owners = self._compat.get(batch_key)
        riders: list[JobSpec] = []
        misses = 0
        while owners and room > 0 and misses < len(owners):
            owner, ids = next(iter(owners.items()))
            while ids and ids[0] not in self._jobs:
                ids.popleft()  # dispatched or cancelled since it was indexed
            if not ids:
                del owners[owner]
                continue
            spec = self._jobs[ids[0]]
            owners.move_to_end(owner)
            if spec.images > room:
                misses += 1
                continue
            ids.popleft()
            del self._jobs[spec.job_id]
            self._detach(spec)
            riders.append(spec)
            room -= spec.images
            misses = 0
        if owners is not None and not owners:
            del self._compat[batch_key]
        return riders

    def _charge(self, spec: JobSpec, now: float) -> None:
        cost = max(0.0, float(self._cost(spec)))
        self._inflight[spec.job_id] = (spec.owner, spec.guild, cost, now)
        self._served += 1
        self._user_served[spec.owner] = self._served
        self._guild_served[spec.guild] = self._served
        self._user_usage[spec.owner] = _log_add(self._user_usage.get(spec.owner, NEG_INF), cost, now, self.tau)
        self._guild_usage[spec.guild] = _log_add(self._guild_usage.get(spec.guild, NEG_INF), cost, now, self.tau)
        self._repush(spec.owner, spec.guild)

    def _repush(self, owner: int, guild_key: GuildKey) -> None:
        """Fresh heap entries wherever this user or server waits (old ones turn stale)."""
        for job_class, user_guild in self._user_lanes.get(owner, ()):
            guild = self._lanes[job_class].guilds[user_guild]
            self._push_user(guild, owner, guild.users[owner])
        for job_class in _CLASSES:
            lane = self._lanes[job_class]
            guild = lane.guilds.get(guild_key)
            if guild is not None:
                self._push_guild(lane, guild_key, guild)

    def load(self, specs: Iterable[JobSpec]) -> int:
        """Add many jobs (start-up, resync); returns how many were new."""
        return sum(1 for spec in specs if self.add(spec))


__all__ = ["BatchLimit", "FairScheduler", "decayed"]
