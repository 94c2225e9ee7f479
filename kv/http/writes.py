"""The write routes: PUT and DELETE /v1/keys/{key}, POST /v1/write.

Served only by `kv serve --root DIR --writable`; elsewhere they answer 405
with the route's `Allow`. Every write needs `Authorization: Bearer TOKEN`
with the write token: none is 401 with `WWW-Authenticate: Bearer`, another
403. The token is compared as an HMAC digest under a per-process key, so the
time a comparison takes says nothing about how much of it matched, and it is
never logged or echoed.

A committed write answers 200 `{"generation": ...}` only once its change
log group is fsynced and the head page names it: from then on a request any
worker starts sees it (kv/live.py, kv/writes.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from fastapi import Request
from fastapi.responses import Response

from ..errors import InvalidKey, KVError
from ..writes import Committed, Writer, WriteRefused
from .auth import TwoAuthorizations, authorization, two_authorizations
from .negotiation import JSON
from .problems import problem

if TYPE_CHECKING:
    from .state import State

Scope = MutableMapping[str, Any]  # an ASGI scope
WRITE_PATH = "/v1/write"
MIN_TOKEN, MAX_TOKEN = 8, 512
MAX_WRITE_BODY = 17 << 20  # a PUT of the largest value (16 MiB) and then some; a batch of them as JSON is far less


class WriteTokenError(KVError, ValueError):
    """A write token that cannot be used; the message never holds the token."""


def check_token(token: bytes, source: str) -> bytes:
    token = token.strip()
    if not MIN_TOKEN <= len(token) <= MAX_TOKEN or not all(0x21 <= c <= 0x7E for c in token):
        raise WriteTokenError(f"the write token from {source} must be {MIN_TOKEN} to {MAX_TOKEN} visible ASCII characters without spaces")
    return token


def read_write_token(path: str | None, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The write token: KV_WRITE_TOKEN, else the first token line of `path`
    (blank lines and # comments skipped); None when neither is given."""
    from ..settings import WRITE_TOKEN_ENV

    environ = os.environ if environ is None else environ
    if environ.get(WRITE_TOKEN_ENV):
        return check_token(environ[WRITE_TOKEN_ENV].encode(), WRITE_TOKEN_ENV)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise WriteTokenError(f"write token file {path}: {e.strerror or e}") from None
    for line in lines:
        line = line.strip()
        if line and not line.startswith(b"#"):
            return check_token(line, f"write token file {path}")
    raise WriteTokenError(f"write token file {path} holds no token")


class WriteAuth:
    """`refusal(authorization header value or None)`: a 401/403 problem, or None."""

    def __init__(self, token: bytes):
        key = os.urandom(32)
        self._key = key
        self._want = hmac.digest(key, b"bearer " + token, hashlib.sha256)

    def allows(self, value: bytes | None) -> bool:
        if value is None or len(value) > 7 + MAX_TOKEN:
            return False
        presented = value[:7].lower() + value[7:]  # the scheme in any case (RFC 9110, 11.1)
        return hmac.compare_digest(hmac.digest(self._key, presented, hashlib.sha256), self._want)

    def refusal(self, value: bytes | None) -> Response | None:
        if value is None or not value[:7].lower() == b"bearer ":
            return problem(
                401,
                "Unauthorized",
                "writes need `Authorization: Bearer TOKEN` with the write token",
                headers={"WWW-Authenticate": 'Bearer realm="kv writes"'},
            )
        if not self.allows(value):
            return problem(
                403,
                "Forbidden",
                "the token given is not the write token",
                headers={"WWW-Authenticate": 'Bearer realm="kv writes", error="invalid_token"'},
            )
        return None


# -- routing (the fast path's checked path calls these) -----------------------------------------------


def refusal(state: State, scope: Scope, route: str) -> Response | None:
    """405 when this server takes no writes (with the route's Allow), else
    401/403 from the token check; None when the write may go on."""
    if state.writer is None:
        allow = "GET, HEAD" if route != WRITE_PATH else ""
        return problem(
            405,
            "Method not allowed",
            f"{scope['method']} is not allowed on {scope['path'][:200]}: this server takes no writes (kv serve --root DIR --writable does)",
            headers={"Allow": allow},
        )
    assert state.write_auth is not None  # writable servers have both
    try:
        value = authorization(scope["headers"])
    except TwoAuthorizations:
        return two_authorizations()
    return state.write_auth.refusal(value)


def key_of(scope: Scope) -> bytes:
    """The key of /v1/keys/{key}: the rest of the raw path, percent-decoded (as kv/http/handlers.py reads it)."""
    from .handlers import KEY_PREFIX

    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    raw = raw.partition(b"?")[0][len(KEY_PREFIX) :]
    return unquote_to_bytes(raw) if b"%" in raw else raw


async def dispatch(state: State, scope: Scope, route: str, body: bytes) -> Response:
    method = scope["method"]
    if route == WRITE_PATH:
        return await write(state, body)
    if method == "PUT":
        return await put_key(state, key_of(scope), body)
    return await delete_key(state, key_of(scope))


