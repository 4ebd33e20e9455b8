# SPDX-License-Identifier: GPL-2.0
"""A small kselftest-style TAP runner for the Python tests that run in the test VM
(scripts/run-selftests.sh -x counts them by their "# Totals" line).

    import ktap

    @ktap.test("what it proves")
    def _():
        assert ...

    sys.exit(ktap.main())
"""
import sys

_tests = []


def test(name):
    """Registers the decorated function as the test called name, in order."""
    def wrap(fn):
        _tests.append((name, fn))
        return fn
    return wrap


def skip_all(reason):
    """Reports the whole file as skipped (kselftest's exit status 4)."""
    print(f"1..0 # SKIP {reason}")
    print("# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:1 error:0")
    sys.exit(4)


def main(cleanup=None, max_lines=40):
    """Runs every test (one failure does not stop the others), then cleanup();
    prints the plan, a line per test, a failure's first max_lines lines as
    comments and the Totals line. Returns the exit status."""
    print("TAP version 13")
    print(f"1..{len(_tests)}")
    passed = failed = 0
    for i, (name, fn) in enumerate(_tests, 1):
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
    print(f"# Totals: pass:{passed} fail:{failed} xfail:0 xpass:0 skip:0 error:0")
    return 0 if failed == 0 else 1
