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
import signal
import subprocess
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
    p = subprocess.Popen(["bpftrace", os.path.join(ROOT, "bpf", script)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    head = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the BEGIN line means every probe is attached
        line = p.stdout.readline()
        if not line:
            break
        head.append(line)
        if "Ctrl-C" in line:
            break
    else:
        p.kill()
        raise AssertionError(f"{script} did not start in 60 s: {''.join(head)}")
    if p.poll() is not None:
        raise AssertionError(f"{script} exited at once: {''.join(head)}{p.stdout.read()}")
    w = subprocess.run([WORKLOAD, str(FORKS), str(WRITES), str(DELAY_MS)],
                       capture_output=True, text=True, timeout=120)
    if w.returncode != 0:
        p.kill()
        raise AssertionError(f"trace_workload failed: {w.stderr}")
    counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", w.stdout))
    time.sleep(2.5)  # let per-second views print a line after the workload
    p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        # bpftrace 0.17 sometimes misses a SIGINT on 6.12 (seen once in a few
        # runs): a second one ends it; say so in the log.
        print(f"# {script}: still running 30 s after SIGINT, sending another")
        p.send_signal(signal.SIGINT)
        try:
            out, _ = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            raise AssertionError(f"{script} did not exit within 60 s of two SIGINTs")
    out = "".join(head) + out
    # The whole output, for the log (and the *_example.txt files in bpf/).
    print(f"# | bpftrace bpf/{script}   (trace_workload {FORKS} {WRITES} {DELAY_MS}: "
          f"{w.stdout.strip()})")
    for line in out.splitlines():
        print(f"# | {line}")
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
