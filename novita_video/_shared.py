"""Many processes, one Novita account: rates, 429s and webhook events shared through Redis.

Novita limits an account, not a process: four workers each keeping to 20 submits a
minute send 80. With ``Client(redis_url=...)`` (or ``NOVITA_REDIS_URL``) every client of
one API key shares, through one Redis:

* **each rate limit** (the submit rate of each model, and the poll budget when
  ``poll_rpm`` is a number): one GCRA schedule per limit, in one Lua script, so that all
  workers together send requests evenly spaced at the account's rate, as one client
  would. A request reserves the next free slot (the schedule's "theoretical arrival
  time") and waits for it; nothing is saved up while idle.
* **the slow-down after a 429**, in the same script and the same step: one worker's 429
  pauses every worker and lowers the shared rate (:class:`AdaptiveRate`, as a single
  client does), and the rate is earned back by all of them together.
* **webhook events**: the worker that receives one publishes it on a channel, and the
  worker whose ``wait`` or batch awaits that task acts on it at once; polls stay the
  fallback.

Why a script of our own rather than a rate-limit library: the libraries for Redis
answer "may I send now?" within a window (fixed, moving, token bucket), which lets a
burst through at each window's start and cannot tell a worker *when* its turn comes; and
none keeps the adaptive slow-down of a 429 in the same atomic step as the reservation.
Forty lines of Lua do both, against Redis's own clock (``TIME``), which every worker
shares whatever its machine's clock says.

What Redis holds, under ``novita-video:<account>:``, where ``<account>`` is a hash of the
API key (never the key): ``limit:<name>`` (a hash per limit: the next free slot, the
rate, the pause, the slow-down generation, the run of accepted requests),
``workers`` (the processes alive, a heartbeat every 2 s) and the channel ``events``.
Every key expires ten minutes after its last use. Nothing secret is stored.

When Redis fails (down at start, lost mid-run, too slow: an operation gets
``OP_TIMEOUT``), the client logs one warning and keeps going on local limits, each at
its share of the rate (the configured rate divided by the workers last seen alive, or
by ``UNKNOWN_WORKERS`` if none were ever seen), checks again every few seconds, and
rejoins (one info line) when Redis answers. Redis only ever gates requests: it never
decides whether a POST is repeated, and losing it loses no outcome.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from ._clock import Clock
from ._limits import AdaptiveRate, RateLimiter, too_far

__all__ = ["Coordinator", "SharedLimiter"]

logger = logging.getLogger("novita_video")

T = TypeVar("T")

#: Seconds one Redis operation may take before Redis counts as failed.
OP_TIMEOUT = 0.5
#: Seconds between heartbeats (and, while Redis is gone, between tries to rejoin).
HEARTBEAT = 2.0
#: A worker not heard from for this long is gone.
WORKER_TTL = 10.0
#: Milliseconds a key lives after its last use.
KEY_TTL_MS = 600_000
#: The share of a rate each worker takes when Redis fails before any worker was seen.
UNKNOWN_WORKERS = 4
#: Webhook events waiting to be published, at most (older ones are dropped: polls remain).
MAX_QUEUED_EVENTS = 1000

# One step of one limit, atomically, on Redis's clock. KEYS[1] is the limit's hash,
# KEYS[2] the set of workers alive; ARGV: the operation, the configured rate a minute,
# then the operation's own, and last the keys' time to live. It answers {milliseconds
# to wait, the slow-down generation, the rate in force, the workers alive, and 1 when
# an acquire with a most to wait (ms, -1: none) was refused and reserved nothing}.
_SCRIPT = """
local key, op, configured = KEYS[1], ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', key, 'tat', 'rate', 'gen', 'paused', 'configured',
                     'throttled_at', 'streak', 'good', 'too_fast')
local tat, rate, gen = tonumber(s[1]) or 0, tonumber(s[2]) or configured, tonumber(s[3]) or 0
local paused, throttled_at = tonumber(s[4]) or 0, tonumber(s[6]) or 0
local streak, good, too_fast = tonumber(s[7]) or 0, tonumber(s[8]), tonumber(s[9])
if tonumber(s[5]) ~= configured then
  rate, good, too_fast = configured, nil, nil
end
local wait, refused = 0, 0
if op == 'acquire' then
  local slot = math.max(tat, now, paused)
  wait = slot - now
  local most = tonumber(ARGV[4])
  if #ARGV >= 5 and most >= 0 and wait > most then
    refused = 1
  else
    tat = slot + 60000 * (1 + tonumber(ARGV[3])) / rate
  end
