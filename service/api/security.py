"""Who may call the translation routes, and how often: API keys, per-key rate limits, CORS.

Keys come from `TRANSLATOR_API_KEYS` and the file `TRANSLATOR_API_KEYS_FILE` (one per line). A request
presents one as `Authorization: Bearer KEY` or `X-API-Key: KEY`; LibreTranslate clients may instead
send the `api_key` field of their body. A presented key is compared with every configured key by
`hmac.compare_digest` on SHA-256 digests, with no early exit, so the time an answer takes says
nothing about how close a guess was or how long a key is. Keys never reach a log line or a
response: the settings hold them as SecretStr, and the errors say only that a key is missing or wrong.

Rate limits are token buckets, one per key (or, when no keys are configured, one per client address),
checked after the key: a refused request is a 429 with the Retry-After its bucket needs.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from pathlib import Path

from fastapi import Request

from service.api.errors import ApiError
from service.config import Settings

BEARER = "bearer "


class KeysFileError(ValueError):
    """TRANSLATOR_API_KEYS_FILE cannot be read; the message names the file, never its content."""


def read_keys_file(path: Path) -> list[str]:
    """One key per line; blank lines and lines starting with `#` are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise KeysFileError(f"API keys file {path}: cannot be read ({type(error).__name__})") from None
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise KeysFileError(f"API keys file {path}: holds no key (an empty file would silently open the service)")
    return keys


def digest(key: str) -> bytes:
    """Keys are compared as SHA-256 digests: equal lengths, so the comparison time says nothing of a key's length."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    def __init__(self, keys: Iterable[str]):
        self._keys = tuple(dict.fromkeys(digest(key) for key in keys if key))

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        keys = [secret.get_secret_value() for secret in settings.api_keys]
        if settings.api_keys_file is not None:
            keys += read_keys_file(settings.api_keys_file)
        return cls(keys)

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def identify(self, presented: str) -> int | None:
        """The index of the matching key, or None. Every key is compared, whatever matched."""
        candidate = digest(presented)
        found = None
        for index, key in enumerate(self._keys):
            if hmac.compare_digest(candidate, key):
                found = index
        return found


class RateLimiter:
    """Token buckets: each client may send `burst` requests at once, then `rate` per second. Idle clients'
    buckets are dropped past `max_clients`, least recently seen first (only full buckets are forgotten
    early in practice: an idle bucket refills)."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000):
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self.buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # client → (tokens, when)

    def take(self, client: Hashable, now: float | None = None) -> float:
        """Spend one token → 0.0, or the seconds until one is available (nothing spent)."""
        now = time.monotonic() if now is None else now
        tokens, then = self.buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self.buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
        while len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)
        return wait


def presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    if authorization[: len(BEARER)].lower() == BEARER:
        return authorization[len(BEARER):].strip() or None
    return request.headers.get("x-api-key") or None


class Gate:
    """The service's admission check for translation routes: key, then rate.

    Key policies (TRANSLATOR_KEY_POLICY), when keys are configured: `required` (ours) refuses a request
    without a key; `libretranslate` serves it, rate-limited by its client address, as LibreTranslate
    does with `--api-keys`. A wrong key is refused under both."""

    def __init__(self, keys: KeyRing, limiter: RateLimiter | None, policy: str = "required"):
        self.keys, self.limiter, self.policy = keys, limiter, policy

    @classmethod
    def from_settings(cls, settings: Settings) -> "Gate":
        limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst) if settings.rate_limit_per_s > 0 else None
        return cls(KeyRing.from_settings(settings), limiter, settings.key_policy)

    @property
    def key_required(self) -> bool:
        """A request without a key is refused."""
        return self.keys.required and self.policy == "required"

    def admit(self, request: Request, presented: str | None) -> None:
        """Missing key: "unauthorized", wrong key: "forbidden"; the route's error flavour picks the status
        (native 401/403; LibreTranslate routes 403 to both, with LibreTranslate's words)."""
        client: Hashable = ("address", request.client.host if request.client else "")
        if self.keys.required and (presented is not None or self.key_required):
            if presented is None:
                raise ApiError("unauthorized", "an API key is required: send `Authorization: Bearer KEY`, `X-API-Key: KEY` "
                                               "or, on the LibreTranslate routes, the `api_key` field",
                               libretranslate="Please contact the server operator to get an API key")
            index = self.keys.identify(presented)
            if index is None:
                raise ApiError("forbidden", "invalid API key", libretranslate="Invalid API key")
            client = ("key", index)
        if self.limiter:
            wait = self.limiter.take(client)
            if wait:
                raise ApiError("rate_limited", "rate limit exceeded; retry later", retry_after=math.ceil(wait),
                               libretranslate=f"Slowdown: {self.limiter.burst} per burst, {self.limiter.rate:g} per second")


async def api_key_gate(request: Request) -> None:
    """Dependency of the native translation routes: the key in the headers."""
    request.app.state.service.gate.admit(request, presented_key(request))
