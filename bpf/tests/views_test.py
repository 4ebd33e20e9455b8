#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The three ways of looking at vmfork agree on one workload, inside the test VM.

While `vmfork-trace --json` (libbpf) and `bpftrace bpf/vmfork-top.bt` both run,
`trace_workload K 50 100 hold` does K forks, its COW breaks and K resets, prints the
module's own counts (VMFORK_GET_STATS) and keeps every object open. Then
`vmfork stats --json` (generic netlink, libnl) reads those objects. The four views
(ioctl, netlink, libbpf, bpftrace) must report the same forks, COW breaks and resets.
The outputs go to the log as "# | " lines: they are the evidence for issue #5.
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
TRACE = os.path.join(ROOT, "build", "bin", "vmfork-trace")
VMFORK = os.path.join(ROOT, "build", "bin", "vmfork")
TOP = os.path.join(ROOT, "bpf", "vmfork-top.bt")
FORKS, WRITES, DELAY_MS = 20, 50, 100


def scalar(out, name):
    m = re.search(rf"^@{name}: (\d+)$", out, re.M)
    if not m:
        raise AssertionError(f"no @{name} in the bpftrace output:\n{out}")
    return int(m.group(1))


@ktap.test("netlink stats, vmfork-trace (libbpf) and vmfork-top.bt (bpftrace) agree with "
           "the module's own counts on one workload")
def _():
    trace, trace_err = ktap.start_until([TRACE, "--json", "-i", "1"], "Hit Ctrl-C")
    try:
        top, top_head = ktap.start_until(["bpftrace", TOP], "Ctrl-C", stream="stdout")
    except AssertionError:
        trace.kill()
        raise
    work = subprocess.Popen([WORKLOAD, str(FORKS), str(WRITES), str(DELAY_MS), "hold"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = work.stdout.readline()
        module = ktap.counts(line)
        assert set(module) == {"forks", "cow_breaks", "resets"}, (line, work.stderr.read())

        # Netlink, while every object of the workload is still open.
        with tempfile.TemporaryDirectory() as rundir:  # no VMs: objects only
            env = dict(os.environ, VMFORK_RUNTIME_DIR=rundir)
            s = subprocess.run([VMFORK, "stats", "--json"], env=env, capture_output=True,
                               text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert s.returncode == 0, s.stderr
        objs = [o for o in json.loads(s.stdout)["objects"] if o["creator_pid"] == work.pid]
        netlink = {"forks": sum(o["forks"] for o in objs),
                   "cow_breaks": sum(o["cow_breaks"] for o in objs),
                   "resets": sum(o["resets"] for o in objs)}

        time.sleep(1.5)  # one more interval of each tracer after the last event
        trace_out, trace_rest = ktap.stop(trace, "vmfork-trace")
        top_out, _ = ktap.stop(top, "bpftrace vmfork-top.bt", sigints=2)
    finally:
        for p in (trace, top):
            if p.poll() is None:
                p.kill()
        _, work_err = work.communicate(input="\n", timeout=60)

    summary = json.loads(trace_out.splitlines()[-1])
    assert summary["type"] == "summary", trace_out
    libbpf = {k: summary[k] for k in ("forks", "cow_breaks", "resets")}
    top_text = "".join(top_head) + top_out
    bpftrace = {"forks": scalar(top_text, "forks"), "cow_breaks": scalar(top_text, "cows"),
                "resets": scalar(top_text, "resets")}

    ktap.show(f"trace_workload {FORKS} {WRITES} {DELAY_MS} hold (VMFORK_GET_STATS)", line)
    ktap.show("vmfork stats --json: the workload's objects (generic netlink)",
         "\n".join(json.dumps({k: o[k] for k in ("id", "parent_id", "forks", "cow_breaks",
                                                 "resets", "resident_pages", "shared_pages",
                                                 "private_pages")}) for o in objs))
    ktap.show("vmfork-trace --json -i 1: the summary (libbpf)", trace_out.splitlines()[-1])
    ktap.show("bpftrace bpf/vmfork-top.bt", top_text)
    table = [f"{'':12} {'ioctl':>8} {'netlink':>8} {'libbpf':>8} {'bpftrace':>8}"]
    for k in ("forks", "cow_breaks", "resets"):
        table.append(f"{k:12} {module[k]:>8} {netlink[k]:>8} {libbpf[k]:>8} {bpftrace[k]:>8}")
    ktap.show("the four views", "\n".join(table))

    assert work.returncode == 0, work_err
    assert len(objs) == FORKS + 1, objs
    assert module["forks"] == FORKS and module["resets"] == FORKS and module["cow_breaks"] > 0
    assert netlink == module, (netlink, module)
    assert libbpf == module, (libbpf, module)
    assert bpftrace == module, (bpftrace, module)
    assert trace.returncode == 0, trace_rest


if __name__ == "__main__":
    tools = [t for t in (WORKLOAD, TRACE, VMFORK) if not os.path.exists(t)]
    if tools:
        ktap.skip_all(f"not built: {' '.join(tools)} (run make all)")
    if not os.path.exists("/dev/vmfork") or not shutil.which("bpftrace") or os.geteuid() != 0:
        ktap.skip_all("needs root, bpftrace and the vmfork module (run it in the test VM)")
    sys.exit(ktap.main())