elseif op == 'throttled' then
  paused = math.max(paused, now + tonumber(ARGV[3]))
  throttled_at, streak = now, 0
  if tonumber(ARGV[4]) == gen then
    gen = gen + 1
    if too_fast == nil or rate < too_fast then too_fast = rate end
    if good ~= nil and good < rate then
      rate = good
    else
      rate, good = math.max(configured * tonumber(ARGV[6]), rate * tonumber(ARGV[5])), nil
    end
  end
elseif op == 'accepted' then
  local before = streak
  streak = streak + tonumber(ARGV[3])
  local every, forget = tonumber(ARGV[4]), tonumber(ARGV[8])
  if math.floor(streak / forget) > math.floor(before / forget) then too_fast = nil end
  if math.floor(streak / every) > math.floor(before / every) then
    good = rate
    if now - throttled_at >= tonumber(ARGV[5]) then
      local ceiling = configured
      if too_fast ~= nil then ceiling = math.min(ceiling, too_fast * tonumber(ARGV[7])) end
      rate = math.max(rate, math.min(ceiling, rate * tonumber(ARGV[6])))
    end
  end
end
redis.call('HSET', key, 'tat', tat, 'rate', rate, 'gen', gen, 'paused', paused,
           'configured', configured, 'throttled_at', throttled_at, 'streak', streak)
