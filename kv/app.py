"""Compatibility: the HTTP layer lives in kv/http/ (see kv/http/__init__.py).
Deployed gunicorn configs and units name `kv.app:create_app()`, so it stays."""

from .http.app import create_app
from .http.fastpath import FastPath

__all__ = ["FastPath", "create_app"]
