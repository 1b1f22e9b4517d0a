"""Click analytics, off the redirect's path: counts in memory, a durable log, and an aggregator.

A redirect only counts itself in memory (identical clicks of one flush window share a count). Every
FLUSH_INTERVAL_S the flusher moves the counts into a durable log: a Redis Stream read by a consumer group
(redis engine), or the database's `clicks_queue` table (the embedded engine, and the redis engine while Redis is
unreachable), and emits `url.clicked` for them. The aggregator folds the log into `urls.click_count` and
`url_clicks_daily` in batches. Folding the table is exactly-once (its rows are deleted by the transaction that
counts them); the stream is at-least-once (entries are acknowledged after that transaction commits, and the
pending entries of a consumer that died are claimed by another after RECLAIM_IDLE_S). Lost are only the clicks
still in memory when the process is killed rather than stopped, and stream entries trimmed by STREAM_MAXLEN
when no aggregator has run for a long time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import ua_parser

from gateway import metrics
from gateway.engines.streams import ensure_group
from gateway.events import EventBus, UrlClicked
from gateway.exceptions import StorageError
from gateway.shortener.redis_calls import RedisCalls
from gateway.shortener.store import Click, UrlStore

STREAM = "gw:shortener:clicks"
GROUP = "aggregators"
#: An approximate cap, so that a stream nobody aggregates cannot take all of Redis's memory.
STREAM_MAXLEN = 100_000
#: Click groups per stream entry, and stream entries per aggregator read.
STREAM_ENTRY_CLICKS = 500
STREAM_READ_COUNT = 20
FLUSH_INTERVAL_S = 0.25
AGGREGATE_INTERVAL_S = 0.5
FOLD_BATCH = 2000
BUFFER_LIMIT = 100_000
RECLAIM_IDLE_S = 30.0
LOG_INTERVAL_S = 60.0
_BOTS = ("bot", "crawl", "spider", "slurp", "curl/", "wget/", "python-", "httpx", "go-http-client", "okhttp", "java/")
_MOBILE = ("mobi", "android", "iphone", "ipad", "ipod")
_DESKTOP = ("windows nt", "macintosh", "x11", "cros", "linux x86_64")
logger = logging.getLogger("gateway.shortener")

PendingKey = tuple[str, bytes | None, bytes | None]


def agent_class(user_agent: str | None) -> str:
    """bot, mobile, desktop or other, from the User-Agent alone (as Shlink and Kutt do: a hint, not proof)."""
    if not user_agent:
        return "other"
    agent = user_agent.lower()
    if any(marker in agent for marker in _BOTS):
        return "bot"
    if any(marker in agent for marker in _MOBILE):
        return "mobile"
    if any(marker in agent for marker in _DESKTOP):
        return "desktop"
    return "other"


def referrer_host(referer: str | None) -> str | None:
    if not referer:
        return None
    try:
        host = urlsplit(referer).hostname
    except ValueError:
        return None
    return host[:253].replace("\t", "") if host else None


#: Browser family of a User-Agent nobody sent, and of one left unparsed past a flush's budget.
NO_BROWSER = "Other"
UNPARSED_BROWSER = "(unparsed)"
#: New User-Agents parsed per flush (about 0.1 ms each, on the event loop): a flood of distinct agents costs a
#: flush at most ~30 ms; past the budget a click's browser is UNPARSED_BROWSER (counted, never dropped).
PARSE_BUDGET = 256


def browser_family(user_agent: str | None) -> str:
    """The browser family ("Chrome", "Mobile Safari", "Firefox", "curl", "Googlebot", ...) by uap-core's rules."""
    if not user_agent:
        return NO_BROWSER
    found = ua_parser.parse_user_agent(user_agent)
    return found.family[:64] if found is not None else NO_BROWSER


class _BrowserCache:
    """browser_family per raw User-Agent, remembered, with at most `budget` new parses per `fresh()` period."""

    def __init__(self, size: int = 4096, budget: int = PARSE_BUDGET) -> None:
        self.size = size
        self.budget = budget
        self._known: dict[bytes | None, str] = {}
        self._left = budget

    def fresh(self) -> None:
        self._left = self.budget

    def __call__(self, raw: bytes | None) -> str:
        family = self._known.get(raw)
        if family is not None:
            return family
        if raw is None:
            return NO_BROWSER
        if self._left <= 0:
            metrics.SHORTENER_UNPARSED_AGENTS.inc()
            return UNPARSED_BROWSER
        self._left -= 1
        family = browser_family(raw.decode("latin-1"))
        if len(self._known) >= self.size:
            self._known.clear()
        self._known[raw] = family
        return family


