#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The bpftrace dashboards against a known workload, inside the test VM.

trace_workload (selftests/vmfork) does K forks, COW breaks and R resets and prints
what the module's own counters say; each dashboard runs around it for a bounded
time and must report the same counts. Output: kselftest TAP with a "# Totals" line.
Each dashboard's output is printed as "# | " lines.
"""
import os
import re
import shutil
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import ktap  # noqa: E402
WORKLOAD = os.path.join(ROOT, "build", "selftests", "trace_workload")
FORKS, WRITES, DELAY_MS = 20, 50, 100


def run_dashboard(script):
    """Starts bpftrace on script, runs the workload once attached, then stops it."""
    # The BEGIN line ("... Ctrl-C ...") means every probe is attached.
    p, head = ktap.start_until(["bpftrace", os.path.join(ROOT, "bpf", script)], "Ctrl-C",
                               stream="stdout", merge=True)
    try:
        wout, counts = ktap.run_workload(WORKLOAD, FORKS, WRITES, DELAY_MS)
    except BaseException:
        p.kill()
        p.communicate()
        raise
    time.sleep(2.5)  # let per-second views print a line after the workload
    out, _ = ktap.stop(p, f"bpftrace {script}", sigints=2)
    out = "".join(head) + out
    # The whole output, for the log (and the *_example.txt files in bpf/).
    ktap.show(f"bpftrace bpf/{script}   (trace_workload {FORKS} {WRITES} {DELAY_MS}: {wout})",
              out)
    return out, counts


def scalar(out, name):
    m = re.search(rf"^@{name}: (\d+)$", out, re.M)
    if not m:
        raise AssertionError(f"no @{name} in the output:\n{out}")
    return int(m.group(1))


def hist_samples(out, name):
    m = re.search(rf"^@{name}:\s*\n((?:\[.*\n)+)", out, re.M)
    if not m:
        raise AssertionError(f"no histogram @{name} in the output:\n{out}")
    # "[8, 16)   17 |@@@@   |" or "[1]   3 |@   |"
    return sum(int(n) for n in re.findall(r"^\[[^\]\)]*[\]\)]\s+(\d+)\s+\|", m.group(1), re.M))


@ktap.test("vmfork-forklat.bt: one histogram sample per fork, K in all")
def _():
    out, c = run_dashboard("vmfork-forklat.bt")
    assert c["forks"] == FORKS, c
    assert scalar(out, "forks") == FORKS, out
    assert hist_samples(out, "live_fork_us") == FORKS, out


@ktap.test("vmfork-cow.bt: per-object COW rates each second, totals equal the module's count")
def _():
    out, c = run_dashboard("vmfork-cow.bt")
    assert c["cow_breaks"] > 0, c
    assert scalar(out, "cows") == c["cow_breaks"], (c, out)
    per_sec = re.findall(r"^@cow_per_object\[\d+\]: (\d+)$", out, re.M)
    assert per_sec and all(int(n) > 0 for n in per_sec), out  # top 10 of each second
    assert "COW breaks/s by object id" in out


@ktap.test("vmfork-top.bt: per-second lines and totals equal forks, COW breaks and resets")
def _():
    out, c = run_dashboard("vmfork-top.bt")
    assert scalar(out, "forks") == c["forks"], out
    assert scalar(out, "resets") == c["resets"], out
    assert scalar(out, "cows") == c["cow_breaks"], out
    lines = re.findall(r"^\d\d:\d\d:\d\d\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+<=", out, re.M)
    assert lines, out
    assert sum(int(l[0]) for l in lines) == c["forks"], out
    assert sum(int(l[2]) for l in lines) == c["resets"], out
    assert any(int(l[0]) > 0 for l in lines)


if __name__ == "__main__":
    missing = [w for w in ("/dev/vmfork",) if not os.path.exists(w)]
    if missing or not shutil.which("bpftrace") or os.geteuid() != 0:
        ktap.skip_all("needs root, bpftrace and the vmfork module (run it in the test VM)")
    sys.exit(ktap.main())
