"""`kill -USR1 <pid>` on a prunebench command prints every thread's stack and the command goes on; called
in-process with its output captured (no file behind stderr), the CLI starts as before."""

from __future__ import annotations

import io
import subprocess
import sys

from harness import cli


def test_usr1_prints_the_stacks_and_the_command_goes_on():
    code = ("import os, signal\nfrom harness import cli\ncli._stacks_on_usr1()\n"
            "def where_it_is():\n    os.kill(os.getpid(), signal.SIGUSR1)\n    print('went on')\nwhere_it_is()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "went on\n", r.stdout + r.stderr
    assert "most recent call first" in r.stderr and "where_it_is" in r.stderr, r.stderr


def test_cli_with_captured_stderr_starts(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # no fileno: faulthandler cannot write there
    cli._stacks_on_usr1()  # no error
    assert cli.main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in sys.stderr.getvalue()
