"""``python -m tests.support.orphan_guard ARGS``: run ``statnet ARGS``, dying with the parent.

A statnet process a test starts must not outlive the test run, even one cut
short (a timeout, a crash) before its fixtures tear down. The child asks the
kernel for SIGKILL when its parent dies, then runs the CLI in the same process.
"""
import ctypes
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1
ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
sys.argv = ["statnet", *sys.argv[1:]]
runpy.run_module("services.cli", run_name="__main__")
