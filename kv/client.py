"""A small Python client: `kv.Client(url).get(key)`.

One httpx client that keeps one pooled keep-alive connection: sequential calls
reuse it. (A sharded `get_many` sends its per-shard batches concurrently, up
to 8 at a time, so it may open more connections for that call; only one is
kept alive afterwards.) Lookups are reads, so a request that fails on the
connection (a worker restarting during a reload closes its idle keep-alive
connections) is retried once on a fresh one. A server that connects but does
not answer within the timeout is not retried: that would only double the wait.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, Self
from urllib.parse import quote

import httpx

from . import settings
from .errors import InvalidKey, KVError

DEFAULT_URL = settings.URL.default
DEFAULT_TIMEOUT = settings.TIMEOUT.default  # seconds, for each of connect, write, read
DEFAULT_BATCH_LIMIT = settings.MAX_BATCH.default  # kv serve's default --max-batch; a 413 tells the client the real one


class ServerUnreachable(KVError, ConnectionError):
    """No kv server answered at the URL (refused, dropped, or silent past the timeout)."""


class WriteRefusedError(KVError):
    """The server refused a write: 401 (no token), 403 (wrong token) or 405
    (it takes no writes). `status` and the server's reason (`detail`)."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class ServerError(KVError):
    """The server answered with an error status (its problem detail is the message)."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def key_path(key: str) -> str:
    """The URL path of a key: /v1/keys/ and its UTF-8 bytes percent-encoded,
    every byte outside RFC 3986's unreserved characters (so "/" is %2F, "+"
    is %2B, "%" is %25: a key is never a path, "../stats" stays a key). A key
    that is all dots gets them encoded too, else HTTP clients and proxies
    would remove it as a dot segment ("." and ".." are keys like any other)."""
    try:
        encoded = quote(key, safe="")
    except UnicodeEncodeError as e:  # a lone surrogate
        raise InvalidKey(f"key {key[:80]!r} is not valid Unicode ({e.reason}); a key is a UTF-8 string") from None
    if encoded and not encoded.strip("."):
        encoded = "%2E" * len(encoded)
    return f"/v1/keys/{encoded}"


def _security(token: str | None, cacert: str | None, cert: str | None, key: str | None) -> dict[str, Any]:
    """httpx arguments for a read token and TLS (each argument, else its KV_* variable)."""
    import ssl

    token, cacert, cert, key = (
        settings.BY_NAME[n].value(v) for n, v in (("token", token), ("cacert", cacert), ("cert", cert), ("key", key))
    )
    out: dict[str, Any] = {}
    if token:
        out["headers"] = {"authorization": f"Bearer {token}"}
    if cacert or cert:
        from .errors import SettingError

        step = f"--cacert {cacert}"
        try:
            ctx = ssl.create_default_context(cafile=cacert)
            step = f"--cert {cert}" + (f" --key {key}" if key else "")
            if cert:
                ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise SettingError(f"{step}: {getattr(e, 'reason', None) or getattr(e, 'strerror', None) or e}") from None
        out["verify"] = ctx
    return out


def _ssl_reason(e: Exception) -> str:
    text = str(e)
    return text[text.find("certificate verify failed") :].split(" (_ssl")[0].rstrip(")") if "verify failed" in text else text


class Client:
    def __init__(
        self,
        url: str | None = None,
        timeout: float | None = None,
        retries: int = 1,
        batch_limit: int = DEFAULT_BATCH_LIMIT,
        token: str | None = None,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ):
        """`url` defaults to KV_URL, then http://127.0.0.1:8000; `timeout` (seconds)
        to KV_TIMEOUT, then 5 (kv/settings.py). A bad KV_URL or KV_TIMEOUT is a
        SettingError (a ValueError) naming the variable. `token` (KV_TOKEN) is
        sent as `Authorization: Bearer`; `cacert` (KV_CACERT) verifies an
        https:// server; `cert` and `key` (KV_CERT, KV_KEY) are a client certificate."""
        self.url = (url or settings.URL.value()).rstrip("/")
        self.timeout = settings.TIMEOUT.value(timeout)
        self.retries = retries
        self.batch_limit = batch_limit  # keys per batch request; lowered when a server answers 413
        self.http = httpx.Client(
            base_url=self.url, timeout=self.timeout, limits=httpx.Limits(max_keepalive_connections=1), **_security(token, cacert, cert, key)
        )
        self._shards: dict[str, Any] | None = None  # None: not read yet; {}: not sharded
        self.last_generation: str | None = None

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                r = self.http.request(method, path, **kw)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                if "CERTIFICATE_VERIFY_FAILED" in str(e) or "certificate verify failed" in str(e):
                    raise ServerUnreachable(
                        f"the TLS certificate of {self.url} does not verify ({_ssl_reason(e)}); give its CA with --cacert / KV_CACERT"
                    ) from None
                if attempt == self.retries:
                    raise ServerUnreachable(
                        f"no kv server at {self.url} ({e}); start one with `kv serve DATA` or set --url / KV_URL"
                    ) from None
            except httpx.TimeoutException as e:  # connected, but no answer (read, write or pool timeout)
                raise ServerUnreachable(
                    f"no answer from kv server at {self.url} within {self.timeout:g} s ({type(e).__name__}); "
                    "check that the URL is a kv server and not overloaded, or allow longer with --timeout / KV_TIMEOUT"
                ) from None
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                if attempt == self.retries:
                    raise ServerUnreachable(f"kv server at {self.url} dropped the connection ({e})") from None
            except httpx.TransportError as e:  # proxy errors, unsupported URL scheme, ...
                raise ServerUnreachable(f"cannot talk to kv server at {self.url}: {type(e).__name__}: {e}") from None
        self.last_generation = r.headers.get("x-kv-generation", self.last_generation)
        return r

    @staticmethod
    def _detail(r: httpx.Response) -> str:
        try:
            return r.json().get("detail", r.text)
        except (ValueError, AttributeError):
            return r.text

    def get(self, key: str) -> bytes | None:
        """The value of `key`, or None if absent. InvalidKey for a malformed key."""
        r = self._request("GET", key_path(key))
        if r.status_code == 200:
            return r.content
        if r.status_code == 404:
            return None
        if r.status_code == 400:
            raise InvalidKey(self._detail(r))
        raise ServerError(r.status_code, self._detail(r))

    def shard_map(self) -> dict[str, Any] | None:
        """The front's shard map (GET /v1/shards), or None for a single server.
        Read once and kept; get_many reads it only when a batch answers 421."""
        if self._shards is None:
            r = self._request("GET", "/v1/shards")
            try:
                body = r.json() if r.status_code == 200 else {}
            except ValueError:
                body = {}
            self._shards = body if isinstance(body, dict) and body.get("shards", 1) > 1 else {}
        return self._shards or None

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        """Values of the keys that are present, in the order asked.

        One `POST /v1/batch` per batch-limit keys. A sharded nginx front sends
        that to shard 0, which answers 421 when any key belongs to another
        shard: only then is the shard map read (and kept), and the keys go in
        one batch per shard, sent concurrently. The map's `key_kind` says how
        a key's shard is computed: "string" by kv.keys.string_shard_of (its
        xxh3 hash), "uuid" (or absent, as in fronts rendered before string
        keys) by kv.keys.shard_of (its first hex digits)."""
        shards = self._shards
        if not shards:
            try:
                return self._batches("/v1/batch", keys)
            except ServerError as e:
                if e.status != 421:
                    raise
                self._shards = None  # sharded now, or resharded since the map was read
                shards = self.shard_map()
                if not shards:
                    raise ServerError(
                        421,
                        f"{e.detail}; {self.url} serves one shard and no shard map (GET /v1/shards): "
                        "use the URL of the front that routes to every shard",
                    ) from None
        return self._get_sharded(keys, shards)

    def _get_sharded(self, keys: list[str], shards: dict[str, Any]) -> dict[str, bytes]:
        try:
            return self._get_from_shards(keys, shards)
        except ServerError as e:
            if e.status not in (404, 421):  # 421: a key's shard moved; 404: no such shard any more
                raise
        self._shards = None  # resharded since the map was read: read it again, and try once more
        shards_now = self.shard_map()
        return self._get_from_shards(keys, shards_now) if shards_now else self._batches("/v1/batch", keys)

    def _get_from_shards(self, keys: list[str], shards: dict[str, Any]) -> dict[str, bytes]:
        from concurrent.futures import ThreadPoolExecutor

        from .keys import canonical_key, shard_of, string_key, string_shard_of

        # The shard map says which keys the cluster holds (kv/deploy.py):
        # string keys shard by their xxh3 hash, UUIDs by their first hex digits.
        if shards.get("key_kind", "uuid") == "string":
            where, validate = string_shard_of, string_key
        else:
            where, validate = shard_of, canonical_key
        groups: dict[int, list[str]] = {}
        for k in keys:
            groups.setdefault(where(validate(k), shards["shards"]), []).append(k)
        path = shards.get("batch_path", "/v1/shards/{index}/batch")
        out: dict[str, bytes] = {}
        with ThreadPoolExecutor(max_workers=min(8, len(groups))) as pool:
            for part in pool.map(lambda item: self._batches(path.format(index=item[0]), item[1]), groups.items()):
                out.update(part)
        return {k: out[k] for k in keys if k in out}  # in the order asked

    def _batches(self, path: str, keys: list[str]) -> dict[str, bytes]:
        """POST the keys to `path`, batch_limit keys per request. A 413 names
        the server's limit: adopt it and resend those keys split."""
        out: dict[str, bytes] = {}
        done = 0
        while done < len(keys):
            chunk = keys[done : done + self.batch_limit]
            r = self._request("POST", path, json={"keys": chunk})
            if r.status_code == 413 and self._lower_batch_limit(r, len(chunk)):
                continue
            out.update(self._batch_values(r))
            done += len(chunk)
        return out

    def _lower_batch_limit(self, r: httpx.Response, sent: int) -> bool:
        """Take the limit from a 413's problem body ("limit": N); without one
        (a proxy's body-size cap), halve. False when no smaller batch is possible."""
        try:
            limit = int(r.json()["limit"])
        except (ValueError, KeyError, TypeError):
            limit = sent // 2
        if not 1 <= limit < sent:
            return False
        self.batch_limit = limit
        return True

    def _batch_values(self, r: httpx.Response) -> dict[str, bytes]:
        if r.status_code == 400:
            raise InvalidKey(self._detail(r))
        if r.status_code != 200:
            raise ServerError(r.status_code, self._detail(r))
        body = r.json()
        out = {k: v.encode("utf-8") for k, v in body.get("values", {}).items()}
        out.update((k, base64.b64decode(v)) for k, v in body.get("values_base64", {}).items())
        return out

    # -- writes (kv serve --root DIR --writable; docs/WRITES.md) ----------------------------------

    def set(self, key: str, value: bytes | str) -> str:
        """Store `value` (bytes, or str as UTF-8) under `key`; return the new
        generation. The write is durable and visible to every reader when this returns."""
        body = value.encode() if isinstance(value, str) else bytes(value)
        return self._written(self._request("PUT", key_path(key), content=body))["generation"]

    def set_many(self, items: Mapping[str, bytes | str]) -> str:
        """Store every key of `items` in one atomic write; return the new generation."""
        return self._written(self._request("POST", "/v1/write", json=write_body(items, ())))["generation"]

    def delete(self, *keys: str) -> list[str]:
        """Delete `keys` in one atomic write; return those that were absent
        (a write of only absent keys still makes a new generation)."""
        if len(keys) == 1:
            r = self._request("DELETE", key_path(keys[0]))
            if r.status_code == 404 and "not there" in self._detail(r):
                return list(keys)
            self._written(r)
            return []
        return list(self._written(self._request("POST", "/v1/write", json=write_body({}, keys))).get("missing", []))

    def _written(self, r: httpx.Response) -> dict[str, Any]:
        if r.status_code == 200:
            return r.json()
        if r.status_code in (401, 403, 405):
            raise WriteRefusedError(r.status_code, self._detail(r))
        if r.status_code == 400:
            try:
                title = r.json().get("title")
            except (ValueError, AttributeError):
                title = None
            if title == "Invalid key":
                raise InvalidKey(self._detail(r))
        raise ServerError(r.status_code, self._detail(r))

    def stats(self) -> dict[str, Any]:
        r = self._request("GET", "/v1/stats")
        if r.status_code != 200:
            raise ServerError(r.status_code, self._detail(r))
        return r.json()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_body(items: Mapping[str, bytes | str], deletes: Sequence[str]) -> dict[str, dict[str, str] | list[str]]:
    """The POST /v1/write body: UTF-8 values in "set", other bytes in "set_base64"."""
    text: dict[str, str] = {}
    binary: dict[str, str] = {}
    for k, v in items.items():
        if isinstance(v, str):
            text[k] = v
            continue
        try:
            text[k] = bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            binary[k] = base64.b64encode(bytes(v)).decode()
    body: dict[str, dict[str, str] | list[str]] = {}
    if text:
        body["set"] = text
    if binary:
        body["set_base64"] = binary
    if deletes:
        body["delete"] = list(deletes)
    return body
