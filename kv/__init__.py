"""kv: a read-only key-value server for immutable data.

>>> import kv
>>> table = kv.open_table("example.kvt")
>>> table.get("f8a24bb8-eff8-41dc-929b-10b4c3e49e05")
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .errors import DataFormatError, DuplicateKey, InvalidKey, KVError, SettingError, TableCorrupt
from .keys import canonical_key
from .table import Table, open_table

if TYPE_CHECKING:
    from .report import BuildReport


def build_table(*args: Any, **kwargs: Any) -> "BuildReport":
    """See kv.build.build_table (imported lazily: it needs numpy)."""
    from .build import build_table as _build

    return _build(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(name)


__all__ = [
    "Client",
    "DataFormatError",
    "DuplicateKey",
    "InvalidKey",
    "KVError",
    "SettingError",
    "Table",
    "TableCorrupt",
    "build_table",
    "canonical_key",
    "open_table",
]
