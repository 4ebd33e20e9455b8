#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""clang-tidy over the userspace sources: one process per file, as many at once as
there are CPUs, and a clean result remembered (like ccache) so that an unchanged file
is not checked again.

A file's key is the SHA-256 of clang-tidy's version, .clang-tidy, the file's compile
flags and the file preprocessed with them (every header it includes, macros expanded),
with the checkout's path taken out so that another clone of the same tree hits too.
Only clean results are cached: a file with a finding is checked again every time.
Cache: /var/cache/vmfork/clang-tidy (VMFORK_CLANG_TIDY_CACHE; "off" disables it).
Serially, clang-tidy takes about 18 s per file here (CLI11, fmt and the standard
library parsed and matched for every translation unit): over 20 minutes in all.

Usage: scripts/clang-tidy.py BUILD_DIR FILE...
Exits 1 if any file has a finding (all of them printed), 2 on bad usage.
"""
import concurrent.futures
import hashlib
import json
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compile_args(entry):
    """The compiler argv of a compile_commands.json entry, without -o and -c."""
    argv = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "-o":
            skip = True
        elif a != "-c" and a != entry["file"]:
            out.append(a)
    return out


def key_of(entry, version, config):
    args = compile_args(entry)
    pre = subprocess.run(args + ["-E", "-P", entry["file"]], cwd=entry["directory"],
                         capture_output=True, check=False)
    if pre.returncode != 0:
        return None  # clang-tidy will report why
    h = hashlib.sha256()
    for part in (version, config, " ".join(args).replace(REPO, "@"),
                 os.path.relpath(entry["file"], REPO)):
        h.update(part.encode() + b"\0")
    h.update(pre.stdout.replace(REPO.encode(), b"@"))
    return h.hexdigest()


def check(build, entry, cache, version, config):
    key = key_of(entry, version, config) if cache else None
    stamp = os.path.join(cache, key) if key else None
    if stamp and os.path.exists(stamp):
        return True, "", True
    r = subprocess.run(["clang-tidy", "--quiet", "-p", build, entry["file"]],
                       capture_output=True, text=True, check=False)
    # "N warnings generated." counts the suppressed ones (system headers): noise.
    err = "".join(l for l in r.stderr.splitlines(True)
                  if not l.rstrip().endswith("warnings generated.")
                  and not l.rstrip().endswith("warning generated."))
    ok = r.returncode == 0
    if ok and stamp:
        os.makedirs(cache, exist_ok=True)
        with open(stamp, "w", encoding="utf-8") as f:
            f.write(os.path.relpath(entry["file"], REPO) + "\n")
    return ok, r.stdout + err, False


def main():
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr if len(sys.argv) < 3 else sys.stdout)
        return 2 if len(sys.argv) < 3 else 0
    build, files = sys.argv[1], [os.path.abspath(f) for f in sys.argv[2:]]
    try:
        with open(os.path.join(build, "compile_commands.json"), encoding="utf-8") as f:
            db = {e["file"]: e for e in json.load(f)}
    except OSError as e:
        print(f"clang-tidy.py: {e}: configure the build first (make userspace)",
              file=sys.stderr)
        return 2
    missing = [f for f in files if f not in db]
    if missing:
        print("clang-tidy.py: not in compile_commands.json: " + " ".join(missing),
              file=sys.stderr)
        return 2
    cache = os.environ.get("VMFORK_CLANG_TIDY_CACHE", "/var/cache/vmfork/clang-tidy")
    if cache == "off":
        cache = ""
    version = subprocess.run(["clang-tidy", "--version"], capture_output=True,
                             text=True, check=True).stdout
    with open(os.path.join(REPO, ".clang-tidy"), encoding="utf-8") as f:
        config = f.read()
    failed = cached = 0
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        jobs = [pool.submit(check, build, db[f], cache, version, config) for f in files]
        for f, job in zip(files, jobs):
            ok, out, hit = job.result()
            if out:
                sys.stdout.write(out)
            failed += not ok
            cached += hit
    print(f"clang-tidy: {len(files)} files, {failed} with findings, {cached} clean"
          f" in the cache{'' if cache else ' (off)'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
