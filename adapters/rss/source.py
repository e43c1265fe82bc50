"""``RssNewsSource``: the :class:`engine.ports.NewsSource` that polls RSS/Atom feeds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from adapters.rss.client import RssClient
from adapters.rss.config import RssSettings
from adapters.rss.parsing import parse_feed
from engine.errors import InvalidInput, TransientError
from engine.events import DeadLetter, NewsItem
from engine.ports import Clock, DeadLetterSink
from engine.retry import Backoff, retry_transient

log = logging.getLogger(__name__)

SOURCE_NAME = "rss"


@dataclass
class PollStats:
    polls: int = 0
    fetched: int = 0
    not_modified: int = 0
    items: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    failures: int = 0


class RssNewsSource:
    """Polls every feed each ``poll_interval_s``; yields news never seen before, oldest first.

    De-duplicates by guid/id, else link, across feeds and polls. Entries that cannot become news
    (no title, no usable date) are dead-lettered once each, with the reason.
    """

    def __init__(
        self,
        settings: RssSettings,
        dead_letters: DeadLetterSink,
        *,
        clock: Clock,
        client: RssClient | None = None,
    ) -> None:
        self.settings = settings
        self.dead_letters = dead_letters
        self.clock = clock
        self.client = client or RssClient(settings)
        self.stats = PollStats()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._closed = asyncio.Event()
        self._backoff = Backoff(initial_s=settings.backoff_initial_s, maximum_s=settings.poll_interval_s)
        self._reached = False  # some feed answered once: from then on an outage is waited out, never given up on
        self._unreached_cycles = 0
        self._last_error = ""

    async def poll_once(self) -> list[NewsItem]:
        """One cycle over every feed: the new items, oldest first."""
        self.stats.polls += 1
        fresh: list[NewsItem] = []
        for url in self.settings.feeds:
            try:
                result = await retry_transient(
                    lambda url=url: self.client.get(url),  # type: ignore[misc]  # binds the loop variable
                    attempts=self.settings.attempts,
                    backoff=self._backoff,
                )
            except TransientError as exc:
                # The feed is down for now; the next cycle tries again. Nothing was received to lose.
                self.stats.failures += 1
                self._last_error = f"{url}: {exc}"
                log.warning("rss poll failed: %s", exc)
                continue
            except InvalidInput as exc:
                await self._dead_letter(exc.reason, url)
                continue
            self._reached = True
            if result.not_modified or result.body is None:
                self.stats.not_modified += 1
                continue
            self.stats.fetched += 1
            try:
                parsed = parse_feed(result.body, url, self.clock.now_ms())
            except InvalidInput as exc:
                self.client.forget_validators(url)  # or a 304 would keep answering for the broken page
                await self._dead_letter(exc.reason, result.body.decode("utf-8", errors="replace"))
                continue
            for entry in parsed:
                if isinstance(entry, InvalidInput):
                    # Key on the raw entry so an unchanged bad entry is reported once, not every poll.
                    if self._remember(f"bad:{entry.raw}"):
                        await self._dead_letter(entry.reason, str(entry.raw))
                elif self._remember(entry.id):
                    fresh.append(entry)
                else:
                    self.stats.duplicates += 1
        fresh.sort(key=lambda item: item.ts_event)  # stable: feed order breaks ties
        self.stats.items += len(fresh)
        return fresh

    async def events(self) -> AsyncIterator[NewsItem]:
        """New items as they appear, until :meth:`close`."""
        while not self._closed.is_set():
            for item in await self.poll_once():
                yield item
            self._give_up_if_never_reached()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self.settings.poll_interval_s)

    async def close(self) -> None:
        self._closed.set()
        await self.client.close()

    def _give_up_if_never_reached(self) -> None:
        limit = self.settings.max_connect_attempts
        if self._reached or limit is None:
            return
        self._unreached_cycles += 1
        if self._unreached_cycles >= limit:
            raise TransientError(f"rss: gave up after {self._unreached_cycles} polls in which no feed could be "
                                 f"reached (last: {self._last_error})")

    def _remember(self, key: str) -> bool:
        """True when ``key`` is new; the memory is bounded to the most recent ``max_seen`` keys."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self.settings.max_seen:
            self._seen.popitem(last=False)
        return True

    async def _dead_letter(self, reason: str, raw: str) -> None:
        self.stats.dead_letters += 1
        await self.dead_letters.publish(
            DeadLetter(reason=reason, source=SOURCE_NAME, raw=raw, line=None, ts_init=self.clock.now_ms())
        )
