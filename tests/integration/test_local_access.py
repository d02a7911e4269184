"""Who may reach the stack's PostgreSQL clusters: run as an unprivileged OS user (root passes any
directory permission, so the test drops to `nobody`), every way in without the password is
refused — the socket's folder cannot even be entered, and TCP asks for a scram password for the
superuser and migwatch's role alike — while the password lets one in over TCP."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from migwatch.stack import Stack
from migwatch.stack.base import PG_BIN

PSQL = str(PG_BIN / "psql")


def as_unprivileged(args: list[str],
                    password: str | None = None) -> subprocess.CompletedProcess[str]:
    """psql as `nobody` (runuser keeps the environment, so the password never is an argument)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PGCONNECT_TIMEOUT": "5"}
    if password is not None:
        env["PGPASSWORD"] = password
    cmd = [PSQL, "-w", "-X", "-At", *args, "-c", "SELECT current_user"]
    if os.geteuid() == 0:
        cmd = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "nobody", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)


@pytest.mark.parametrize("cluster", ["source", "target"])
def test_no_way_in_without_the_password(stack: Stack, cluster: str) -> None:
    s = stack.s
    port = str(s.pg_source_port if cluster == "source" else s.pg_target_port)
    sockets = s.state_dir / "pg" / "sockets"
    password = s.pg_password.get_secret_value()

    by_socket = as_unprivileged(["-h", str(sockets), "-p", port, "-U", "postgres",
                                 "-d", "postgres"])
    assert by_socket.returncode != 0 and "Permission denied" in by_socket.stderr, by_socket
    for user in ("postgres", s.pg_user):
        no_password = as_unprivileged(["-h", s.host, "-p", port, "-U", user, "-d", "postgres"])
        assert no_password.returncode != 0 and "no password supplied" in no_password.stderr
        wrong = as_unprivileged(["-h", s.host, "-p", port, "-U", user, "-d", "postgres"],
                                password="not-" + password)
        assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    right = as_unprivileged(["-h", s.host, "-p", port, "-U", s.pg_user, "-d", "postgres"],
                            password=password)
    assert right.returncode == 0 and right.stdout.strip() == s.pg_user, right.stderr
