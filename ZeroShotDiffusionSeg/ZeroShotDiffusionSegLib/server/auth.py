"""Bearer-token authentication for ``zsdseg serve``.

A token file holds one token per line, optionally ``name:token``; blank lines and
lines starting with ``#`` are ignored. The name (never the token) identifies the
owner of a job and appears in logs. Each token sees only its own jobs.

Authentication is an ASGI middleware rather than a FastAPI dependency so that a
request without a valid token is refused *before* its body (a volume upload) is read.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import stat
from pathlib import Path
from typing import Dict, Iterable, Optional

from ..errors import UserError

log = logging.getLogger("zsdseg.server")

MIN_TOKEN_LENGTH = 16
LOCAL_PRINCIPAL = "local"  # the owner of every job when the server runs without tokens (loopback only)
PRINCIPAL_SCOPE_KEY = "zsdseg.principal"


class TokenStore:
    """Tokens and their owners' names; ``owner_of`` compares in constant time."""

    def __init__(self, tokens: Dict[str, str]):
        if not tokens:
            raise UserError("the token file holds no tokens")
        # Compare bytes: hmac.compare_digest refuses non-ASCII str.
        self._entries = [(token.encode("utf-8"), name) for token, name in tokens.items()]

    @classmethod
    def from_file(cls, path) -> "TokenStore":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            mode = path.stat().st_mode
        except OSError as error:
            raise UserError(f"cannot read token file {path}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise UserError(f"token file {path} is not UTF-8 text") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token file %s is readable by other users; chmod 600 it", path)
        return cls(parse_token_lines(text.splitlines(), source=str(path)))

    def owner_of(self, presented: str) -> Optional[str]:
        """The name of the presented token's owner, or None. Every entry is compared, so
        the time taken does not depend on which token (if any) matched."""
        presented_bytes = presented.encode("utf-8")
        owner = None
        for token, name in self._entries:
            if hmac.compare_digest(presented_bytes, token):
                owner = name
        return owner


def parse_token_lines(lines: Iterable[str], source: str = "token file") -> Dict[str, str]:
    """token -> owner name. Refuses short, duplicate or whitespace-containing tokens."""
    tokens: Dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, token = line.partition(":")
        if not separator:
            name, token = f"token{number}", line
        name, token = name.strip(), token.strip()
        where = f"{source} line {number}"
        if not name:
            raise UserError(f"{where}: empty name before ':'")
        if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise UserError(
                f"{where}: a token must be at least {MIN_TOKEN_LENGTH} characters without spaces; "
                'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        if token in tokens:
            raise UserError(f"{where}: the same token appears twice")
        if name in tokens.values():
            raise UserError(f"{where}: the name {name!r} is used twice (names own jobs, so they must differ)")
        tokens[token] = name
    return tokens


def read_client_token(path) -> str:
    """The token a client presents: the first token line of its token file (``name:`` prefix allowed)."""
    path = Path(os.path.expanduser(str(path)))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UserError(f"cannot read token file {path}: {error.strerror}") from None
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            return line.partition(":")[2].strip() if ":" in line else line
    raise UserError(f"token file {path} holds no token")


class BearerAuthMiddleware:
    """Puts the owner's name into the ASGI scope, or answers 401 (no token) / 403 (wrong token).

    With ``tokens=None`` (a loopback-only server started without a token file) every
    request is the same ``local`` owner.
    """

    def __init__(self, app, tokens: Optional[TokenStore], public_paths=("/health",)):
        self.app = app
        self.tokens = tokens
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            return await self.app(scope, receive, send)
        if self.tokens is None:
            scope[PRINCIPAL_SCOPE_KEY] = LOCAL_PRINCIPAL
            return await self.app(scope, receive, send)
        header = _header(scope, b"authorization")
        scheme, _, presented = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return await _refuse(send, 401, "missing bearer token: send 'Authorization: Bearer <token>'")
        owner = self.tokens.owner_of(presented.strip())
        if owner is None:
            log.info("refused a request to %s %s: invalid token", scope["method"], scope["path"])
            return await _refuse(send, 403, "invalid token")
        scope[PRINCIPAL_SCOPE_KEY] = owner
        return await self.app(scope, receive, send)


def _header(scope, name: bytes) -> Optional[str]:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _refuse(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