if good ~= nil then redis.call('HSET', key, 'good', good) else redis.call('HDEL', key, 'good') end
if too_fast ~= nil then redis.call('HSET', key, 'too_fast', too_fast)
else redis.call('HDEL', key, 'too_fast') end
redis.call('PEXPIRE', key, tonumber(ARGV[#ARGV]))
return {math.ceil(wait), gen, tostring(rate), redis.call('ZCARD', KEYS[2]), refused}
"""


def account(api_key: str) -> str:
    """The account's name in Redis: a hash of the key, never the key."""
    return hashlib.sha256(b"novita-video account\0" + api_key.encode()).hexdigest()[:24]


def where(url: str) -> str:
    """``url`` without its password, for log lines."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"


class Coordinator:
    """One client's link, through Redis, to every other client of the same account.

    Run :meth:`run` in the client's task group. :meth:`limiter` makes the limits it
    shares; :meth:`publish` sends a webhook event to the other workers, whose clients
    get it through ``on_event``.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str,
        adaptive: AdaptiveRate,
        clock: Clock,
        op_timeout: float = OP_TIMEOUT,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.where = where(url)
        self._prefix = f"novita-video:{account(api_key)}"
        self._adaptive = adaptive
        self._clock = clock
        self._op_timeout = op_timeout
        self._heartbeat = heartbeat
        #: This process's name among the workers.
        self.worker = uuid.uuid4().hex
        #: Whether Redis answers now (the limits are shared).
        self.healthy = False
        #: Workers alive at the last heartbeat (``None``: never seen).
        self.workers: int | None = None
        #: Outages so far: the event listener subscribes again after each.
        self.outages = 0
        #: Called with the body of each webhook event another worker received.
        self.on_event: Callable[[bytes], None] | None = None
        try:
            # Parses the URL now (a bad one is the caller's error), connects only when used.
            self._redis: aioredis.Redis = aioredis.Redis.from_url(
                url,
                socket_timeout=op_timeout,
                socket_connect_timeout=op_timeout,
                # This module decides what a failure means; redis-py must not retry for it.
                retry=None,
            )
        except ValueError as error:
            raise ValueError(f"not a Redis URL redis-py can use ({error})") from None
        self._script: Any = self._redis.register_script(_SCRIPT)
        self._accepted: dict[str, tuple[float, int]] = {}
        self._throttles: deque[tuple[str, float, float, int]] = deque()
        self._events: deque[bytes] = deque(maxlen=MAX_QUEUED_EVENTS)
        self._wake = anyio.Event()
        self._warned = False
        self._ran = anyio.Event()

    def __repr__(self) -> str:
        state = "shared" if self.healthy else "local"
        return f"<novita_video Coordinator {self.where} {state} workers={self.workers}>"

    def key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    @property
    def share(self) -> int:
        """How many workers a rate is split among while Redis is gone."""
        return self.workers if self.workers else UNKNOWN_WORKERS

    def limiter(self, name: str, per_minute: float) -> SharedLimiter:
        """A limiter of ``per_minute`` that every worker of the account shares."""
        return SharedLimiter(self, name, per_minute, clock=self._clock, adaptive=self._adaptive)

    # Lifetime.

    async def run(self) -> None:
        """Connect, keep the heartbeat, flush what the limiters told, listen for events;
        until cancelled. Redis failing is never an error here (see the module docstring)."""
        try:
            await self._rejoin()
            self._ran.set()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._maintain, name="novita_video redis heartbeat")
                tasks.start_soon(self._flush, name="novita_video redis flush")
                tasks.start_soon(self._listen, name="novita_video redis events")
        except Exception as error:  # a bug here must not take the client down: go local
            self._lost(error)
            logger.exception("sharing through Redis stopped for good in this client")
            self._ran.set()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                if self.healthy:
                    await self._call(lambda r: r.zrem(self.key("workers"), self.worker))
                with anyio.move_on_after(self._op_timeout):
                    await self._redis.aclose()

    async def started(self) -> None:
        """Return once the first try to reach Redis ended (either way)."""
        await self._ran.wait()

    async def _call(self, operation: Callable[[aioredis.Redis], Awaitable[T]]) -> T | None:
        """``operation``'s answer, or ``None`` when Redis failed (which is noted)."""
        try:
            with anyio.fail_after(self._op_timeout):
                return await operation(self._redis)
        except (RedisError, OSError, TimeoutError) as error:
            self._lost(error)
            return None

    def _lost(self, error: BaseException) -> None:
        if self.healthy:
            self.outages += 1
        self.healthy = False
        if not self._warned:
            self._warned = True
            logger.warning(
                "Redis at %s failed (%s: %s): limits are not shared now; each rate runs "
                "here at 1/%d of itself until Redis answers again",
                self.where,
                type(error).__name__,
                error,
                self.share,
            )

    async def _rejoin(self) -> None:
        # A heartbeat that gets through: Redis answers. Until then every limit stays
        # local, so no request waits on a Redis that is still gone.
        if await self._beat():
            self.healthy = True
            if self._warned:
                self._warned = False
                logger.info("Redis at %s answers again: limits are shared again", self.where)

    async def _beat(self) -> bool:
        """Say this worker is alive and count the workers; whether Redis answered."""
        now = time.time()
        workers = self.key("workers")

        async def beat(r: aioredis.Redis) -> int:
            async with r.pipeline(transaction=True) as pipe:
                pipe.zadd(workers, {self.worker: now})
                pipe.zremrangebyscore(workers, "-inf", now - WORKER_TTL)
                pipe.zcard(workers)
                pipe.pexpire(workers, KEY_TTL_MS)
                answers = await pipe.execute()
            return int(answers[2])

        count = await self._call(beat)
        if count is None:
            return False
        self.workers = max(1, count)
        return True

    async def _maintain(self) -> None:
        while True:
            await anyio.sleep(self._heartbeat)
            if self.healthy:
                await self._beat()
            else:
                await self._rejoin()

    # The limits' steps.

    async def step(
        self, name: str, per_minute: float, op: str, *args: float
    ) -> tuple[float, int, float, bool] | None:
        """One step of the script for limit ``name``: ``(seconds to wait, generation,
        rate a minute, refused)``, or ``None`` if Redis failed (the caller goes local)."""
        if not self.healthy:
            return None
        script = self._script
        argv = [op, repr(float(per_minute)), *(repr(float(arg)) for arg in args), KEY_TTL_MS]
        keys = [self.key("limit", name), self.key("workers")]
        answer = await self._call(lambda r: script(keys=keys, args=argv))
        if answer is None:
            return None
        wait_ms, generation, rate, workers, *refused = answer
        # Every step counts the workers too: the share to take if Redis goes away next.
        self.workers = max(1, int(workers))
        return max(0, int(wait_ms)) / 1000.0, int(generation), float(rate), refused == [1]

    def accepted(self, name: str, per_minute: float) -> None:
        """A request of limit ``name`` was accepted (sent with the next flush)."""
        _, count = self._accepted.get(name, (per_minute, 0))
        self._accepted[name] = (per_minute, count + 1)

    def throttled(self, name: str, per_minute: float, pause: float, ticket: int) -> None:
        """A request of limit ``name`` drew a 429: tell every worker now."""
        self._throttles.append((name, per_minute, pause, ticket))
        self._wake.set()

    def publish(self, body: bytes) -> None:
        """Send a webhook event's body to the other workers (soon, and only if Redis is up)."""
        if self.healthy:
            self._events.append(body)
            self._wake.set()

    async def _flush(self) -> None:
        adaptive = self._adaptive
        while True:
            with anyio.move_on_after(1.0):
                await self._wake.wait()
            self._wake = anyio.Event()
            while self._throttles:
                name, per_minute, pause, ticket = self._throttles.popleft()
                await self.step(
                    name,
                    per_minute,
                    "throttled",
                    pause * 1000,
                    ticket,
                    adaptive.decrease,
                    adaptive.floor,
                )
            accepted, self._accepted = self._accepted, {}
            for name, (per_minute, count) in accepted.items():
                await self.step(
                    name,
                    per_minute,
                    "accepted",
                    count,
                    adaptive.recover_after,
                    adaptive.recover_interval * 1000,
                    adaptive.increase,
                    adaptive.probe_margin,
                    adaptive.forget_after,
                )
            while self._events and self.healthy:
                await self._publish(self.worker.encode() + b"\n" + self._events.popleft())

    async def _publish(self, message: bytes) -> None:
        channel = self.key("events")

        async def publish(r: aioredis.Redis) -> int:
            return int(await r.publish(channel, message))

        await self._call(publish)

    async def _listen(self) -> None:
        channel = self.key("events")
        while True:
            if not self.healthy:
                await anyio.sleep(0.25)
                continue
            outages = self.outages
            pubsub: PubSub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                with anyio.fail_after(self._op_timeout):
                    await pubsub.subscribe(channel)
                while self.healthy and self.outages == outages:
                    with anyio.fail_after(1.0 + self._op_timeout):
                        message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._deliver(message.get("data"))
            except (RedisError, OSError, TimeoutError) as error:
                self._lost(error)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._op_timeout):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed in redis 8

    def _deliver(self, data: object) -> None:
        if not isinstance(data, bytes):
            return
        sender, _, body = data.partition(b"\n")
        if sender == self.worker.encode() or self.on_event is None:
            return  # its own: acted on where it arrived
        try:
            self.on_event(body)
        except Exception:
            logger.warning("a webhook event from another worker could not be read", exc_info=True)


class SharedLimiter:
    """A rate limit shared by every worker of the account: the interface of
    :class:`~novita_video._limits.RateLimiter`, its state in Redis, and a local
    :class:`RateLimiter` at this worker's share of the rate while Redis is gone."""

    def __init__(
        self,
        coordinator: Coordinator,
        name: str,
        per_minute: float,
        *,
        clock: Clock,
        adaptive: AdaptiveRate,
    ) -> None:
        if not (per_minute > 0 and math.isfinite(per_minute)):
            raise ValueError(f"a shared rate must be a positive number, not {per_minute!r}")
        self._coordinator = coordinator
        self._name = name
        self._configured = float(per_minute)
        self._clock = clock
        self._adaptive = adaptive
        self._rate = float(per_minute)
        self._paused_until = -math.inf  # after a 429 here, before Redis has it
        self._local: RateLimiter | None = None
        self._local_share = 0
        self._shared = True  # whether the last turn was given by Redis

    def __repr__(self) -> str:
        return f"SharedLimiter({self._name!r}, per_minute={self.per_minute!r})"

    @property
    def per_minute(self) -> float | None:
        """The rate in force for the whole account (while Redis is gone: this worker's share)."""
        if not self._shared and self._local is not None:
            return self._local.per_minute
        return self._rate

    def _fallback(self) -> RateLimiter:
        share = self._coordinator.share
        if self._local is None or share != self._local_share:
            self._local_share = share
            self._local = RateLimiter(
                self._configured / share, clock=self._clock, adaptive=self._adaptive
            )
        return self._local

    async def acquire(self, max_wait: float | None = None) -> int:
        """Wait for this request's turn among all workers; its ticket. A turn further
        off than ``max_wait`` seconds (the shared schedule's, counting every worker's
        reservations) raises :class:`~novita_video.BackPressureError` and reserves none."""
        most = -1.0 if max_wait is None else max_wait * 1000
        answer = await self._coordinator.step(
            self._name, self._configured, "acquire", self._adaptive.margin, most
        )
        if answer is not None:
            wait, generation, rate, refused = answer
            self._shared, self._rate = True, rate
            wait = max(wait, self._paused_until - self._clock.now())
            if max_wait is not None and (refused or wait > max_wait):
                # Past a local pause the slot reserved goes unused: less sent, never more.
                raise too_far(wait, max_wait)
            await self._clock.sleep(wait)
            return generation
        self._shared = False
        # Local tickets are negative, so a 429 to one is never taken for a shared one.
        return -1 - await self._fallback().acquire(max_wait)

    def accepted(self) -> None:
        """The server accepted a request: counted towards earning the rate back."""
        if self._shared:
            self._coordinator.accepted(self._name, self._configured)
        elif self._local is not None:
            self._local.accepted()

    def throttled(self, pause: float, ticket: int | None = None) -> None:
        """A 429: every worker pauses for ``pause`` and the shared rate drops."""
        if ticket is not None and ticket < 0:
            if self._local is not None:
                self._local.throttled(pause, -1 - ticket)
            return
        self._coordinator.throttled(self._name, self._configured, pause, ticket or 0)
        # This worker holds back at once, not only once the flush reached Redis.
        self._paused_until = max(self._paused_until, self._clock.now() + pause)
