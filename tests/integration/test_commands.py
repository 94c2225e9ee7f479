"""The `kv` commands as a whole: one contract for every command module,
exit statuses in --help, a light `kv --help`/`kv get`/`kv stats`, one error
root, and the small fixes of `kv get`, `kv verify` and `kv deploy nginx`."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT, free_port
from serverutil import KV

from kv.cli import COMMANDS, main, make_parser
from kv.commands.exits import Exit

HEAVY = ("numpy", "gunicorn", "fastapi", "starlette", "uvicorn")
KEY = "3479d894-3271-4935-88cf-a06f3cbb80a5"


# -- one contract ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_module_has_add_arguments_run_and_exits(name):
    mod = importlib.import_module(f"kv.commands.{name}")
    assert callable(mod.add_arguments) and callable(mod.run)
    assert 0 in mod.EXITS and 2 in mod.EXITS
    assert all(isinstance(code, Exit) for code in mod.EXITS), mod.EXITS  # statuses from the one enum, not bare ints
    source = inspect.getsource(mod)
    assert not re.search(r"\breturn \d+\b", source), f"kv/commands/{name}.py returns a bare number: return an Exit"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_commands_help_lists_its_exit_statuses(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "exit status:" in out
    mod = importlib.import_module(f"kv.commands.{name}")
    for code, meaning in mod.EXITS.items():
        assert f"{int(code):<3} {meaning}" in out


def test_exit_statuses_are_one_enum():
    assert (Exit.OK, Exit.FAILED, Exit.MISSING, Exit.USAGE, Exit.UNREACHABLE) == (0, 1, 1, 2, 3)


# -- light commands --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["get", "--help"], ["stats", "--help"], ["serve", "--help"], ["get", KEY, "--url", "URL"], ["stats", "--url", "URL"]],
)
def test_client_commands_and_help_import_no_server_or_numpy_package(argv):
    argv = [a.replace("URL", f"http://127.0.0.1:{free_port()}") for a in argv]
    code = (
        "import sys\n"
        "from kv.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# -- one error root --------------------------------------------------------------------------------


def test_every_error_derives_from_kverror_and_stays_where_it_was():
    from kv.client import ServerError, ServerUnreachable
    from kv.errors import KVError, SettingError
    from kv.publish import PublishError
    from kv.serve import ServeError

    for cls in (PublishError, ServerUnreachable, ServerError, SettingError, ServeError):
        assert issubclass(cls, KVError), cls


# -- kv get ----------------------------------------------------------------------------------------


def test_get_help_says_what_one_and_several_keys_print(capsys):
    with pytest.raises(SystemExit):
        main(["get", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "one KEY prints its value's raw bytes, with no newline added" in out
    assert "on a terminal, where a newline ends it" in out and "`KEY<TAB>value` line each" in out


@pytest.fixture(scope="module")
def server(gen_table):
    from serverutil import running_server

    table, records = gen_table
    with running_server(table, workers=1) as (url, _):
        yield url, records


def test_get_takes_keys_starting_with_a_dash_after_double_dash(server):
    """After `--`, `-KEY` is a key (here a malformed one: the server's 400,
    exit 2 naming it), not an option; without `--` it is a usage error."""
    url, records = server
    assert make_parser().parse_args(["get", "--url", url, "--", "-x", KEY]).keys == ["-x", KEY]
    r = subprocess.run([KV, "get", "--url", url, "--", "-" + KEY[1:]], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "-" + KEY[1:] in r.stderr and "unrecognized arguments" not in r.stderr
    r = subprocess.run([KV, "get", "--url", url, "--", records[0][0], "-" + KEY[1:]], capture_output=True, timeout=30)
    assert r.returncode == 2
    r = subprocess.run([KV, "get", "--url", url, "-" + KEY[1:]], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "error:" in r.stderr  # taken for an option


def test_get_ends_a_value_with_a_newline_on_a_terminal_only(server):
    import pty

    url, records = server
    key, value = records[0]
    piped = subprocess.run([KV, "get", key, "--url", url], capture_output=True, timeout=30)
    assert piped.returncode == 0 and piped.stdout == value  # raw bytes, nothing added
    primary, secondary = pty.openpty()
    try:
        tty = subprocess.run([KV, "get", key, "--url", url], stdout=secondary, stderr=subprocess.PIPE, timeout=30)
        os.close(secondary)
        out = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(primary)
    assert tty.returncode == 0 and out.replace(b"\r\n", b"\n") == value + b"\n"


# -- kv verify -------------------------------------------------------------------------------------


def test_verify_names_a_corrupt_file_once(gen_table, tmp_path, capsys):
    path, _ = gen_table
    bad = tmp_path / "cut.kvt"
    bad.write_bytes(path.read_bytes()[:-1])
    assert main(["verify", str(bad)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{bad}: CORRUPT: ") and line.count(str(bad)) == 1, line


# -- kv deploy nginx -------------------------------------------------------------------------------


def test_deploy_nginx_help_example_is_a_command_that_runs(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["deploy", "nginx", "--help"])
    out = capsys.readouterr().out
    lines = out[out.index("  kv deploy nginx") :].split("\n\n")[0]
    assert "  kv deploy nginx --shards 2 \\\n      --upstream 0=127.0.0.1:8001,127.0.0.1:8002 \\\n" in lines
    argv = shlex.split(lines.replace("\\\n", " "))
    assert argv[:3] == ["kv", "deploy", "nginx"]
    argv[argv.index("-o") + 1] = str(tmp_path / "kv.conf")
    assert main(argv[1:]) == 0 and (tmp_path / "kv.conf").exists()


def test_deploy_nginx_conf_is_what_the_command_in_its_header_renders(capsys):
    """deploy/nginx/kv.conf is generated: its first line names the command;
    run from the repository root, that command writes the same file."""
    shipped = (ROOT / "deploy" / "nginx" / "kv.conf").read_text()
    first = shipped.splitlines()[0]
    command = first[first.index("`") + 1 : first.rindex("`")]
    argv = shlex.split(command)
    assert argv[:3] == ["kv", "deploy", "nginx"] and argv[-2:] == ["-o", "deploy/nginx/kv.conf"]
    from kv.deploy import command_line, parse_upstreams, render_nginx

    args = make_parser().parse_args(argv[1:])
    ups = parse_upstreams(args.upstream)
    rendered = render_nginx(
        args.shards,
        ups,
        listen=args.listen,
        max_fails=args.max_fails,
        fail_timeout=args.fail_timeout,
        command=command_line(
            args.shards, ups, listen=args.listen, max_fails=args.max_fails, fail_timeout=args.fail_timeout, output=args.output
        ),
    )
    assert rendered == shipped, "deploy/nginx/kv.conf is stale: run the command in its first line from the repository root"


def test_deploy_nginx_to_stdout_names_a_command_that_writes_to_stdout(capsys):
    code = main(["deploy", "nginx", "--shards", "1", "--upstream", "0=127.0.0.1:8001", "-o", "-"])
    out = capsys.readouterr().out
    assert code == 0 and "rendered by `kv deploy nginx --shards 1 --upstream 0=127.0.0.1:8001`" in out


def test_a_bad_kv_url_is_named(monkeypatch):
    from kv.client import Client
    from kv.errors import SettingError

    monkeypatch.setenv("KV_URL", "127.0.0.1:8000")
    with pytest.raises(SettingError, match="^KV_URL must be a server URL"):
        Client()


def test_deploy_nginx_for_string_keys_redirects_instead_of_mapping_prefixes(capsys):
    code = main(
        [
            "deploy",
            "nginx",
            "--keys",
            "string",
            "--shards",
            "2",
            "--upstream",
            "0=127.0.0.1:8001",
            "--upstream",
            "1=127.0.0.1:8002",
            "-o",
            "-",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "rendered by `kv deploy nginx --shards 2 --keys string " in out
    assert "map $kv_prefix" not in out and "upstream kv_any" in out
    assert 'location ~ "^/_kv_shard/(?<kv_redirect_index>[0-9]+)$"' in out and "internal;" in out
    assert '"key_kind":"string"' in out


def test_deploy_nginx_refuses_an_unknown_key_kind(capsys):
    with pytest.raises(SystemExit):
        main(["deploy", "nginx", "--keys", "int", "--shards", "1", "--upstream", "0=127.0.0.1:8001", "-o", "-"])


def test_operations_nginx_sample_is_the_commands_output_trimmed(capsys):
    """docs/OPERATIONS.md, "Render the nginx front": the command shown, run,
    prints every line of the sample below it, in order (`# ...` lines stand
    for lines left out)."""
    text = (ROOT / "docs" / "OPERATIONS.md").read_text()
    section = text[text.index("### Render the nginx front") :]
    shell = section[section.index("```sh\n") + 6 : section.index("```", section.index("```sh\n") + 6)]
    argv = shlex.split(shell.replace("\\\n", " "))
    assert argv[:3] == ["kv", "deploy", "nginx"] and argv[-2:] == ["-o", "/etc/nginx/kv/kv-4.conf"]
    assert main([*argv[1:-2], "-o", "-"]) == 0
    rendered = [line.strip() for line in capsys.readouterr().out.splitlines()]
    start = section.index("```nginx\n") + 9
    sample = [line.strip() for line in section[start : section.index("```", start)].splitlines()]
    shown = [line for line in sample if not line.startswith("# ...")]
    assert len(shown) > 40
    at = 0
    for line in shown:
        assert line in rendered[at:], f"OPERATIONS.md's nginx sample has {line!r}, which the command does not print (here)"
        at = rendered.index(line, at) + 1
