"""Bearer tokens: `Authorization: Bearer <token>`, or `token` in a stream's hello.

Tokens are compared in constant time (against every configured token, so the time does not
say which one nearly matched) and never logged or echoed.
"""

from __future__ import annotations

import hmac


class Auth:
    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._tokens = [t.encode() for t in tokens]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def accepts(self, token: str | None) -> bool:
        if not self.enabled:
            return True
        if not token:
            return False
        given = token.encode()
        ok = False
        for t in self._tokens:
            ok |= hmac.compare_digest(given, t)
        return ok

    def accepts_header(self, authorization: str | None) -> bool:
        return self.accepts(bearer_token(authorization))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
