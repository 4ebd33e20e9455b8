#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""vmfork-trace (the libbpf tool) against a known workload, inside the test VM.

trace_workload (selftests/vmfork) does K forks, C COW breaks and R resets and prints
what the module's own counters say; `vmfork-trace --json -i 1` runs around it, is
stopped with SIGINT and its final summary must report exactly those counts (totals,
histogram samples, per-object COW breaks). Then the error paths: bad arguments, -c,
not root, tracefs not mounted, module not loaded, event layout mismatch.
Output: kselftest TAP with a "# Totals" line; the tool's output as "# | " lines.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import ktap  # noqa: E402
WORKLOAD = os.path.join(ROOT, "build", "selftests", "trace_workload")
TOOL = os.path.join(ROOT, "build", "bin", "vmfork-trace")
FORKS, WRITES, DELAY_MS = 20, 50, 100
BANNER = "Hit Ctrl-C to end."


def start(args):
    """Starts vmfork-trace; returns (process, stderr lines so far) once attached."""
    return ktap.start_until([TOOL] + args, BANNER)


def stop(p):
    return ktap.stop(p, "vmfork-trace")


def workload():
    return ktap.run_workload(WORKLOAD, FORKS, WRITES, DELAY_MS)


def parse_json_lines(out):
    objs = []
    for line in out.splitlines():
        try:
            objs.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise AssertionError(f"not a JSON line ({e}): {line!r}\n{out}")
    return objs


def hist_samples(h):
    return sum(b["count"] for b in h["buckets"])


def run_plain(args, **kw):
    return subprocess.run([TOOL] + args, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, **kw)


@ktap.test("--json around trace_workload: forks, COW breaks (total and per object), resets "
           "and histogram samples equal the module's counts; SIGINT ends it with status 0")
def _():
    p, err = start(["--json", "-i", "1"])
    wout, c = workload()
    time.sleep(1.5)  # at least one interval after the workload
    out, rest = stop(p)
    ktap.show(f"vmfork-trace --json -i 1   (trace_workload {FORKS} {WRITES} {DELAY_MS}: {wout})",
         "".join(err) + rest + out)
    assert p.returncode == 0, f"exit status {p.returncode}: {rest}"
    assert c["forks"] == FORKS and c["cow_breaks"] > 0 and c["resets"] == FORKS, c
    objs = parse_json_lines(out)
    assert objs and objs[-1]["type"] == "summary", out
    intervals = [o for o in objs[:-1] if o["type"] == "interval"]
    assert len(intervals) == len(objs) - 1 and len(intervals) >= 2, out
    s = objs[-1]
    assert s["intervals"] == len(intervals), s
    assert s["forks"] == c["forks"], (s["forks"], c)
    assert s["forks_live"] == c["forks"] and s["forks_template"] == 0, s
    live, tmpl = s["fork_latency_us"]["live"], s["fork_latency_us"]["template"]
    assert hist_samples(live) + hist_samples(tmpl) == c["forks"], s["fork_latency_us"]
    assert live["count"] == c["forks"] and live["max_ns"] > 0, live
    assert s["cow_breaks"] == c["cow_breaks"], (s["cow_breaks"], c)
    assert s["cow_unattributed"] == 0, s
    per_obj = s["cow_by_object"]
    assert sum(o["cow_breaks"] for o in per_obj) == c["cow_breaks"], per_obj
    # The parent and each child: FORKS + 1 objects broke pages.
    assert len(per_obj) == FORKS + 1, per_obj
    assert s["resets"] == c["resets"], (s["resets"], c)
    assert hist_samples(s["reset_latency_us"]) == c["resets"], s["reset_latency_us"]
    assert s["reset_latency_us"]["count"] == c["resets"], s["reset_latency_us"]
    # The intervals add up to the summary.
    for key in ("forks", "cow_breaks", "resets"):
        assert sum(i[key] for i in intervals) == s[key], (key, intervals)
    assert sum(sum(o["cow_breaks"] for o in i["cow_by_object"]) for i in intervals) == \
        c["cow_breaks"]
    assert any(i["cow_breaks_per_s"] > 0 for i in intervals), intervals