_browser_of = _BrowserCache()


@functools.lru_cache(maxsize=4096)
def _agent_of(raw: bytes | None) -> str:
    return agent_class(raw.decode("latin-1") if raw is not None else None)


@functools.lru_cache(maxsize=4096)
def _referrer_of(raw: bytes | None) -> str | None:
    return referrer_host(raw.decode("latin-1") if raw is not None else None)


class ClickRecorder:
    """The redirect's side: one dict update, nothing awaited.

    Identical clicks (same code, Referer and User-Agent) of one flush window share an entry that counts them, so a
    hot code costs the flusher one entry, not one per redirect. Bounded: past `limit` entries, new ones are
    dropped and counted (that only happens while no storage takes the clicks).
    """

    def __init__(self, limit: int = BUFFER_LIMIT) -> None:
        self.limit = limit
        #: key → [time of the first click, number of clicks]
        self.pending: dict[PendingKey, list[float]] = {}

    def record(self, code: str, at: float, referer: bytes | None, user_agent: bytes | None) -> None:
        key = (code, referer, user_agent)
        entry = self.pending.get(key)
        if entry is not None:
            entry[1] += 1
        elif len(self.pending) < self.limit:
            self.pending[key] = [at, 1]
        else:
            metrics.SHORTENER_CLICKS_DROPPED.inc()

    def take(self) -> dict[PendingKey, list[float]]:
        taken, self.pending = self.pending, {}
        return taken

    def put_back(self, taken: dict[PendingKey, list[float]]) -> None:
        """Return clicks that could not be stored, merged with the ones recorded since."""
        for key, (at, count) in taken.items():
            entry = self.pending.get(key)
            if entry is not None:
                entry[0], entry[1] = min(entry[0], at), entry[1] + count
            elif len(self.pending) < self.limit:
                self.pending[key] = [at, count]
            else:
                metrics.SHORTENER_CLICKS_DROPPED.inc(count)

    def __len__(self) -> int:
        return int(sum(entry[1] for entry in self.pending.values()))


def group(taken: dict[PendingKey, list[float]]) -> list[Click]:
    """Recorded clicks as the aggregator wants them: per code, referrer host, agent class and browser."""
    _browser_of.fresh()
    groups: dict[tuple[str, str | None, str, str], list[float]] = {}
    for (code, referer, user_agent), (at, count) in taken.items():
        key = (code, _referrer_of(referer), _agent_of(user_agent), _browser_of(user_agent))
        entry = groups.get(key)
        if entry is None:
            groups[key] = [at, count]
        else:
            entry[0], entry[1] = min(entry[0], at), entry[1] + count
    return [
        Click(code, at, referrer, agent, int(count), browser)
        for (code, referrer, agent, browser), (at, count) in groups.items()
    ]


def encode_clicks(clicks: Sequence[Click]) -> str:
    """Clicks as the text of one stream entry: a line each, code, time, referrer, agent, count, browser by tabs."""
    return "\n".join(
        f"{c.short_code}\t{c.at!r}\t{c.referrer or ''}\t{c.agent}\t{c.count}\t{_tabless(c.browser)}" for c in clicks
    )


