"""The `kv` commands, one module each, all with the same contract (see kv/cli.py):
`add_arguments(parser)`, `run(args) -> int`, `EXITS` (kv/commands/exits.py).
A command module imports only light modules at the top; its `run` imports the
engine it drives."""
