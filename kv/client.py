"""A small Python client: `kv.Client(url).get(key)`.

One httpx client with a pooled keep-alive connection. Lookups are reads, so a
request that fails on the connection (a worker restarting during a reload
closes its idle keep-alive connections) is retried once on a fresh one.
"""

from __future__ import annotations

import base64
import os
from urllib.parse import quote

import httpx

from .errors import InvalidKey, KVError

DEFAULT_URL = "http://127.0.0.1:8000"


class ServerUnreachable(KVError, ConnectionError):
    """No kv server answered at the URL."""


class ServerError(KVError):
    """The server answered with an error status (its problem detail is the message)."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class Client:
    def __init__(self, url: str | None = None, timeout: float = 5.0, retries: int = 1):
        self.url = (url or os.environ.get("KV_URL") or DEFAULT_URL).rstrip("/")
        self.retries = retries
        self.http = httpx.Client(base_url=self.url, timeout=timeout, limits=httpx.Limits(max_keepalive_connections=4))
        self._batch_limit: int | None = None
        self._shards: dict | None = None
        self.last_generation: str | None = None

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                r = self.http.request(method, path, **kw)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                if attempt == self.retries:
                    raise ServerUnreachable(f"no kv server at {self.url} ({e}); start one with `kv serve DATA` or set --url / KV_URL") from None
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                if attempt == self.retries:
                    raise ServerUnreachable(f"kv server at {self.url} dropped the connection ({e})") from None
        self.last_generation = r.headers.get("x-kv-generation", self.last_generation)
        return r

    @staticmethod
    def _detail(r: httpx.Response) -> str:
        try:
            return r.json().get("detail", r.text)
        except ValueError:
            return r.text

    def get(self, key: str) -> bytes | None:
        """The value of `key`, or None if absent. InvalidKey for a malformed key."""
        r = self._request("GET", f"/v1/keys/{quote(key, safe='')}")  # a key is never a path: "../stats" stays a (malformed) key
        if r.status_code == 200:
            return r.content
        if r.status_code == 404:
            return None
        if r.status_code == 400:
            raise InvalidKey(self._detail(r))
        raise ServerError(r.status_code, self._detail(r))

    def batch_limit(self) -> int:
        if self._batch_limit is None:
            try:
                spec = self._request("GET", "/openapi.json").json()
                schema = spec["paths"]["/v1/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
                self._batch_limit = int(schema["properties"]["keys"]["maxItems"])
            except (KeyError, ValueError, TypeError):
                self._batch_limit = 1000
        return self._batch_limit

    def shard_map(self) -> dict | None:
        """The front's shard map (GET /v1/shards), or None for a single server."""
        if self._shards is None:
            r = self._request("GET", "/v1/shards")
            try:
                body = r.json() if r.status_code == 200 else {}
            except ValueError:
                body = {}
            self._shards = body if body.get("shards", 1) > 1 else {}
        return self._shards or None

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        """Values of the keys that are present. Behind a sharded front, one batch
        per shard, sent concurrently; else one request per batch-limit keys."""
        shards = self.shard_map()
        if not shards:
            return self._batches("/v1/batch", keys)
        try:
            return self._get_sharded(keys, shards)
        except ServerError as e:
            if e.status not in (404, 421):  # 421: a key's shard moved; 404: no such shard any more
                raise
        self._shards = None  # resharded since the map was read: read it again, and try once more
        shards = self.shard_map()
        return self._get_sharded(keys, shards) if shards else self._batches("/v1/batch", keys)

    def _get_sharded(self, keys: list[str], shards: dict) -> dict[str, bytes]:
        from concurrent.futures import ThreadPoolExecutor

        from .keys import canonical_key, shard_of

        groups: dict[int, list[str]] = {}
        for k in keys:
            groups.setdefault(shard_of(canonical_key(k), shards["shards"]), []).append(k)
        path = shards.get("batch_path", "/v1/shards/{index}/batch")
        out: dict[str, bytes] = {}
        with ThreadPoolExecutor(max_workers=min(8, len(groups))) as pool:
            for part in pool.map(lambda item: self._batches(path.format(index=item[0]), item[1]), groups.items()):
                out.update(part)
        return {k: out[k] for k in keys if k in out}  # in the order asked

    def _batches(self, path: str, keys: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        limit = self.batch_limit()
        for i in range(0, len(keys), limit):
            chunk = keys[i : i + limit]
            r = self._request("POST", path, json={"keys": chunk})
            if r.status_code == 400:
                raise InvalidKey(self._detail(r))
            if r.status_code != 200:
                raise ServerError(r.status_code, self._detail(r))
            body = r.json()
            for k, v in body.get("values", {}).items():
                out[k] = v.encode("utf-8")
            for k, v in body.get("values_base64", {}).items():
                out[k] = base64.b64decode(v)
        return out

    def stats(self) -> dict:
        r = self._request("GET", "/v1/stats")
        if r.status_code != 200:
            raise ServerError(r.status_code, self._detail(r))
        return r.json()

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