@ktap.test("text output around trace_workload: histograms, per-object COW/s, totals")
def _():
    p, err = start(["-i", "1", "--top", "3"])
    wout, c = workload()
    time.sleep(1.5)
    out, rest = stop(p)
    ktap.show(f"vmfork-trace -i 1 --top 3   (trace_workload {FORKS} {WRITES} {DELAY_MS}: {wout})",
         "".join(err) + rest + out)
    assert p.returncode == 0, f"exit status {p.returncode}: {rest}"
    assert "=== vmfork-trace totals" in out, out
    tail = out[out.index("=== vmfork-trace totals"):]
    assert f"forks {c['forks']} (live {c['forks']}, template 0)" in tail, tail
    assert f"COW breaks {c['cow_breaks']} (" in tail, tail
    assert f"resets {c['resets']} (" in tail, tail
    m = re.search(r"^live fork latency \(us\): (\d+) samples", tail, re.M)
    assert m and int(m.group(1)) == c["forks"], tail
    m = re.search(r"^reset latency \(us\): (\d+) samples", tail, re.M)
    assert m and int(m.group(1)) == c["resets"], tail
    bars = re.findall(r"^  \[[^\]\)]*[\]\)]\s+(\d+) \|@*\s*\|$", tail, re.M)
    assert sum(int(n) for n in bars) == c["forks"] + c["resets"], tail
    assert re.search(r"^\s+OBJECT\s+COW/s\s+COW$", out, re.M), out


@ktap.test("template forks (the flag on the first only) land in the template histogram")
def _():
    live, templates = 5, 5
    p, err = start(["--json", "-i", "1"])
    try:
        wout, c = ktap.run_workload(WORKLOAD, live, WRITES, DELAY_MS, f"templates={templates}")
    except BaseException:
        p.kill()
        p.communicate()
        raise
    time.sleep(1.5)
    out, rest = stop(p)
    ktap.show(f"vmfork-trace --json -i 1   (trace_workload {live} {WRITES} {DELAY_MS} "
              f"templates={templates}: {wout})", out.splitlines()[-1] if out else rest)
    assert p.returncode == 0, f"exit status {p.returncode}: {rest}"
    assert c["forks"] == live + templates and c["template_forks"] == templates, c
    s = parse_json_lines(out)[-1]
    assert s["type"] == "summary", out
    assert s["forks"] == c["forks"], (s["forks"], c)
    assert (s["forks_live"], s["forks_template"]) == (live, templates), s
    lat = s["fork_latency_us"]
    assert hist_samples(lat["live"]) == live, lat
    assert hist_samples(lat["template"]) == templates and lat["template"]["count"] == templates
    assert s["cow_breaks"] == c["cow_breaks"] and s["resets"] == c["resets"], (s, c)


@ktap.test("-c 2 -i 1 exits by itself after 2 intervals, status 0")
def _():
    t0 = time.monotonic()
    r = run_plain(["--json", "-c", "2", "-i", "1"])
    took = time.monotonic() - t0
    ktap.show("vmfork-trace --json -c 2 -i 1", r.stderr + r.stdout)
    assert r.returncode == 0, r
    objs = parse_json_lines(r.stdout)
    assert [o["type"] for o in objs] == ["interval", "interval", "summary"], objs
    assert not any(o["partial"] for o in objs[:2]), objs
    assert 1.5 <= took < 30, took


@ktap.test("bad arguments: exit status 2 and a message naming the problem")
def _():
    for args, want in ((["--bogus"], "--bogus"), (["-i", "0"], "interval"),
                       (["-i", "x"], "interval"), (["-c"], "count"), (["extra"], "extra")):
        r = run_plain(args)
        assert r.returncode == 2, (args, r)
        assert want in (r.stderr + r.stdout).lower(), (args, r)
    r = run_plain(["--help"])
    assert r.returncode == 0 and "--json" in r.stdout, r


@ktap.test("not root: exit status 1 and says to run as root / CAP_BPF")
def _():
    def drop():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    r = run_plain(["-c", "1"], preexec_fn=drop)
    ktap.show("vmfork-trace as uid 65534", r.stderr)
    assert r.returncode == 1, r
    assert "root" in r.stderr and "CAP_BPF" in r.stderr and "errno 1" in r.stderr, r


