#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The vmfork CLI end to end, inside the test VM (needs /dev/kvm and /dev/vmfork).

Every VM is a real VMM process; every clone's guest reports are verified by its VMM
(ReportVerifier: checksums continue the parent's computation, xmm15, LAPIC LDR, DR0,
LSTAR, TSC, identity), and this test reads the verdicts through `vmfork ls --json`.
Output: kselftest TAP with a "# Totals" line (scripts/run-selftests.sh -x).
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import ktap  # noqa: E402
VMFORK = os.environ.get("VMFORK_BIN", os.path.join(HERE, "..", "..", "build", "bin", "vmfork"))
RUNTIME = tempfile.mkdtemp(prefix="vmfork-cli-test.")
ENV = dict(os.environ, VMFORK_RUNTIME_DIR=RUNTIME)
TIMEOUT = 120  # nested KVM under TCG is slow; every wait is bounded by this
# The guests report every PACE ms and idle between reports: a dozen VMs under TCG
# (and KASAN, on the debug kernel) must leave CPU for the VMM processes.
PACE = "200"

def vmfork(*args, check=True, timeout=TIMEOUT):
    p = subprocess.run([VMFORK, *args], env=ENV, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"vmfork {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def ls():
    return {v["name"]: v for v in json.loads(vmfork("ls", "--json").stdout)}


def info(name):
    """One VM's info (`vmfork stats NAME --json` asks that VM only)."""
    p = vmfork("stats", name, "--json", check=False)
    if p.returncode != 0:
        raise AssertionError(f"vmfork stats {name}: {p.stderr.strip()}")
    return json.loads(p.stdout)["vms"][0]


def wait_for(what, pred, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def own_reports(name, n):
    """Waits until every vCPU of name has n reports begun in that VM; returns its info."""
    def ready():
        v = info(name)
        if v["reports"]["failures"]:
            raise AssertionError(f"{name}: {v['reports']['errors']}")
        return v if all(c >= n for c in v["reports"]["own_per_cpu"]) else None
    try:
        return wait_for(f"{n} verified reports of every vCPU of {name}", ready)
    except AssertionError as e:
        # The evidence for a VM that stalls: what its VMM says and what its guest printed.
        v = info(name)
        console = vmfork("console", name, check=False).stdout.splitlines()[-10:]
        raise AssertionError(f"{e}\n{name}: state {v['state']}, reports {v['reports']}, "
                             f"vcpu_errors {v['vcpu_errors']}\nconsole tail:\n"
                             + "\n".join(console)) from None


def verified(v, generation, parent):
    assert v["reports"]["failures"] == 0, f"{v['name']}: {v['reports']['errors']}"
    assert not v["vcpu_errors"], v["vcpu_errors"]
    assert v["generation"] == generation, f"{v['name']} generation {v['generation']}"
    assert v["parent"] == parent, f"{v['name']} parent {v['parent']}"
    assert v["id"] == v["memory"]["id"], "the identity id must be the memory object's"
    assert v["state"] == "running", v["state"]


@ktap.test("run boots a VM that ls shows running and whose guest reports verify")
def _():
    out = vmfork("run", "--pace", PACE, "--name", "t", "--mem", "32M", "--fill", "50").stdout
    assert "t: running" in out, out
    v = own_reports("t", 2)
    verified(v, 0, "")
    # 50% of 32 MiB, less the 2 MiB of code, tables and work areas below the fill.
    assert v["memory"]["resident_pages"] >= (16 - 2) * 256 - 16, "the guest must fill ~50%"


@ktap.test("fork -n 4: four running clones, each its own identity, each a correct continuation")
def _():
    out = vmfork("fork", "t", "-n", "4").stdout
    for i in range(1, 5):
        assert f"t-{i}  pid " in out, out
    assert "t paused for" in out, out
    ids = set()
    for i in range(1, 5):
        v = own_reports(f"t-{i}", 2)
        verified(v, 1, "t")
        ids.add(v["id"])
        assert v["memory"]["shared_pages"] > 0, "a clone must share its parent's pages"
    assert len(ids) == 4 and info("t")["id"] not in ids, "identities must be unique"
    verified(own_reports("t", 3), 0, "")


@ktap.test("a clone of a clone is generation 2 and continues its own parent")
def _():
    out = vmfork("fork", "t-1").stdout
    assert "t-1-1" in out, out
    v = own_reports("t-1-1", 2)
    verified(v, 2, "t-1")
    assert v["memory"]["depth"] == 2


@ktap.test("reset takes a clone back to its fork point and it runs on correctly from there")
def _():
    before = own_reports("t-2", 6)
    steps_before = before["reports"]["steps"]
    own_before = before["reports"]["own"]
    out = vmfork("reset", "t-2").stdout
    assert "back at its fork point" in out, out
    v = own_reports("t-2", 0)
    v = wait_for("reports after the reset",
                 lambda: (lambda x: x if x["reports"]["own"] >= own_before + 1 else None)(
                     info("t-2")))
    assert v["memory"]["resets"] == 1
    assert v["reports"]["failures"] == 0, v["reports"]["errors"]
    assert v["reports"]["steps"][0] < steps_before[0], \
        f"after the reset the guest must be back before step {steps_before[0]}"


@ktap.test("reset of a VM that is not a clone fails with a clear error")
def _():
    p = vmfork("reset", "t", check=False)
    assert p.returncode == 1 and "not a clone" in p.stderr, p.stderr


@ktap.test("exec in the built-in guest (no agent) fails at once with a clear error")
def _():
    p = vmfork("exec", "t", "--", "true", check=False, timeout=30)
    assert p.returncode == 1 and "built-in guest" in p.stderr and "no agent" in p.stderr, p.stderr


@ktap.test("ls --json agrees with reality: names, live pids running the VMM, sockets")
def _():
    vms = ls()
    assert set(vms) == {"t", "t-1", "t-2", "t-3", "t-4", "t-1-1"}, sorted(vms)
    for name, v in vms.items():
        with open(f"/proc/{v['pid']}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert os.path.basename(os.readlink(f"/proc/{v['pid']}/exe")) == "vmfork-vmm"
        assert argv[:2] == [b"vmfork-vmm", name.encode()], argv
        assert os.path.exists(os.path.join(RUNTIME, name + ".sock"))
    table = vmfork("ls").stdout.splitlines()
    assert table[0].split() == ["NAME", "PID", "GUEST", "PARENT", "GEN", "STATE", "READY",
                                "MEMORY", "PRIVATE", "SHARED"], table[0]
    assert len(table) == 1 + len(vms)


@ktap.test("stats --json: every VM's memory object, and the clones share pages")
def _():
    s = json.loads(vmfork("stats", "--json").stdout)
    assert s["total"]["vms"] == 6
    for v in s["vms"]:
        m = v["memory"]
        assert m["resident_pages"] == m["shared_pages"] + m["private_pages"]
        if v["parent"]:
            assert m["shared_pages"] > 0


DEBUGFS_OBJECTS = "/sys/kernel/debug/vmfork/objects"
DEBUGFS_COLUMNS = ["id", "parent", "depth", "creator", "size_kib", "resident", "shared",
                   "private", "cow_breaks", "forks", "resets", "chain", "flags"]


def debugfs_objects():
    """The module's objects as debugfs prints them (a seq_file: not the netlink path)."""
    with open(DEBUGFS_OBJECTS) as f:
        lines = f.read().splitlines()
    assert lines[0].split() == DEBUGFS_COLUMNS, lines[0]
    rows = {}
    for line in lines[1:]:
        if line.startswith("total:"):
            continue
        r = dict(zip(DEBUGFS_COLUMNS, line.split()))
        rows[int(r["id"])] = r
    return rows


@ktap.test("stats over netlink agrees with debugfs and names every VM's object")
def _():
    before = debugfs_objects()
    s = json.loads(vmfork("stats", "--json").stdout)
    after = debugfs_objects()
    assert s["source"] == "netlink"
    vm_objects = {v["memory"]["id"]: v["name"] for v in s["vms"]}
    assert set(vm_objects.values()) == set(ls()), (vm_objects, list(ls()))
    seen = {o["id"]: o for o in s["objects"]}
    for oid, name in vm_objects.items():
        assert seen[oid]["vm"] == name
    # Every object alive across both debugfs reads is in the dump with figures between them.
    for oid in before.keys() & after.keys():
        o, b, a = seen[oid], before[oid], after[oid]
        for key, col in [("parent_id", "parent"), ("depth", "depth"), ("creator_pid", "creator")]:
            assert o[key] == int(b[col]) == int(a[col]), (oid, key)
        assert o["size"] == int(b["size_kib"]) * 1024
        for key, col in [("resident_pages", "resident"), ("cow_breaks", "cow_breaks"),
                         ("forks", "forks"), ("resets", "resets")]:
            assert int(b[col]) <= o[key] <= int(a[col]), (oid, key, b[col], o[key], a[col])
        assert o["resident_pages"] == o["shared_pages"] + o["private_pages"]
    t = s["total"]
    assert t["objects"] == len(s["objects"])
    assert t["cow_breaks"] == sum(o["cow_breaks"] for o in s["objects"])
    # The module holds fewer pages than the VMs see: the clones share.
    assert 0 < t["module_bytes"] < t["resident_bytes"], t


@ktap.test("stats --watch prints one sample per interval with COW breaks per second")
def _():
    p = vmfork("stats", "--watch", "1", "--count", "2", "--json")
    lines = p.stdout.splitlines()
    assert len(lines) == 2, p.stdout
    for line in lines:
        j = json.loads(line)
        assert 0.5 < j["interval_s"] < 30, j["interval_s"]
        assert all(o["cow_per_s"] >= 0 for o in j["objects"])
        assert j["total"]["cow_per_s"] == sum(o["cow_per_s"] for o in j["objects"])
    table = vmfork("stats", "--watch", "1", "--count", "1").stdout
    assert "COW/s" in table.splitlines()[1], table


@ktap.test("stats as an unprivileged user shows none of root's objects")
def _():
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        VMFORK, "stats", "--json"], env=ENV, capture_output=True, text=True,
                       timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert "VM names not shown" in p.stderr, p.stderr  # the runtime dir is root's
    s = json.loads(p.stdout)
    assert s["objects"] == [] and s["vms"] == [], s
    assert s["total"]["module_objects"] >= 6  # the totals name no object: open to all


@ktap.test("events: a fork, a reset and a release, in order, with the ids stats shows")
def _():
    parent = info("t-2")
    listeners = []
    try:
        for fmt in (["--json"], []):
            p, _ = ktap.start_until([VMFORK, "events", *fmt, "-c", "3"], "listening", env=ENV,
                                    timeout=TIMEOUT)
            listeners.append(p)
        vmfork("fork", "t-2", "--name-prefix", "ev-")
        child = own_reports("ev-1", 1)
        vmfork("reset", "ev-1")
        vmfork("kill", "ev-1")
        # -c 3: each exits by itself after the third event.
        (out, err), (text, text_err) = [p.communicate(timeout=TIMEOUT) for p in listeners]
    finally:
        for p in listeners:
            if p.poll() is None:
                p.kill()
                p.communicate()
    ktap.show("vmfork events --json -c 3 (fork t-2, reset ev-1, kill ev-1)", out)
    ktap.show("vmfork events -c 3", text)
    assert [p.returncode for p in listeners] == [0, 0], (err, text_err)
    ev = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in ev] == ["fork", "reset", "release"], ev
    fork, reset, release = ev
    assert fork["id"] == parent["memory"]["id"], (fork, parent["memory"])
    assert fork["child_id"] == child["memory"]["id"], (fork, child["memory"])
    assert fork["pid"] == parent["pid"] and fork["template"] is False, (fork, parent["pid"])
    assert fork["resident_pages"] > 0 and fork["duration_ns"] > 0, fork
    assert reset["id"] == release["id"] == child["memory"]["id"], ev
    rows = [line.split() for line in text.splitlines()]
    assert rows[0] == ["TIME", "EVENT", "OBJECT"] and len(rows) == 4, text
    assert rows[1][1:5] == ["fork", str(fork["id"]), "->", str(fork["child_id"])], rows[1]
    assert rows[2][1:3] == ["reset", str(reset["id"])], rows[2]
    assert rows[3][1:3] == ["release", str(release["id"])], rows[3]
    # Unprivileged: refused, since the events name every user's objects.
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        VMFORK, "events"], env=ENV, capture_output=True, text=True,
                       timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert p.returncode == 1 and "CAP_SYS_ADMIN" in p.stderr, (p.returncode, p.stderr)
    assert p.stdout == "", p.stdout


