#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Linux clones on the product path: how soon a clone answers `vmfork exec true`.

Runs the vmfork CLI as a user does (needs /dev/kvm, /dev/vmfork and vhost-vsock: run
it in the test VM, `make bench-linux`) on the default Linux guest (the host's kernel
and the build's initramfs, with vmfork-agent):

  fresh boot   `vmfork run --linux`, until its agent answers `exec true` (the baseline)
  live fork    `vmfork fork` of the running guest, until the clone answers
  template     `vmfork fork` of a frozen template, until the clone answers
  ... + pool   the same with a warm pool (`vmfork pool resize 2`): the clone starts in a
               VMM made ahead instead of a new process
  QEMU         Debian's QEMU with KVM, Kata's VM templating (qemu_template.py): a fresh
               boot, and clones of a template until their agent answers the same request

and, for each fork, when the clone's customization (hostname, machine-id, clock,
reseed, hooks) was done. Then the memory of the template and --clones idle clones:
what the module holds (each page once) against what as many independent guests would
hold (each VM's resident pages), and the system's memory use (/proc/meminfo) with the
parent and those clones against QEMU's template and as many idle QEMU clones. Last, the parent's pause at forks of a VM with a 1 GiB
and an 8 GiB disk (whether a linked-clone disk costs the same at any size). Times are
medians and p90 of --repeat runs, with the
ratio to the fresh boot from the same run; nothing is asserted. Progress on stderr,
the table on stdout, everything in --out/linux.json.
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import qemu_template

HERE = os.path.dirname(os.path.realpath(__file__))
VMFORK = os.environ.get("VMFORK_BIN", os.path.join(HERE, "..", "..", "build", "bin", "vmfork"))
RUNTIME = tempfile.mkdtemp(prefix="vmfork-linux-bench.")
ENV = dict(os.environ, VMFORK_RUNTIME_DIR=RUNTIME, VMFORK_DISK_DIR=RUNTIME)
TIMEOUT = 180
RESEED = "crng reseeded due to virtual machine fork"
CURVE_STEP = 8  # idle clones between two memory samples


def log(text):
    print(f"linux-bench: {text}", file=sys.stderr, flush=True)


def vmfork(*args, check=True, timeout=TIMEOUT):
    p = subprocess.run([VMFORK, *args], env=ENV, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise SystemExit(f"linux-bench: vmfork {' '.join(args)} exited {p.returncode}: "
                         f"{p.stderr.strip()}")
    return p


def wait_exec(name, t0, timeout=TIMEOUT):
    """Seconds from t0 until `vmfork exec NAME -- true` succeeds."""
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if vmfork("exec", "--timeout", "10", name, "--", "true", check=False).returncode == 0:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise SystemExit(f"linux-bench: {name} did not answer `exec true` within {timeout} s")


def customized_ms(name, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = {v["name"]: v for v in json.loads(vmfork("ls", "--json").stdout)}[name]
        st = info.get("customize", {})
        if st.get("state") == "done":
            return st["ms"]
        if st.get("state") not in ("pending", None):
            raise SystemExit(f"linux-bench: {name} not customized: {st}")
        time.sleep(0.05)
    raise SystemExit(f"linux-bench: {name} still not customized after {timeout} s")


def used_bytes():
    """The system's memory in use, as the bench counts it (page cache and reclaimable
    slab left out, tmpfs counted)."""
    kb = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            kb[key] = int(value.split()[0])
    used = (kb["MemTotal"] - kb["MemFree"] - kb["Buffers"] - (kb["Cached"] - kb["Shmem"])
            - kb["SReclaimable"])
    return used * 1024


def settled_used_bytes():
    time.sleep(5)  # idle guests: what they hold settles
    return used_bytes()


def qemu_series(a, kernel, initrd, mem_mib):
    """QEMU templating on the same guest: fresh boots, template clones, idle clones'
    memory. None when QEMU or vhost-vsock is missing (said on stderr)."""
    try:
        q = qemu_template.QemuTemplating(RUNTIME, kernel, initrd, mem_mib, log)
    except qemu_template.QemuError as e:
        log(f"QEMU templating left out: {e}")
        return None
    res = {"version": qemu_template.qemu_version()}
    try:
        boots = []
        for i in range(a.boots):
            boots.append(q.fresh_boot() * 1000)
            log(f"qemu fresh boot {i + 1}: answered after {boots[-1]:.0f} ms")
        res["fresh_boot"] = summary(boots)
        base = settled_used_bytes()
        q.make_template()
        clones = []
        for i in range(a.repeat):
            clones.append(q.clone() * 1000)
            log(f"qemu clone {i + 1}: answered after {clones[-1]:.0f} ms")
        res["template"] = summary(clones)
        curve = []
        for i in range(a.clones):
            q.clone(keep=True)
            if (i + 1) % CURVE_STEP == 0 or i + 1 == a.clones:
                curve.append([i + 1, settled_used_bytes() - base])
                log(f"qemu: {i + 1} idle clones: {curve[-1][1] >> 20} MiB in use")
        res["memory_bytes"] = curve[-1][1]
        res["memory_curve"] = curve
    except qemu_template.QemuError as e:
        raise SystemExit(f"linux-bench: QEMU templating: {e}") from None
    finally:
        q.close()
    return res


def summary(xs):
    xs = sorted(xs)
    # p90 by nearest rank: of 2 samples the larger, of 5 the largest.
    return {"n": len(xs), "median": statistics.median(xs),
            "p90": xs[max(0, math.ceil(0.9 * len(xs)) - 1)],
            "min": xs[0], "max": xs[-1], "samples": xs}


def warm_count():
    return sum(e["warm"] for e in json.loads(vmfork("pool", "--json").stdout) if e["cpus"] == 1)


def fork_series(source, prefix, repeat, pauses=None, pool=0, cli=None, start=None):
    """pool: warm VMMs to wait for before each fork (untimed), 0 for none. cli: gets the
    time `vmfork fork` took (the request until its clone runs); start: the time from
    the clone's spawn (or hand-over to a warm VMM) until it ran, as the VMM reports it."""
    answer, customize = [], []
    for i in range(repeat):
        deadline = time.monotonic() + TIMEOUT
        while pool and warm_count() < pool:
            if time.monotonic() > deadline:
                raise SystemExit(f"linux-bench: the warm pool did not refill to {pool}")
            time.sleep(0.05)
        t0 = time.monotonic()
        out = json.loads(vmfork("fork", source, "--name-prefix", prefix, "--json").stdout)
        if cli is not None:
            cli.append((time.monotonic() - t0) * 1000)
        name = out["clones"][0]["name"]
        if bool(pool) != out["clones"][0].get("warm", False):
            raise SystemExit(f"linux-bench: {name}: warm {out['clones'][0].get('warm')}, "
                             f"pool {pool}")
        if pauses is not None:
            pauses.append(out["pause_us"] / 1000)
        if start is not None:
            start.append(out["clones"][0]["ready_us"] / 1000)
        answer.append(wait_exec(name, t0) * 1000)
        customize.append(customized_ms(name))
        vmfork("kill", name)
        log(f"{prefix}{i + 1}: answered after {answer[-1]:.0f} ms, customized after "
            f"{customize[-1]} ms")
    return summary(answer), summary(customize)


def disk_fork_pauses(size, repeat, mem):
    """The parent's pause at forks of a VM with a disk of size bytes that wrote 1 MiB to
    it since its last fork (its layer is frozen and a new one started each time)."""
    img = os.path.join(RUNTIME, f"disk-{size >> 30}g.img")
    with open(img, "wb") as f:
        f.truncate(size)
    name = f"disk{size >> 30}g"
    t0 = time.monotonic()
    vmfork("run", "--linux", "--name", name, "--mem", mem, "--disk", img)
    wait_exec(name, t0)
    pauses = []
    for i in range(repeat):
        vmfork("exec", name, "--", "dd", "if=/dev/urandom", "of=/dev/vda", "bs=64k", "count=16",
               f"seek={i * 16}", "conv=fsync")
        out = json.loads(vmfork("fork", name, "--name-prefix", name + "-", "--json").stdout)
        pauses.append(out["pause_us"] / 1000)
        vmfork("kill", out["clones"][0]["name"])
    vmfork("kill", name)
    os.unlink(img)
    log(f"{name}: fork pauses {[round(p, 1) for p in pauses]} ms")
    return summary(pauses)


def find(tree, key):
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        tree = list(tree.values())
    if isinstance(tree, list):
        for v in tree:
            got = find(v, key)
            if got is not None:
                return got
    return None


def targets(results, clones):
    """Issue #16's targets that this run can judge, as PASS/MISS lines."""
    qemu, tpl = results["qemu"], results["template_pool"]["median"]
    lines = [
        ("vmfork template clone (pool) answers >= 10x sooner than a QEMU-templating clone",
         qemu["template"]["median"] / tpl, 10),
        ("vmfork template clone (pool) answers >= 20x sooner than a fresh boot (vmfork's)",
         results["fresh_boot"]["median"] / tpl, 20),
        (f"QEMU templating's memory for {clones} idle clones / vmfork's >= 2",
         qemu["memory_bytes"] / max(results["memory"]["system_bytes"], 1), 2),
        ("`vmfork fork` of the template through the CLI, to a running clone: without the "
         "pool / with it >= 5", results["template_cli"]["median"] /
         results["template_pool_cli"]["median"], 5),
    ]
    print("targets of issue #16 (this run):")
    for text, ratio, goal in lines:
        print(f"  {text}: {ratio:.1f}x, goal {goal}x: {'PASS' if ratio >= goal else 'MISS'}")
    print("  (not a target: the clone's start alone, spawned / from the pool, as the VMM "
          f"reports it: {results['template_start']['median'] / results['template_pool_start']['median']:.1f}x)")


def plots(results, out):
    """Two PNGs in out with gnuplot, if it is installed: the time to an answering clone
    by method, and the memory in use against the number of idle clones."""
    rows = [("fresh boot", results["fresh_boot"]), ("live fork", results["live"]),
            ("live fork, pool", results["live_pool"]), ("template", results["template"]),
            ("template, pool", results["template_pool"])]
    qemu = results.get("qemu")
    if qemu:
        rows += [("QEMU boot", qemu["fresh_boot"]), ("QEMU templating", qemu["template"])]
    with open(os.path.join(out, "linux-answer.dat"), "w") as f:
        f.write("# method median_ms p90_ms\n")
        for label, s in rows:
            f.write(f'"{label}" {s["median"]:.1f} {s["p90"]:.1f}\n')
    with open(os.path.join(out, "linux-memory.dat"), "w") as f:
        f.write("# clones vmfork_MiB qemu_MiB\n")
        qc = dict(qemu["memory_curve"]) if qemu else {}
        for n, b in results["memory"]["curve"]:
            q = qc.get(n)
            f.write(f"{n} {b / (1 << 20):.1f} {q / (1 << 20) if q else 'NaN'}\n")
    gp = os.path.join(out, "linux-plots.gp")
    mem_plot = "'{0}/linux-memory.dat' using 1:2 with linespoints title 'vmfork (parent + clones)'"
    if qemu:
        mem_plot += (", '{0}/linux-memory.dat' using 1:3 with linespoints title "
                     "'QEMU templating (template file + clones)'")
    with open(gp, "w") as f:
        f.write(f"""set terminal pngcairo size 900,560 noenhanced
set output '{out}/linux-answer.png'
set title 'Linux guest: from the request to a clone that answers exec true (median)'
set style data histogram
set style fill solid 0.6
set logscale y
set ylabel 'ms (log scale)'
set xtics rotate by -30
set key off
plot '{out}/linux-answer.dat' using 2:xtic(1)
unset logscale y
unset xtics
set xtics
set style data linespoints
set output '{out}/linux-memory.png'
set title 'system memory in use against idle Linux clones'
set xlabel 'idle clones'
set ylabel 'MiB'
set key top left
plot {mem_plot.format(out)}
""")
    if not shutil.which("gnuplot"):
        log(f"no gnuplot: no PNG plots (data and script in {out})")
        return
    p = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if p.returncode != 0:
        log(f"gnuplot failed: {p.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=10, help="forks per strategy (10)")
    ap.add_argument("--boots", type=int, default=3, help="fresh boots (3)")
    ap.add_argument("--clones", type=int, default=32, help="idle clones for memory (32)")
    ap.add_argument("--mem", default="160M", help="guest RAM (160M; a size in M)")
    ap.add_argument("--no-qemu", action="store_true", help="leave out QEMU templating")
    ap.add_argument("--kernel", default=f"/boot/vmlinuz-{os.uname().release}",
                    help="the guest's kernel, for QEMU (vmfork's default: the host's)")
    ap.add_argument("--initrd", default=os.path.join(
        os.path.dirname(os.path.realpath(VMFORK)), "..", "share", "vmfork",
        "linux-initramfs.cpio.gz"), help="the guest's initramfs, for QEMU (vmfork's default)")
    ap.add_argument("--out", help="directory for linux.json")
    a = ap.parse_args()
    if a.repeat < 1 or a.boots < 1 or a.clones < 1:
        ap.error("--repeat, --boots and --clones must be at least 1")
    if not a.mem.endswith("M") or not a.mem[:-1].isdigit():
        ap.error("--mem must be a size in MiB, like 160M")
    results = {"mem": a.mem, "kernel": os.uname().release}
    base = used_bytes()
    try:
        boots = []
        for i in range(a.boots):
            name = f"boot{i + 1}"
            t0 = time.monotonic()
            vmfork("run", "--linux", "--name", name, "--mem", a.mem)
            boots.append(wait_exec(name, t0) * 1000)
            log(f"{name}: answered after {boots[-1]:.0f} ms")
            if i + 1 < a.boots:
                vmfork("kill", name)
        results["fresh_boot"] = summary(boots)
        parent = f"boot{a.boots}"
        customized_ms(parent)
        floor = []
        for i in range(a.repeat):
            t0 = time.monotonic()
            vmfork("exec", parent, "--", "true")
            floor.append((time.monotonic() - t0) * 1000)
        results["exec_running"] = summary(floor)
        log(f"`vmfork exec true` in the running parent: {[round(x) for x in floor]} ms")
        live_pauses = []
        results["live"], results["live_customize"] = fork_series(parent, "live-", a.repeat,
                                                                 live_pauses)
        results["live_pause"] = summary(live_pauses)
        live_pool_pauses = []
        vmfork("pool", "resize", "2")
        results["live_pool"], results["live_pool_customize"] = fork_series(
            parent, "lpool-", a.repeat, live_pool_pauses, pool=2)
        results["live_pool_pause"] = summary(live_pool_pauses)
        vmfork("pool", "drain")
        vmfork("fork", parent, "--template", "--name-prefix", "t0-")
        vmfork("kill", "t0-1")
        cli, cli_pool, start, start_pool = [], [], [], []
        results["template"], results["template_customize"] = fork_series(
            parent, "tpl-", a.repeat, cli=cli, start=start)
        results["template_cli"] = summary(cli)
        results["template_start"] = summary(start)
        vmfork("pool", "resize", "2")
        results["template_pool"], results["template_pool_customize"] = fork_series(
            parent, "tpool-", a.repeat, pool=2, cli=cli_pool, start=start_pool)
        results["template_pool_cli"] = summary(cli_pool)
        results["template_pool_start"] = summary(start_pool)
        vmfork("pool", "drain")
        curve = []
        while not curve or curve[-1][0] < a.clones:
            n = min(CURVE_STEP, a.clones - (curve[-1][0] if curve else 0))
            vmfork("fork", parent, "-n", str(n), "--name-prefix", "idle-", "--wait-ready")
            curve.append([n + (curve[-1][0] if curve else 0), settled_used_bytes() - base])
            log(f"vmfork: {curve[-1][0]} idle clones: {curve[-1][1] >> 20} MiB in use")
        used = curve[-1][1] + base
        stats = json.loads(vmfork("stats", "--json").stdout)
        held, separate = find(stats, "module_bytes"), find(stats, "resident_bytes")
        results["memory"] = {"vms": a.clones + 1, "module_bytes": held,
                             "resident_bytes": separate, "system_bytes": used - base,
                             "curve": curve}
        dmesg = vmfork("exec", "idle-1", "--", "dmesg", check=False).stdout
        results["reseed_line"] = next((ln for ln in dmesg.splitlines() if RESEED in ln), None)
        vmfork("kill", "--all")
        if not a.no_qemu:
            results["qemu"] = qemu_series(a, a.kernel, os.path.realpath(a.initrd),
                                          int(a.mem[:-1]))
        for gib in (1, 8):
            results[f"disk_{gib}g_pause"] = disk_fork_pauses(gib << 30, min(a.repeat, 5),
                                                             a.mem)
    finally:
        subprocess.run([VMFORK, "kill", "--all"], env=ENV, capture_output=True, timeout=TIMEOUT)
        subprocess.run([VMFORK, "pool", "drain"], env=ENV, capture_output=True, timeout=TIMEOUT)
    boot = results["fresh_boot"]["median"]
    print(f"Linux guest ({results['kernel']}, {a.mem}): from the request to a guest whose "
          f"agent answers `vmfork exec true`")
    print(f"{'strategy':<14}{'median ms':>11}{'p90 ms':>9}{'n':>4}{'vs fresh boot':>15}")
    rows = [(results["fresh_boot"], "fresh boot"), (results["live"], "live fork"),
            (results["live_pool"], "live + pool"), (results["template"], "template"),
            (results["template_pool"], "template+pool")]
    qemu = results.get("qemu")
    if qemu:
        rows += [(qemu["fresh_boot"], "QEMU boot"), (qemu["template"], "QEMU clone")]
    for s, label in rows:
        print(f"{label:<14}{s['median']:>11.0f}{s['p90']:>9.0f}{s['n']:>4}"
              f"{boot / s['median']:>14.1f}x")
    print(f"`vmfork exec true` in the running parent (the floor under every figure "
          f"above): median {results['exec_running']['median']:.0f} ms")
    print(f"`vmfork fork` of the template through the CLI until its clone runs: median "
          f"{results['template_cli']['median']:.0f} ms, with the pool "
          f"{results['template_pool_cli']['median']:.0f} ms; of which the clone's start "
          f"(spawn or hand-over to its run): {results['template_start']['median']:.0f} ms, "
          f"with the pool {results['template_pool_start']['median']:.0f} ms")
    for key, label in (("live_customize", "live fork"), ("live_pool_customize", "live fork + pool"),
                       ("template_customize", "template"),
                       ("template_pool_customize", "template + pool")):
        s = results[key]
        print(f"customization after a {label}: median {s['median']:.0f} ms, p90 {s['p90']:.0f} ms")
    m = results["memory"]
    if m["module_bytes"]:
        print(f"memory of the template and {a.clones} idle clones: {m['module_bytes'] >> 20} MiB "
              f"held, {m['resident_bytes'] >> 20} MiB as separate guests "
              f"({m['resident_bytes'] / m['module_bytes']:.1f}x less)")
    print(f"system memory in use with the parent and {a.clones} idle clones: vmfork "
          f"{m['system_bytes'] >> 20} MiB" + (f", QEMU templating (template file and "
          f"clones) {qemu['memory_bytes'] >> 20} MiB" if qemu else ""))
    print(f"a clone's kernel log: {results['reseed_line']}")
    print("parent's pause at a live fork (median ms): no disk "
          f"{results['live_pause']['median']:.1f}, with a disk written 1 MiB since the last "
          f"fork: 1 GiB {results['disk_1g_pause']['median']:.1f}, "
          f"8 GiB {results['disk_8g_pause']['median']:.1f}")
    if qemu:
        print(f"QEMU: {qemu['version']}")
        targets(results, a.clones)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "linux.json"), "w") as f:
            json.dump(results, f, indent=2)
        plots(results, a.out)


if __name__ == "__main__":
    main()
