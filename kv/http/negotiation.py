"""Content negotiation: the media type a value is served as, whether a client
asked for JSON instead, and whether its cached copy is still current.

Media types compare case-insensitively (RFC 9110, 8.3.1): `application/JSON`
asks for JSON as `application/json` does.
"""

from __future__ import annotations

TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
JSON = "application/json"

# Ranges a raw value satisfies: listed above JSON, they win.
RAW_TYPES = {"text/plain", "application/octet-stream", "text/*", "*/*"}


def content_type(value: bytes) -> str:
    """text/plain for UTF-8 values (ASCII included), application/octet-stream otherwise."""
    if value.isascii():
        return TEXT
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return BINARY
    return TEXT


def etag_matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110, 13.1.2): W/"x" matches "x"."""
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def mentions_json(accept: str) -> bool:
    """The cheap test before `wants_json`: can this Accept value ask for JSON at all?"""
    return "json" in accept.lower()


def wants_json(accept: str) -> bool:
    """True when Accept ranks application/json above the raw value's types:
    listed with q > 0 and no raw-compatible range (text/plain, */*, ...) with
    a higher q. `application/json, */*;q=0.5` is JSON; `*/*;q=0.8, application/json;q=0.1`
    and `application/json;q=0` are not."""
    json_q, raw_q = 0.0, 0.0
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == JSON:
            json_q = max(json_q, q)
        elif media in RAW_TYPES:
            raw_q = max(raw_q, q)
    return json_q > 0 and json_q >= raw_q
