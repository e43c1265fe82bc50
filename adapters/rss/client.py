"""Raw HTTP for feeds: conditional GET with ETag / Last-Modified, over aiohttp."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from adapters.rss.config import RssSettings
from engine.errors import InvalidInput, TransientError


@dataclass(frozen=True, slots=True)
class FetchResult:
    """One feed request: ``body`` is None when the server answered 304 Not Modified."""

    url: str
    status: int
    body: bytes | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(slots=True)
class _Validators:
    etag: str | None = None
    last_modified: str | None = None


class RssClient:
    """GETs feeds, remembering each feed's validators so unchanged feeds cost a 304."""

    def __init__(self, settings: RssSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._validators: dict[str, _Validators] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                headers={"User-Agent": self.settings.user_agent},
            )
        return self._session

    async def get(self, url: str) -> FetchResult:
        """Conditional GET of one feed.

        Raises:
            TransientError: Network failure, timeout, 429 or 5xx; worth retrying.
            InvalidInput: Any other non-2xx answer (wrong URL, forbidden): retrying will not help.
        """
        validators = self._validators.setdefault(url, _Validators())
        headers = {}
        if validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
        try:
            async with self._get_session().get(url, headers=headers) as response:
                if response.status == 304:
                    return FetchResult(url, 304, None)
                if response.status == 429 or response.status >= 500:
                    raise TransientError(f"feed {url}: HTTP {response.status}")
                if response.status >= 300:
                    raise InvalidInput(f"feed {url}: HTTP {response.status}", raw=url)
                body = await response.read()
                validators.etag = response.headers.get("ETag")
                validators.last_modified = response.headers.get("Last-Modified")
                return FetchResult(url, response.status, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"feed {url}: {type(exc).__name__}: {exc}") from exc

    def forget_validators(self, url: str) -> None:
        """Drop a feed's ETag/Last-Modified: its last answer was not a usable feed, so ask in full next time."""
        self._validators.pop(url, None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
