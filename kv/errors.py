"""Error types. Each carries a message that says what went wrong and where."""


class KVError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidKey(KVError, ValueError):
    """A key that is not a UUID in 8-4-4-4-12 or 32-hex form."""


class TableCorrupt(KVError):
    """A table file that is truncated, foreign, of another version or damaged."""


class DataFormatError(KVError, ValueError):
    """A data file line that breaks the input format (names file and line)."""


class DuplicateKey(DataFormatError):
    """The same key on two lines of a data file, under --on-duplicate=error."""


class SettingError(KVError, ValueError):
    """A setting's value (flag, KV_* variable or config file) that does not
    parse; the message names where the value came from (see kv/settings.py)."""


class ServeError(KVError):
    """`kv serve` cannot start; the message says why in one line."""