@ktap.test("tracefs not mounted: exit status 1 and the mount command")
def _():
    if not shutil.which("unshare"):
        raise AssertionError("unshare (util-linux) missing")
    script = ("for m in $(awk '$3 == \"tracefs\" {print $2}' /proc/self/mounts); do "
              "umount -l \"$m\" || exit 99; done; exec \"$0\" -c 1")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, TOOL],
                       capture_output=True, text=True, timeout=60)
    ktap.show("vmfork-trace with tracefs unmounted (own mount namespace)", r.stderr)
    assert r.returncode == 1, r
    assert "tracefs is not mounted" in r.stderr and "mount -t tracefs" in r.stderr, r


def fake_tracefs(tmp, edit=None):
    """A copy of the vmfork event formats; edit(event, text) may change one."""
    real = None
    for line in open("/proc/self/mounts"):
        f = line.split()
        if f[2] == "tracefs":
            real = f[1]
            if real == "/sys/kernel/tracing":
                break
    for ev in sorted(os.listdir(os.path.join(real, "events", "vmfork"))):
        src = os.path.join(real, "events", "vmfork", ev, "format")
        if not os.path.isfile(src):
            continue
        d = os.path.join(tmp, "events", "vmfork", ev)
        os.makedirs(d)
        text = open(src).read()
        with open(os.path.join(d, "format"), "w") as out:
            out.write(edit(ev, text) if edit else text)
    return tmp


@ktap.test("event layout checked: a copy of the module's formats passes, a field at "
           "another offset or size is refused (exit 1, names the field)")
def _():
    with tempfile.TemporaryDirectory() as tmp:
        good = fake_tracefs(os.path.join(tmp, "good"))
        r = run_plain(["--json", "-c", "1", "--tracefs", good])
        assert r.returncode == 0, r

        def move(ev, text):
            if ev != "vmfork_fork":
                return text
            return re.sub(r"(duration_ns;\s*offset:)(\d+)", lambda m: m.group(1) +
                          str(int(m.group(2)) + 8), text)
        bad = fake_tracefs(os.path.join(tmp, "bad"), move)
        r = run_plain(["-c", "1", "--tracefs", bad])
        ktap.show("vmfork-trace --tracefs <copy with vmfork_fork.duration_ns moved>", r.stderr)
        assert r.returncode == 1, r
        assert "do not match" in r.stderr and "vmfork_fork: field duration_ns" in r.stderr, r

        def shrink(ev, text):
            return text.replace("u64 pgoff;\toffset:16;\tsize:8;",
                                "u32 pgoff;\toffset:16;\tsize:4;") if ev == "vmfork_cow" else text
        bad2 = fake_tracefs(os.path.join(tmp, "bad2"), shrink)
        with open(os.path.join(bad2, "events", "vmfork", "vmfork_cow", "format")) as f:
            assert "size:4;" in f.read(), "the test's edit did not apply"
        r = run_plain(["-c", "1", "--tracefs", bad2])
        assert r.returncode == 1 and "field pgoff" in r.stderr, r

        os.makedirs(os.path.join(tmp, "empty", "events"))
        r = run_plain(["-c", "1", "--tracefs", os.path.join(tmp, "empty")])
        assert r.returncode == 1, r
        assert "module is not loaded" in r.stderr and "insmod kmod/vmfork.ko" in r.stderr, r


@ktap.test("module not loaded (rmmod vmfork): exit status 1, says to insmod kmod/vmfork.ko")
def _():
    ko = os.environ.get("VMFORK_KO")
    if not ko:
        raise AssertionError("VMFORK_KO is not set (run inside scripts/vm-run.sh)")
    rm = subprocess.run(["rmmod", "vmfork"], capture_output=True, text=True)
    assert rm.returncode == 0, f"rmmod vmfork: {rm.stderr}"
    try:
        r = run_plain(["-c", "1"])
    finally:
        ins = subprocess.run(["insmod", ko], capture_output=True, text=True)
    ktap.show("vmfork-trace without the module", r.stderr)
    assert ins.returncode == 0, f"insmod {ko}: {ins.stderr}"
    assert r.returncode == 1, r
    assert "module is not loaded" in r.stderr and "insmod kmod/vmfork.ko" in r.stderr, r


if __name__ == "__main__":
    if not os.path.exists("/dev/vmfork") or os.geteuid() != 0:
        ktap.skip_all("needs root and the vmfork module (run it in the test VM)")
    if not os.access(TOOL, os.X_OK):
        print(f"# {TOOL} missing: make userspace")
    sys.exit(ktap.main())
