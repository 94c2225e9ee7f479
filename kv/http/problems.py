"""RFC 9457 problem details: every error kv answers is one of these, a JSON
object with type, title, status and detail (and sometimes more members, such
as the keys a batch could not use), served as application/problem+json.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse

PROBLEM = "application/problem+json"


class ProblemResponse(JSONResponse):
    """JSONResponse (the same bytes) that cannot fail on what it echoes.

    A problem may echo client input, and JSON lets a client send a string no
    UTF-8 can encode: a lone surrogate such as "\\ud800". Such a body is
    written with JSON escapes instead (ASCII, the surrogate as `\\ud800`, as
    the client wrote it), so the answer is still a valid JSON problem, never a
    500 from the encoder."""

    media_type = PROBLEM

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def problem(status: int, title: str, detail: str, headers: dict | None = None, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem details response; `extra` adds members after detail."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return ProblemResponse(body, status_code=status, headers=headers)
