# SPDX-License-Identifier: GPL-2.0
"""A small kselftest-style TAP runner for the Python tests that run in the test VM
(scripts/run-selftests.sh -x counts them by their "# Totals" line).

    import ktap

    @ktap.test("what it proves")
    def _():
        assert ...

    sys.exit(ktap.main())

It also holds what several of those tests do with long-running tools (vmfork-trace,
bpftrace): start one until its banner, stop it with SIGINT, log its output, and run
selftests/vmfork/trace_workload.
"""
import os
import re
import signal
import subprocess
import sys
import threading

_tests = []


def test(name, needs=(), always=False):
    """Registers the decorated function as the test called name, in order. needs: the
    numbers of earlier tests whose results (a booted guest, its clones) this one uses;
    always: it runs whenever any test runs (a final scan or cleanup). Both only matter
    with VMFORK_KTAP_ONLY or VMFORK_KTAP_SUBSET (main())."""
    def wrap(fn):
        _tests.append((name, fn, tuple(needs), always))
        return fn
    return wrap


def skip_all(reason):
    """Reports the whole file as skipped (kselftest's exit status 4)."""
    print(f"1..0 # SKIP {reason}")
    print("# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:1 error:0")
    sys.exit(4)


def _numbers(var):
    """The tests named in environment variable var ("4,8"), with the tests they need
    (transitively) and the "always" ones; None when var is unset or empty."""
    only = os.environ.get(var, "")
    if not only:
        return None
    try:
        todo = [int(n) for n in only.split(",")]
    except ValueError:
        sys.exit(f"ktap: {var}={only!r}: expected test numbers, like 1,4")
    bad = [n for n in todo if not 1 <= n <= len(_tests)]
    if bad:
        sys.exit(f"ktap: {var}={only!r}: no test {bad[0]} (1..{len(_tests)})")
    selected = {i for i, t in enumerate(_tests, 1) if t[3]}
    while todo:
        n = todo.pop()
        if n not in selected:
            selected.add(n)
            todo.extend(_tests[n - 1][2])
    return selected


def main(cleanup=None, max_lines=40):
    """Runs every test (one failure does not stop the others), then cleanup();
    prints the plan, a line per test, a failure's first max_lines lines as
    comments and the Totals line. Returns the exit status.

    Two selections, by test number, each with the tests the named ones need and the
    "always" ones:
      VMFORK_KTAP_SUBSET  what this file runs in this configuration (a slow kernel
                          runs part of a suite, as a gtest filter does): the others
                          are not run and not counted, a "# not run: N" comment each.
      VMFORK_KTAP_ONLY    to debug one test, or to run again only what failed: the
                          others are reported as skipped ("# SKIP not in
                          VMFORK_KTAP_ONLY"), since they ran before.
    """
    subset = _numbers("VMFORK_KTAP_SUBSET")
    selected = _numbers("VMFORK_KTAP_ONLY")
    print("TAP version 13")
    print(f"1..{len(_tests)}")
    passed = failed = skipped = 0
    for i, (name, fn, _, _) in enumerate(_tests, 1):
        if subset is not None and i not in subset:
            print(f"# not run: {i} {name} (not in VMFORK_KTAP_SUBSET)")
            continue
        if selected is not None and i not in selected:
            print(f"ok {i} {name} # SKIP not in VMFORK_KTAP_ONLY")
            skipped += 1
            continue
        try:
            fn()
            print(f"ok {i} {name}")
            passed += 1
        except Exception as e:
            lines = f"{type(e).__name__}: {e}".splitlines()
            for line in lines[:max_lines]:
                print(f"# {line}")
            print(f"not ok {i} {name}")
            failed += 1
        sys.stdout.flush()
    if cleanup:
        cleanup()
    print(f"# Totals: pass:{passed} fail:{failed} xfail:0 xpass:0 skip:{skipped} error:0")
    return 0 if failed == 0 else 1


def show(title, text):
    """Logs a tool's output as "# | " comment lines under a title line."""
    print(f"# | {title}")
    for line in text.splitlines():
        print(f"# | {line}")


def start_until(cmd, marker, stream="stderr", merge=False, timeout=60, env=None):
    """Starts cmd in its own session with stdin closed; returns (process, the lines
    read so far) once a line of stream ("stdout" or "stderr") contains marker. With
    merge, stderr goes to stdout. A tool that exits first or shows no marker within
    timeout seconds is killed and fails the test with what it printed."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True, start_new_session=True, env=env)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    seen = []
    try:
        for line in getattr(p, stream):
            seen.append(line)
            if marker in line:
                return p, seen
    finally:
        timer.cancel()
    p.kill()
    out, err = p.communicate()
    raise AssertionError(f"{' '.join(cmd)} did not start (status {p.returncode}, "
                         f"{timeout} s allowed):\n{''.join(seen)}{out or ''}{err or ''}")


def stop(p, what, sigints=1, timeout=30):
    """Sends SIGINT (up to sigints times, timeout seconds apart) and returns
    communicate()'s (stdout, stderr); kills p and fails if it is still running.
    bpftrace 0.17 has been seen to miss one SIGINT on 6.12: give it sigints=2."""
    for attempt in range(1, sigints + 1):
        p.send_signal(signal.SIGINT)
        try:
            return p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"# {what}: still running {timeout} s after SIGINT #{attempt}")
    p.kill()
    p.communicate()
    raise AssertionError(f"{what} did not exit within {timeout} s of SIGINT "
                         f"(sent {sigints})")


def counts(text):
    """The "name=N" pairs of a line such as trace_workload's, as a dict of ints."""
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", text)}


def run_workload(path, *args, timeout=120):
    """Runs trace_workload (or a tool like it) to the end; returns (its stdout
    stripped, counts(stdout)). Fails on a non-zero exit status."""
    w = subprocess.run([path] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    assert w.returncode == 0, f"{path} failed (status {w.returncode}): {w.stderr}"
    return w.stdout.strip(), counts(w.stdout)
