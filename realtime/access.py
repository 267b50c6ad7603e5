"""Who may open a session: the API key check and the browser Origin allow-list, over handshake headers."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from multidict import CIMultiDictProxy

KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class AccessPolicy:
    api_key: str | None = None
    # Origins (scheme://host[:port]) allowed besides the server's own and loopback pages.
    allowed_origins: frozenset[str] = frozenset()

    def authorized(self, headers: CIMultiDictProxy[str]) -> bool:
        if not self.api_key:
            return True
        expected = self.api_key.encode()
        return any(hmac.compare_digest(key.encode(), expected) for key in _offered_keys(headers))

    def origin_allowed(self, headers: CIMultiDictProxy[str]) -> bool:
        """SDKs send no Origin. A browser page may connect from the server's own origin, from loopback,
        or from an origin on the allow-list; any other site is refused (cross-site WebSocket hijacking)."""
        origin = headers.get("Origin")
        if origin is None:
            return True
        normalized = normalize_origin(origin)
        if normalized is None:
            return False
        if normalized in self.allowed_origins or "*" in self.allowed_origins:
            return True
        host = urlsplit(normalized).hostname or ""
        return host in LOOPBACK_NAMES or _is_own_origin(normalized, headers.get("Host", ""))


def normalize_origin(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case, or None for `null` and anything that is not an http(s) origin."""
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default_port = 443 if parts.scheme == "https" else 80
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default_port) else "")


def allowed_origin_set(origins: Iterable[str]) -> frozenset[str]:
    """The allow-list as given on the command line; raises ValueError naming an entry that is no origin."""
    result = set()
    for origin in origins:
        normalized = "*" if origin.strip() == "*" else normalize_origin(origin)
        if normalized is None:
            raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
        result.add(normalized)
    return frozenset(result)


def _is_own_origin(origin: str, host_header: str) -> bool:
    # A page served by this server: its origin names the host the browser connected to. Only an IP
    # literal counts: a DNS name could be rebound to this address by a foreign site (DNS rebinding).
    parts = urlsplit(origin)
    own = urlsplit(f"{parts.scheme}://{host_header.lower()}")
    try:
        ipaddress.ip_address(own.hostname or "")
        same_port = (own.port or _default_port(parts.scheme)) == (parts.port or _default_port(parts.scheme))
    except ValueError:
        return False
    return own.hostname == parts.hostname and same_port


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _offered_keys(headers: CIMultiDictProxy[str]) -> list[str]:
    keys = []
    scheme, _, credentials = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        keys.append(credentials.strip())
    for value in headers.getall("Sec-WebSocket-Protocol", ()):
        keys += [
            p.strip().removeprefix(KEY_SUBPROTOCOL_PREFIX)
            for p in value.split(",")
            if p.strip().startswith(KEY_SUBPROTOCOL_PREFIX)
        ]
    return [key for key in keys if key]
