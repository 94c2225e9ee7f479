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
from typing import TYPE_CHECKING

from fastapi.responses import Response

from ..errors import InvalidKey
from ..writes import Committed, WriteRefused
from .negotiation import JSON
from .problems import problem

if TYPE_CHECKING:
    from .state import State

WRITE_PATH = "/v1/write"
MIN_TOKEN, MAX_TOKEN = 8, 512


class WriteTokenError(ValueError):
    """A write token that cannot be used; the message never holds the token."""


def check_token(token: bytes, source: str) -> bytes:
    token = token.strip()
    if not MIN_TOKEN <= len(token) <= MAX_TOKEN or not all(0x21 <= c <= 0x7E for c in token):
        raise WriteTokenError(f"the write token from {source} must be {MIN_TOKEN} to {MAX_TOKEN} visible ASCII "
                              "characters without spaces")
    return token


def read_write_token(path: str | None, environ=None) -> bytes | None:
    """The write token: KV_WRITE_TOKEN, else the first token line of `path`
    (blank lines and # comments skipped); None when neither is given."""
    environ = os.environ if environ is None else environ
    if environ.get("KV_WRITE_TOKEN"):
        return check_token(environ["KV_WRITE_TOKEN"].encode(), "KV_WRITE_TOKEN")
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
            return problem(401, "Unauthorized", "writes need `Authorization: Bearer TOKEN` with the write token",
                           headers={"WWW-Authenticate": 'Bearer realm="kv writes"'})
        if not self.allows(value):
            return problem(403, "Forbidden", "the token given is not the write token",
                           headers={"WWW-Authenticate": 'Bearer realm="kv writes", error="invalid_token"'})
        return None


def authorization(headers) -> bytes | None:
    for name, value in headers:
        if name == b"authorization":
            return value
    return None


# -- parsing ------------------------------------------------------------------------------------


def parse_write(body: bytes, max_keys: int) -> tuple[dict, list]:
    """(sets, deletes) of a POST /v1/write body; WriteRefused (400, 413) for
    anything else, before any key is looked at."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise WriteRefused(f'body is not valid JSON ({e}); expected {{"set": {{KEY: VALUE}}, '
                           f'"set_base64": {{KEY: BASE64}}, "delete": [KEY]}}') from None
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


def committed(state: State, c: Committed, **extra) -> Response:
    body = {"generation": c.generation, **extra}
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), media_type=JSON,
                    headers={"etag": f'"{c.generation}"', "x-kv-generation": c.generation, "x-kv-worker": state.pid})


def refused(e: Exception) -> Response:
    if isinstance(e, InvalidKey):
        return problem(400, "Invalid key", f"{e}; nothing was written")
    status = getattr(e, "status", 400)
    return problem(status, "Write too large" if status == 413 else "Bad request", f"{e}; nothing was written")


async def put_key(state: State, key: str, body: bytes) -> Response:
    try:
        c = await state.writer.write_async({key: body})
    except (InvalidKey, WriteRefused) as e:
        return refused(e)
    state.counts_writes(c)
    return committed(state, c)


async def delete_key(state: State, key: str) -> Response:
    try:
        c = await state.writer.write_async(deletes=[key], require_present=True)
    except (InvalidKey, WriteRefused) as e:
        return refused(e)
    if c is None:
        return problem(404, "Not found", f"key {key[:200]} is not there; nothing was written",
                       headers={"x-kv-generation": state.table.generation})
    state.counts_writes(c)
    return committed(state, c)


async def write(state: State, body: bytes) -> Response:
    try:
        sets, deletes = parse_write(body, state.max_batch)
        c = await state.writer.write_async(sets, deletes)
    except (InvalidKey, WriteRefused) as e:
        return refused(e)
    state.counts_writes(c)
    return committed(state, c, sets=c.sets, deletes=c.deletes,
                     missing=[k.decode("utf-8", "replace") for k in c.missing])
