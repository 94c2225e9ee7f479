"""The parsers of kv's settings (kv/settings.py): text -> value, or
ValueError("must be ..., not 'text'"), which the registry turns into a
message naming where the text came from. Standard library only."""

from __future__ import annotations

LOG_LEVELS = ("debug", "info", "warning", "error")


def address(text: str) -> str:
    """HOST:PORT, unix:PATH or fd://N (what gunicorn's bind takes)."""
    if text.startswith(("unix:", "fd://")):
        return text
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT (e.g. 127.0.0.1:8000), not {text!r}")
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"must be a whole number, at least 1, not {text!r}")
    return value


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:  # also refuses nan
        raise ValueError(f"must be a positive number of seconds, not {text!r}")
    return seconds


def log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, not {text!r}")
    return text.lower()


def server_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"must be a server URL starting with http:// or https://, not {text!r}")
    return text.rstrip("/")


def file_path(text: str) -> str:
    if not text:
        raise ValueError("must be a file name, not empty")
    return text


def bearer_token(text: str) -> str:
    """A read token as the server's token file holds it (never echoed in the message)."""
    if not text or not all("!" <= c <= "~" for c in text):
        raise ValueError("must be a token of visible ASCII characters without spaces")
    return text