@ktap.test("a VM answers ls and stats while it forks (the fork waits for its clones)")
def _():
    fork = subprocess.Popen([VMFORK, "fork", "t", "-n", "8", "--name-prefix", "busy-"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    answered_during = 0
    try:
        while fork.poll() is None:
            p = vmfork("stats", "t", "--json", check=False, timeout=30)
            assert p.returncode == 0, p.stderr
            assert json.loads(p.stdout)["vms"][0]["name"] == "t"
            if fork.poll() is None:
                answered_during += 1
                assert "t" in ls(), "ls must list a VM while it forks"
        out, err = fork.communicate(timeout=TIMEOUT)
    finally:
        if fork.poll() is None:
            fork.kill()
            fork.wait()
    assert fork.returncode == 0, err
    assert answered_during > 0, "the fork ended before a stats request ran: make it slower"
    for i in range(1, 9):
        assert f"busy-{i}  pid" in out, out
    vmfork("kill", *[f"busy-{i}" for i in range(1, 9)])


@ktap.test("kill stops a VM: its process exits, its files go, the others run on")
def _():
    pid = info("t-3")["pid"]
    vmfork("kill", "t-3")
    assert "t-3" not in ls()
    wait_for("t-3's process to exit", lambda: not os.path.exists(f"/proc/{pid}"), 10)
    assert not os.path.exists(os.path.join(RUNTIME, "t-3.sock"))
    verified(own_reports("t-4", 3), 1, "t")


@ktap.test("a VM killed with SIGKILL leaves no stale socket that breaks the next run")
def _():
    pid = info("t-4")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for("t-4 to die", lambda: not os.path.exists(f"/proc/{pid}") or
             open(f"/proc/{pid}/stat").read().split()[2] == "Z", 10)
    assert "t-4" not in ls()
    vmfork("run", "--pace", PACE, "--name", "t-4", "--mem", "16M", "--fill", "10")
    verified(own_reports("t-4", 1), 0, "")


@ktap.test("4 vCPUs: the clone's every vCPU keeps running from its own fork-time step")
def _():
    vmfork("run", "--pace", PACE, "--name", "q", "--mem", "32M", "--cpus", "4", "--fill", "20")
    own_reports("q", 2)
    vmfork("fork", "q")
    v = own_reports("q-1", 3)
    verified(v, 1, "q")
    assert v["cpus"] == 4 and len(v["reports"]["own_per_cpu"]) == 4
    vmfork("kill", "q", "q-1")  # 8 busy vCPUs: free the CPU for the next tests


@ktap.test("--template freezes the parent; forks from a template never touch it")
def _():
    vmfork("run", "--pace", PACE, "--name", "tp", "--mem", "16M", "--fill", "50")
    own_reports("tp", 2)
    out = vmfork("fork", "tp", "--template", "-n", "2").stdout
    assert "is a template" in out, out
    before = info("tp")
    assert before["state"] == "template" and before["memory"]["template"]
    # --json: per clone its pid, its VM_FORK and the time until it ran.
    r = json.loads(vmfork("fork", "tp", "--name-prefix", "tpc", "--json").stdout)
    assert r["all_ok"] and r["template"], r
    assert [c["name"] for c in r["clones"]] == ["tpc1"], r
    c = r["clones"][0]
    assert c["pid"] == ls()["tpc1"]["pid"], (c, ls()["tpc1"])
    assert 0 < c["fork_us"] < c["ready_us"] and "error" not in c, c
    for name in ("tp-1", "tp-2", "tpc1"):
        verified(own_reports(name, 2), 1, "tp")
    after = info("tp")
    for key in ("resident_pages", "private_pages", "cow_breaks"):
        assert after["memory"][key] == before["memory"][key], key
    p = vmfork("reset", "tp", check=False)
    assert p.returncode == 1


def warm_pids(cpus=1):
    return sorted(pid for e in json.loads(vmfork("pool", "--json").stdout) for pid in e["pids"]
                  if e["cpus"] == cpus)


def pool_of(n, cpus=1):
    """Waits until the pool has n warm VMMs of cpus vCPUs; their pids."""
    return wait_for(f"{n} warm VMMs", lambda: (lambda p: p if len(p) == n else None)(
        warm_pids(cpus)))


@ktap.test("pool: clones start in warm VMMs of their vCPU count and verify; the pool "
           "refills, replaces a dead one; drain stops them all")
def _():
    assert "no warm pool" in vmfork("pool").stdout
    vmfork("run", "--pace", PACE, "--name", "wp", "--mem", "16M", "--fill", "30")
    own_reports("wp", 2)
    out = vmfork("pool", "resize", "2").stdout
    assert "pool: 2 warm VMMs with 1 vCPU (started 2, stopped 0)" in out, out
    out = vmfork("pool", "resize", "1", "--cpus", "2").stdout
    assert "pool: 1 warm VMM with 2 vCPUs (started 1, stopped 0)" in out, out
    two = pool_of(1, 2)
    warm = pool_of(2)
    r = json.loads(vmfork("fork", "wp", "-n", "3", "--json").stdout)
    assert r["all_ok"], r
    taken = sorted(c["pid"] for c in r["clones"] if c["warm"])
    assert taken == warm, (r, warm)
    assert r["pool"]["target"] == 2 and r["pool"]["taken"] == 2, r["pool"]
    for c in r["clones"]:
        assert ls()[c["name"]]["pid"] == c["pid"], c
        verified(own_reports(c["name"], 2), 1, "wp")
    # Refilled by the fork: two new warm VMMs. The one of 2 vCPUs was not used.
    refilled = pool_of(2)
    assert not set(refilled) & set(warm), (refilled, warm)
    assert warm_pids(2) == two
    # One more clone than the pool has: the rest start as new processes, with a note.
    p = vmfork("fork", "wp", "-n", "3", "--name-prefix", "wq")
    assert p.stdout.count("(warm VMM)") == 2, p.stdout
    assert "the warm pool had 2 VMMs left for 3 clones" in p.stderr, p.stderr
    for i in (1, 2, 3):
        verified(own_reports(f"wq{i}", 2), 1, "wp")
    # A warm VMM that died is passed over.
    dead, alive = pool_of(2)
    os.kill(dead, signal.SIGKILL)
    wait_for(f"warm VMM {dead} to die", lambda: not os.path.exists(f"/proc/{dead}"), 10)
    r = json.loads(vmfork("fork", "wp", "--name-prefix", "wr", "--json").stdout)
    assert r["all_ok"] and r["clones"][0]["warm"] and r["clones"][0]["pid"] == alive, r
    verified(own_reports("wr1", 2), 1, "wp")
    # Replaced: two live warm VMMs again, neither the dead one nor the one taken.
    pids = pool_of(2)
    assert dead not in pids and alive not in pids, (pids, dead, alive)
    # Drain: every warm VMM exits and the next fork leaves none behind.
    pids += two
    out = vmfork("pool", "drain").stdout
    assert "pool: 3 warm VMMs stopped" in out, out
    for pid in pids:
        wait_for(f"warm VMM {pid} to exit", lambda: not os.path.exists(f"/proc/{pid}"), 10)
    assert warm_pids() == [] and "no warm pool" in vmfork("pool").stdout
    r = json.loads(vmfork("fork", "wp", "--name-prefix", "ws", "--json").stdout)
    assert not r["clones"][0]["warm"] and r["pool"]["target"] == 0, r
    time.sleep(1)
    assert warm_pids() == []
    names = [n for n in ls() if n.startswith(("wp", "wq", "wr", "ws"))]
    vmfork("kill", *names)


@ktap.test("bad input gets a clear error and a non-zero exit")
def _():
    cases = [
        (("fork", "nosuch"), "no VM named nosuch"),
        (("run", "--name", "t"), "already running"),
        (("run", "--name", "-x"), ""),
        (("run", "--name", "a/b"), "not a valid VM name"),
        (("run", "--mem", "12Q"), "--mem 12Q"),
        (("fork", "t", "-n", "0"), ""),
        (("kill",), "give one or more names"),
        (("console", "nosuch"), "no console"),
        (("frobnicate",), ""),
        (("stats", "nosuch"), "no VM named nosuch"),
        (("stats", "--count", "2"), "--count needs --watch"),
        (("stats", "--watch", "0"), ""),
        (("events", "-c", "0"), ""),
        (("events", "nosuch"), ""),
        (("pool", "resize"), "size is required"),
        (("pool", "resize", "65"), ""),
        (("pool", "resize", "1", "--cpus", "0"), ""),
        (("pool", "frobnicate"), ""),
    ]
    for args, text in cases:
        p = vmfork(*args, check=False)
        assert p.returncode != 0, args
        assert text in p.stderr, (args, p.stderr)


@ktap.test("console shows the guest's serial output")
def _():
    out = vmfork("console", "t").stdout
    assert "vmfork guest: 1 cpus, filled" in out, out


@ktap.test("run --foreground: the VM runs in the calling process until it is killed")
def _():
    p = vmfork("run", "--foreground", "--name", "a/b", check=False)
    assert p.returncode == 1 and "not a valid VM name" in p.stderr, p.stderr
    p = vmfork("run", "--foreground", "--mem", "12Q", check=False)
    assert p.returncode == 1 and "--mem 12Q" in p.stderr, p.stderr
    fg = subprocess.Popen([VMFORK, "run", "--foreground", "--pace", PACE, "--name", "fg",
                           "--mem", "16M", "--fill", "10"], env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        line = fg.stdout.readline()
        assert "fg: running in the foreground" in line, line
        v = own_reports("fg", 2)
        verified(v, 0, "")
        assert v["pid"] == fg.pid, "the VM must run in the foreground process"
        vmfork("kill", "fg")
        assert fg.wait(timeout=30) == 0
    finally:
        if fg.poll() is None:
            fg.kill()
            fg.wait()


@ktap.test("kill --all: no VM process, socket or lock is left")
def _():
    pids = [v["pid"] for v in ls().values()]
    vmfork("kill", "--all")
    assert ls() == {}
    for pid in pids:
        wait_for(f"pid {pid} to exit", lambda: not os.path.exists(f"/proc/{pid}"), 10)
    left = [f for f in os.listdir(RUNTIME) if f.endswith((".sock", ".lock"))]
    assert not left, left


@ktap.test("vmfork demo (small) verifies its clones and cleans up")
def _():
    p = vmfork("demo", "--mem", "32M", "--clones", "4", "--fill", "50", check=False,
               timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "verified: 4/4 clones" in p.stdout, p.stdout
    assert "time to running clone" in p.stdout
    assert ls() == {}
    assert not [d for d in os.listdir(RUNTIME) if d.startswith("demo-")]


@ktap.test("bench (small, 2 repeats): every strategy's clones verified; results, CSV, plots")
def _():
    out = os.path.join(RUNTIME, "bench-out")
    p = vmfork("bench", "--sizes", "16M,32M", "--repeat", "2", "--clones", "4",
               "--density-size", "16M", "--pool", "--out", out, check=False, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "every clone verified" in p.stdout, p.stdout[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    strategies = {"vmfork-live", "vmfork-template", "process-fork", "snapshot-restore",
                  "full-copy"}
    counts = {}
    for s in res["samples"]:
        if s["figure"] == "running_us":
            key = (s["strategy"], s["mode"], s["size_bytes"])
            counts[key] = counts.get(key, 0) + 1
    # Every strategy cloned (and verified) twice at each size, cold; vmfork's also pooled.
    for st in strategies:
        for size in (16 << 20, 32 << 20):
            assert counts.get((st, "cold", size)) == 2, (st, size, counts)
    assert counts.get(("vmfork-template", "pool", 16 << 20)) == 2, counts
    for t in res["targets"]:
        assert t["verdict"] in ("PASS", "MISS", "n/a"), t
    with open(os.path.join(out, "samples.csv")) as f:
        assert len(f.readlines()) == len(res["samples"]) + 1
    pngs = [f for f in os.listdir(out) if f.endswith(".png")]
    assert "time_to_running.png" in pngs and "memory.png" in pngs, pngs
    ktap.show("vmfork bench (small): its table", p.stdout[-2500:])
    assert ls() == {}


def kill_all():
    """Leaves nothing running, whatever happened."""
    subprocess.run([VMFORK, "kill", "--all"], env=ENV, capture_output=True, timeout=TIMEOUT)
    subprocess.run([VMFORK, "pool", "drain"], env=ENV, capture_output=True, timeout=TIMEOUT)


if __name__ == "__main__":
    if not os.access("/dev/kvm", os.W_OK) or not os.access("/dev/vmfork", os.W_OK):
        ktap.skip_all("needs /dev/kvm and /dev/vmfork (run it in the test VM)")
    sys.exit(ktap.main(cleanup=kill_all))