async def key_write_route(state: State, request: Request) -> Response:
    """PUT and DELETE /v1/keys/{key} for direct callers of the FastAPI app (the fast path calls `dispatch`)."""
    from .handlers import KEY_PATH

    refused_ = refusal(state, request.scope, KEY_PATH)
    return refused_ or await dispatch(state, request.scope, KEY_PATH, await request.body())


async def write_route(state: State, request: Request) -> Response:
    """POST /v1/write for direct callers of the FastAPI app (the fast path calls `dispatch`)."""
    refused_ = refusal(state, request.scope, WRITE_PATH)
    return refused_ or await write(state, await request.body())


# -- parsing ------------------------------------------------------------------------------------


def parse_write(body: bytes, max_keys: int) -> tuple[dict, list]:
    """(sets, deletes) of a POST /v1/write body; WriteRefused (400, 413) for
    anything else, before any key is looked at."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise WriteRefused(
            f'body is not valid JSON ({e}); expected {{"set": {{KEY: VALUE}}, "set_base64": {{KEY: BASE64}}, "delete": [KEY]}}'
        ) from None
    if not isinstance(payload, dict) or not payload:
        raise WriteRefused('expected a JSON object with "set", "set_base64" and/or "delete"')
    unknown = sorted(set(payload) - {"set", "set_base64", "delete"})
    if unknown:
        raise WriteRefused(f"unknown member {unknown[0]!r}; a write has set, set_base64 and delete")
    text = payload.get("set", {})
    b64 = payload.get("set_base64", {})
    deletes = payload.get("delete", [])
    if not isinstance(text, dict) or not all(isinstance(v, str) for v in text.values()):
        raise WriteRefused('"set" must be an object of string values (binary values go in "set_base64")')
    if not isinstance(b64, dict) or not all(isinstance(v, str) for v in b64.values()):
        raise WriteRefused('"set_base64" must be an object of base64 strings')
    if not isinstance(deletes, list) or not all(isinstance(k, str) for k in deletes):
        raise WriteRefused('"delete" must be a list of keys')
    n = len(text) + len(b64) + len(deletes)
    if n > max_keys:
        raise WriteRefused(f"{n:,} keys in one write; at most {max_keys:,} (--max-batch), split it", 413)
    sets: dict = {}
    for k, v in text.items():
        try:
            sets[k] = v.encode("utf-8")
        except UnicodeEncodeError:
            raise WriteRefused(f"value of key {k[:80]!r} is not valid Unicode; send it in set_base64") from None
    for k, v in b64.items():
        if k in sets:
            raise WriteRefused(f"key {k[:80]!r} is in both set and set_base64")
        try:
            sets[k] = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise WriteRefused(f"value of key {k[:80]!r} in set_base64 is not base64") from None
    return sets, deletes


# -- answers --------------------------------------------------------------------------------------


def committed(state: State, c: Committed, **extra: object) -> Response:
    body = {"generation": c.generation, **extra}
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
        media_type=JSON,
        headers={"etag": f'"{c.generation}"', "x-kv-generation": c.generation, "x-kv-worker": state.pid},
    )


def refused(e: Exception) -> Response:
    if isinstance(e, InvalidKey):
        return problem(400, "Invalid key", f"{e}; nothing was written")
    status = getattr(e, "status", 400)
    title = {409: "Conflict", 413: "Write too large", 503: "Unavailable"}.get(status, "Bad request")
    return problem(status, title, f"{e}; nothing was written", headers={"retry-after": "1"} if status == 503 else None)


def _shown(key: str | bytes) -> str:
    return (key.decode("utf-8", "replace") if isinstance(key, bytes) else key)[:200]


def writer(state: State) -> Writer:
    assert state.writer is not None  # refusal() answered 405 otherwise
    return state.writer


async def put_key(state: State, key: bytes, body: bytes) -> Response:
    try:
        c = await writer(state).write_async({key: body})
    except (InvalidKey, WriteRefused) as e:
        return refused(e)
    assert c is not None  # None only for require_present
    state.counts_writes(c)
    return committed(state, c)


async def delete_key(state: State, key: bytes) -> Response:
    try:
        c = await writer(state).write_async(deletes=[key], require_present=True)
    except (InvalidKey, WriteRefused) as e:
        return refused(e)
    if c is None:
        return problem(
            404, "Not found", f"key {_shown(key)} is not there; nothing was written", headers={"x-kv-generation": state.table.generation}
        )
    state.counts_writes(c)
    return committed(state, c)


async def write(state: State, body: bytes) -> Response:
    try:
        sets, deletes = parse_write(body, state.max_batch)
        c = await writer(state).write_async(sets, deletes)
    except (InvalidKey, WriteRefused) as e:
        return refused(e)
    assert c is not None  # None only for require_present
    state.counts_writes(c)
    return committed(state, c, sets=c.sets, deletes=c.deletes, missing=[k.decode("utf-8", "replace") for k in c.missing])
