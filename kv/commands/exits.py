"""Exit statuses of the `kv` commands, one list for all of them. Each command
names the ones it uses (`EXITS`); `kv COMMAND --help` lists them."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    FAILED = 1  # the work was refused or failed: bad data, corrupt table, busy port, ...
    MISSING = 1  # kv get: a key is not in the table (same status as FAILED)
    USAGE = 2  # bad arguments, a bad KV_* value, a malformed key
    UNREACHABLE = 3  # no kv server answered (refused, dropped, silent past --timeout)
    REFUSED = 4  # the server refused: no or a wrong token (401, 403), or no writes here (405)
    INTERRUPTED = 130  # Ctrl-C


def for_status(status: int) -> Exit:
    """A server's error answer as an exit status, the same in every client
    command: refused (401, 403, 405: a token is missing or wrong, or the server
    takes no writes), a server failure (5xx) as unreachable, any other 4xx a
    usage error (a request the server cannot take as asked)."""
    if status in (401, 403, 405):
        return Exit.REFUSED
    return Exit.UNREACHABLE if status >= 500 else Exit.USAGE


def epilog(exits: dict[Exit, str], example: str = "") -> str:
    """The `--help` epilog: an example, then the exit statuses, one a line."""
    lines = [f"example: {example}", ""] if example else []
    lines.append("exit status:")
    lines += [f"  {int(code):<3} {meaning}" for code, meaning in exits.items()]
    return "\n".join(lines)
