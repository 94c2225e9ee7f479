"""Run a command inside the parts of a systemd unit's sandbox that can be
rebuilt without systemd, so a test can check that the service works under
them (systemd itself does not run in a container):

    python tests/unit_sandbox.py UNIT_FILE -- COMMAND [ARGS...]

What it applies, read from UNIT_FILE's [Service] section:

- SystemCallFilter= (allow list, then ~deny lists), SystemCallErrorNumber=,
  SystemCallArchitectures=native: a seccomp filter built with libseccomp from
  the groups `systemd-analyze syscall-filter` prints, so the lists are the
  installed systemd's own.
- MemoryDenyWriteExecute=yes: the seccomp rules systemd installs for it
  (mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC,
  shmat with SHM_EXEC are refused with EPERM).
- RestrictAddressFamilies=: socket() of any other family fails with
  EAFNOSUPPORT.
- NoNewPrivileges=, UMask=, LimitNOFILE= (capped at the hard limit the
  container allows).
- CapabilityBoundingSet= and AmbientCapabilities= empty: every capability is
  dropped, so even uid 0 cannot write a directory owned by another user.

Not applied (they need systemd or mount namespaces): the file-system
protections (ProtectSystem=, ReadOnlyPaths=, PrivateTmp=...), PrivateUsers=,
IPAddressDeny=, memory and task limits, and DynamicUser='s fresh uid (the
test's interpreter may live where another uid cannot reach). A table directory
owned by another uid, 0755, stands in for ReadOnlyPaths=: without
CAP_DAC_OVERRIDE the service cannot write it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import resource
import shlex
import subprocess
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000
ADDRESS_FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17}
AF_MAX = 46


def SCMP_ACT_ERRNO(e: int) -> int:
    return 0x00050000 | (e & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def service_settings(unit_text: str) -> list[tuple[str, str]]:
    """(name, value) pairs of the [Service] section, in order (repeats kept)."""
    out, section = [], None
    for line in unit_text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]" and "=" in line:
            name, value = line.split("=", 1)
            out.append((name.strip(), value.strip()))
    return out


def expand(names: list[str], seen: set | None = None) -> set[str]:
    """Syscall names of systemd groups (@name) and plain names, recursively."""
    seen = set() if seen is None else seen
    out = set()
    groups = [n for n in names if n.startswith("@")]
    if groups:
        text = subprocess.run(["systemd-analyze", "syscall-filter", *groups], capture_output=True, text=True, check=True).stdout
        current = None
        for line in text.splitlines():
            if line and not line[0].isspace():
                current = line.strip()
                continue
            item = line.strip()
            if not item or item.startswith("#") or current not in groups:
                continue
            if item.startswith("@"):
                if item not in seen:
                    seen.add(item)
                    out |= expand([item], seen)
            else:
                out.add(item)
    out |= {n for n in names if not n.startswith("@")}
    return out


def allowed_syscalls(settings: list[tuple[str, str]]) -> set[str] | None:
    """The allow list SystemCallFilter= lines amount to (None: no filter)."""
    allowed: set[str] | None = None
    for name, value in settings:
        if name != "SystemCallFilter" or not value:
            continue
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        if deny:
            if allowed is None:
                raise SystemExit("unit_sandbox: a deny-only SystemCallFilter is not supported here")
            allowed -= expand(names)
        else:
            allowed = (allowed or set()) | expand(names)
    return allowed


class Seccomp:
    def __init__(self, default_action: int):
        lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.ctx = lib.seccomp_init(default_action)
        if not self.ctx:
            raise OSError("seccomp_init failed")

    def rule(self, action: int, syscall: str, *cmps: tuple[int, int, int, int]) -> None:
        nr = self.lib.seccomp_syscall_resolve_name(syscall.encode())
        if nr < 0:  # not a syscall of this architecture (e.g. mmap2 on x86-64)
            return
        arr = (ArgCmp * max(1, len(cmps)))(*[ArgCmp(*c) for c in cmps])
        rc = self.lib.seccomp_rule_add_array(self.ctx, action, nr, len(cmps), arr)
        if rc < 0:
            raise OSError(-rc, f"seccomp_rule_add({syscall}): {os.strerror(-rc)}")

    def load(self) -> None:
        rc = self.lib.seccomp_load(self.ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")
        self.lib.seccomp_release(self.ctx)


def drop_all_capabilities() -> None:
    """Empty the bounding set and the process's own sets: uid 0 stays uid 0
    but can no longer bypass file permissions (CAP_DAC_OVERRIDE) or do
    anything else privileged, and exec() cannot give capabilities back."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_CAPBSET_DROP = 24
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def apply(settings: list[tuple[str, str]]) -> None:
    allowed = allowed_syscalls(settings)  # before dropping privileges: runs systemd-analyze
    s = {}
    for name, value in settings:
        s[name] = value  # later assignments win, as in systemd (lists handled above)
    if "UMask" in s:
        os.umask(int(s["UMask"], 8))
    if "LimitNOFILE" in s:
        soft, _, hard = s["LimitNOFILE"].partition(":")
        cap = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # a container may forbid raising it
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(int(soft), cap), min(int(hard or soft), cap)))
    if s.get("CapabilityBoundingSet", None) == "" and s.get("AmbientCapabilities", "") == "":
        drop_all_capabilities()
    # seccomp needs no_new_privs (libseccomp sets it); the unit asks for it anyway.
    errno_action = SCMP_ACT_ERRNO(getattr(errno, s.get("SystemCallErrorNumber", "EPERM")))

    extra = Seccomp(SCMP_ACT_ALLOW)
    have_extra = False
    if s.get("MemoryDenyWriteExecute") == "yes":
        eperm = SCMP_ACT_ERRNO(errno.EPERM)
        wx = PROT_WRITE | PROT_EXEC
        for call in ("mmap", "mmap2"):
            extra.rule(eperm, call, (2, SCMP_CMP_MASKED_EQ, wx, wx))
        for call in ("mprotect", "pkey_mprotect"):
            extra.rule(eperm, call, (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        extra.rule(eperm, "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
        have_extra = True
    if s.get("RestrictAddressFamilies"):
        keep = {ADDRESS_FAMILIES[f] for f in s["RestrictAddressFamilies"].split()}
        for family in range(AF_MAX):
            if family not in keep:
                extra.rule(SCMP_ACT_ERRNO(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_EQ, family, 0))
        have_extra = True
    if have_extra:
        extra.load()
    if allowed is not None:  # last: the allow list itself forbids seccomp(2)
        f = Seccomp(errno_action)
        for name in sorted(allowed):
            f.rule(SCMP_ACT_ALLOW, name)
        f.load()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        settings = service_settings(f.read())
    apply(settings)
    cmd = argv[2:]
    try:
        os.execv(cmd[0], cmd)
    except OSError as e:
        print(f"unit_sandbox: cannot run {shlex.join(cmd)}: {e}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
