"""Subcommands of the `kv` CLI that work on local files."""
