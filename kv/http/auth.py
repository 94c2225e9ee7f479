"""Read tokens (`kv serve --read-token-file F`) and the routes they guard.

With a token file, every route but /healthz and /readyz needs
`Authorization: Bearer TOKEN` with a token from the file: a request without
one is answered 401 with `WWW-Authenticate: Bearer`, one with a token not in
the file 403, both RFC 9457 problems that never echo what was sent. A read
token only reads: no route it opens writes (writes, when they come, get their
own tokens).

The check is constant-time with respect to the tokens, in one of two ways:

- up to COMPARE_UP_TO tokens (the usual one or two, a few during a
  rotation): `hmac.compare_digest` of the presented header value against
  each `Bearer TOKEN`, every one compared (no early exit), about 0.13 us per
  token;
- more: the value is MACed with a key made fresh in each process (keyed
  BLAKE2b, a MAC by design) and the digest looked up in the set of the
  accepted values' digests: about 1.4 us whatever the number of tokens.
  Timing can then reveal something about digests under a key the client
  never sees, nothing about how many bytes of a token matched.

(Measured with timeit, best of 15, on the 2-core test machine: the crossover
is near 10 tokens; HMAC-SHA256 through OpenSSL costs about three times keyed
BLAKE2b, as it sets up two hash contexts per call. A plain `value in
{tokens}` is not used: it relies on CPython's randomized string hash to hide
which bytes matched, which PYTHONHASHSEED turns off.)

The file: one token a line; blank lines and lines starting with `#` are
skipped; a token is 8 to 512 visible ASCII characters with no spaces (RFC 6750
b64token and more). It is read when a worker starts, so `kv reload` (SIGHUP:
fresh workers) picks up a new file. Tokens are never logged: errors name the
file and line number only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Callable, Iterable

from starlette.responses import Response
from starlette.types import Scope

from ..errors import KVError
from .problems import problem

OPEN_PATHS = (b"/healthz", b"/readyz")  # probes: orchestrators and load balancers carry no token
MIN_TOKEN, MAX_TOKEN = 8, 512
COMPARE_UP_TO = 8  # tokens checked one by one with compare_digest; more: a keyed MAC and a set


class TokenFileError(KVError, ValueError):
    """The token file cannot be used; the message names the file (and line), never a token."""


def read_token_file(path: str) -> list[bytes]:
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise TokenFileError(f"read token file {path}: {e.strerror or e}") from None
    tokens = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        if not MIN_TOKEN <= len(line) <= MAX_TOKEN or not all(0x21 <= c <= 0x7E for c in line):
            raise TokenFileError(
                f"read token file {path}, line {n}: a token is {MIN_TOKEN} to {MAX_TOKEN} visible ASCII characters without spaces"
            )
        tokens.append(line)
    if not tokens:
        raise TokenFileError(f"read token file {path} holds no token (one a line; # starts a comment)")
    return tokens


def permission_warning(path: str) -> str | None:
    """A warning when users other than the owner and group may read the file."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & stat.S_IROTH:
        return f"read token file {path} is readable by every user (mode {stat.S_IMODE(mode):04o}); chmod o-rwx {path}"
    return None


def bearer_check(tokens: Iterable[bytes]) -> Callable[[bytes | None], bool]:
    """A function of an Authorization header value (None: absent) that is
    True when it is `Bearer TOKEN` with one of `tokens`; constant-time with
    respect to the tokens (module docstring)."""
    values = tuple(b"Bearer " + t for t in tokens)
    if len(values) == 1:  # the usual case, without the loop
        compare, only = hmac.compare_digest, values[0]

        def allows_one(value: bytes | None) -> bool:
            return value is not None and compare(value, only)

        return allows_one
    if len(values) <= COMPARE_UP_TO:
        compare = hmac.compare_digest

        def allows(value: bytes | None) -> bool:
            if value is None:
                return False
            ok = False
            for v in values:  # all of them: which one matched does not show either
                ok |= compare(value, v)
            return ok

        return allows

    key = os.urandom(32)
    mac = hashlib.blake2b
    accepted = frozenset(mac(v, key=key, digest_size=16).digest() for v in values)

    def allows_many(value: bytes | None) -> bool:
        return value is not None and mac(value, key=key, digest_size=16).digest() in accepted

    return allows_many


def authorization(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The value of the request's Authorization header, None when it has
    none. More than one is refused (`TwoAuthorizations`): the field is a
    singleton (RFC 9110, 11.6.2), and a proxy that reads the first while a
    server reads the last would each check a different token."""
    found = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                raise TwoAuthorizations
            found = value
    return found


class TwoAuthorizations(KVError, ValueError):
    """A request with more than one Authorization header."""


def two_authorizations() -> Response:
    return problem(400, "Bad request", "more than one Authorization header: send one")


class Guard:
    """The checked path's rules for who may read what: tokens, and /metrics
    served on its own bind."""

    def __init__(self, tokens: Iterable[bytes] | None, metrics_elsewhere: str | None = None):
        self.allows = bearer_check(tokens) if tokens else None
        self.metrics_elsewhere = metrics_elsewhere

    @classmethod
    def from_env(cls) -> Guard:
        """What `kv serve` hands its workers: KV_READ_TOKEN_FILE and KV_METRICS_BIND."""
        from .. import settings

        path = os.environ.get(settings.READ_TOKEN_FILE.env)
        return cls(read_token_file(path) if path else None, os.environ.get(settings.METRICS_BIND.env) or None)

    def refusal(self, scope: Scope) -> Response | None:
        """The problem response for a request this rule refuses, or None."""
        raw = scope["raw_path"]
        if self.metrics_elsewhere and raw == b"/metrics":
            return problem(404, "Not found", f"/metrics is served on {self.metrics_elsewhere}")
        if self.allows is None or raw in OPEN_PATHS:
            return None
        try:
            value = authorization(scope["headers"])
        except TwoAuthorizations:
            return two_authorizations()
        if self.allows(value) or (value is not None and self.allows(b"Bearer " + value[7:])):  # the scheme in any case
            return None
        if value is None or not value[:7].lower() == b"bearer ":
            return problem(
                401,
                "Unauthorized",
                "this server needs `Authorization: Bearer TOKEN` (a read token)",
                headers={"www-authenticate": 'Bearer realm="kv"'},
            )
        return problem(
            403,
            "Forbidden",
            "the bearer token is not accepted here",
            headers={"www-authenticate": 'Bearer realm="kv", error="invalid_token"'},
        )