def _tabless(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")


def decode_clicks(text: str) -> list[Click]:
    clicks = []
    for line in text.splitlines():
        # Five fields: an entry a gateway before browsers wrote (a rolling upgrade); it counts as NO_BROWSER.
        code, at, referrer, agent, count, *browser = line.split("\t")
        family = browser[0] if browser else NO_BROWSER
        clicks.append(Click(code, float(at), referrer or None, agent, int(count), family))
    return clicks


class ClickPipeline:
    def __init__(
        self,
        *,
        store: UrlStore,
        recorder: ClickRecorder,
        events: EventBus,
        redis: RedisCalls | None,
        consumer: str | None = None,
        reclaim_idle_s: float = RECLAIM_IDLE_S,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.events = events
        self.redis = redis
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.reclaim_idle_s = reclaim_idle_s
        self._stop = asyncio.Event()
        self._group_ready = False
        self._last_reclaim = 0.0
        self._last_log = -LOG_INTERVAL_S
        self._carry: list[tuple[bytes, dict[bytes, bytes]]] = []

    async def flush(self) -> int:
        """Move the recorded clicks to the durable log; what no storage takes goes back to the recorder."""
        taken = self.recorder.take()
        metrics.SHORTENER_CLICK_BUFFER.set(0)
        if not taken:
            return 0
        clicks = group(taken)
        try:
            await self._append(clicks)
        except StorageError as exc:
            self.recorder.put_back(taken)
            metrics.SHORTENER_CLICK_BUFFER.set(len(self.recorder))
            self._log(f"clicks kept in memory, neither the stream nor the queue took them: {exc}")
            return 0
        for click in clicks:
            self.events.emit(
                UrlClicked(
                    short_code=click.short_code,
                    at=click.at,
                    referrer=click.referrer,
                    agent=click.agent,
                    count=click.count,
                )
            )
        return len(clicks)

    async def _append(self, clicks: list[Click]) -> None:
        if self.redis is not None:
            try:
                await self.redis.call(lambda client: _xadd(client, clicks))
                return
            except StorageError:
                pass  # Redis is down: the database queue keeps them until the aggregator gets to them
        await self.store.enqueue(clicks)

    async def aggregate(self) -> int:
        """One pass: fold what the log holds now (the local queue, and the stream in redis mode)."""
        folded = 0
        if self.redis is not None:
            try:
                folded += await self._fold_stream()
            except StorageError as exc:
                self._group_ready = False
                self._log(f"click stream not aggregated: {exc}")
        while True:
            clicks = await self.store.fold_queue(FOLD_BATCH)
            _observe_lag(clicks)
            folded += len(clicks)
            if len(clicks) < FOLD_BATCH:
                return folded

    async def _fold_stream(self) -> int:
        assert self.redis is not None
        if not self._group_ready:
            await self.redis.call(_create_group)
            self._group_ready = True
        # Entries read by a pass whose transaction failed are folded first, before any new ones.
        entries, self._carry = self._carry, []
        now = time.monotonic()
        if now - self._last_reclaim >= min(self.reclaim_idle_s, 5.0):
            self._last_reclaim = now
            claimed = await self.redis.call(
                lambda client: client.xautoclaim(
                    STREAM, GROUP, self.consumer, min_idle_time=int(self.reclaim_idle_s * 1000), count=STREAM_READ_COUNT
                )
            )
            entries += [entry for entry in claimed[1] if entry[1]]
        read = await self.redis.call(self._read)
        for _stream, stream_entries in read or ():
            entries += stream_entries
        if not entries:
            return 0
        clicks = [click for _id, fields in entries for click in decode_clicks(fields[b"clicks"].decode())]
        try:
            await self.store.add_counts(clicks)
        except StorageError:
            self._carry = entries
            raise
        _observe_lag(clicks)
        ids = [entry_id for entry_id, _fields in entries]
        await self.redis.call(lambda client: _ack(client, ids))
        return len(clicks)

    async def _read(self, client: Any) -> Any:
        return await client.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=STREAM_READ_COUNT)

    async def run_flusher(self) -> None:
        await self._every(FLUSH_INTERVAL_S, self.flush)

    async def run_aggregator(self) -> None:
        await self._every(AGGREGATE_INTERVAL_S, self.aggregate)

    async def _every(self, interval_s: float, work: Callable[[], Awaitable[int]]) -> None:
        """Run `work` until stopped; a stop is only seen between passes, so a pass is never cut in half."""
        while not self._stop.is_set():
            try:
                done = await work()
            except StorageError as exc:
                self._log(f"click pipeline: {exc}")
                done = 0
            except Exception:
                logger.exception("click pipeline failed; retrying")
                done = 0
            if done >= FOLD_BATCH:
                continue
            try:
                async with asyncio.timeout(interval_s):
                    await self._stop.wait()
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()

    def _log(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_log >= LOG_INTERVAL_S:
            self._last_log = now
            logger.warning(message)


def _observe_lag(clicks: Sequence[Click]) -> None:
    now = time.time()
    for click in clicks:
        metrics.SHORTENER_CLICK_LAG.observe(max(0.0, now - click.at))


async def _xadd(client: Any, clicks: list[Click]) -> None:
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(clicks), STREAM_ENTRY_CLICKS):
        text = encode_clicks(clicks[start : start + STREAM_ENTRY_CLICKS])
        pipe.xadd(STREAM, {"clicks": text}, maxlen=STREAM_MAXLEN, approximate=True)
    await pipe.execute()


async def _ack(client: Any, ids: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.xack(STREAM, GROUP, *ids)
    pipe.xdel(STREAM, *ids)
    await pipe.execute()


async def _create_group(client: Any) -> None:
    await ensure_group(client, STREAM, GROUP)
