#!/usr/bin/env python3
"""Side-by-side benchmark of unionfs against a native directory, kernel overlayfs,
fuse-overlayfs and unionfs-fuse (issue 6, "Build" item 1).

Run it through scripts/bench.sh (which installs the comparison tools), as root:

    scripts/bench.sh                      # everything, medians of 3 runs
    scripts/bench.sh --quick              # smaller sizes, 1 run: a smoke test
    scripts/bench.sh --only find,du --kinds kernel,ours --runs 5
    scripts/bench.sh --list               # workloads and kinds

Every workload runs on a fresh mount with a fresh upper branch over lower trees that are
prepared once and shared read-only; the kinds are interleaved within each repetition (the
order rotates from one repetition to the next). It prints one table (milliseconds and the
ratio to kernel overlayfs) and writes bench-results/{results.csv,runs.csv,summary.md,
ratios.png}. Every mount it makes is unmounted at the end, even on error or Ctrl-C, and
its temp dir is removed. See benches/README.md.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def release_dir():
    """Where `cargo build --release` puts the binaries: target/<host tuple>/release, as
    .cargo/config.toml names the host target (for the static link)."""
    tuple_ = subprocess.run(["rustc", "--print", "host-tuple"], capture_output=True,
                            text=True, check=True).stdout.strip()
    return REPO / "target" / tuple_ / "release"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Skip(Exception):
    """This kind or workload cannot run here (a tool is missing, an option unknown)."""


class Failed(Exception):
    """The workload ran and failed (exit code, wrong result, timeout)."""


# --------------------------------------------------------------------------------------
# Mount table, cleanup
# --------------------------------------------------------------------------------------


def mountinfo():
    """Mount points (unescaped) -> (fstype, source) from /proc/self/mountinfo."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            a, b = line.split(" - ", 1)
            fields = a.split()
            mp = fields[4].encode().decode("unicode_escape")
            fstype, source = b.split()[:2]
            out[mp] = (fstype, source)
    return out


def is_mounted(path):
    return str(path) in mountinfo()


class Registry:
    """Everything the harness created that must go away: mounts, daemons, temp dirs."""

    def __init__(self):
        self.mounts = []  # paths, in mount order
        self.procs = []  # Popen objects we started and that may outlive a step
        self.tmpdirs = []
        self.groups = set()  # process groups of timed commands still running

    def add_mount(self, path):
        self.mounts.append(str(path))

    def unmount(self, path, fuse=True):
        """Unmount a mount we made: umount, then lazy. Returns True when it is gone."""
        path = str(path)
        cmds = [["umount", path], ["umount", "-l", path]]
        if fuse and shutil.which("fusermount3"):
            cmds.insert(1, ["fusermount3", "-uz", path])
        for cmd in cmds:
            if not is_mounted(path):
                break
            try:
                subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=30)
            except subprocess.TimeoutExpired:
                pass
        gone = not is_mounted(path)
        if gone and path in self.mounts:
            self.mounts.remove(path)
        return gone

    def stop(self, proc, grace=10.0):
        """Waits for a daemon we started to exit, then SIGTERM, then SIGKILL (by pid)."""
        problem = None
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            problem = f"pid {proc.pid} still running {grace:.0f} s after unmount"
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    proc.send_signal(sig)
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        if proc in self.procs:
            self.procs.remove(proc)
        return problem

    def cleanup(self):
        for g in list(self.groups):
            for kill in (os.killpg, os.kill):  # a group (or child) this harness created
                try:
                    kill(g, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for m in reversed(list(self.mounts)):
            if is_mounted(m) and not self.unmount(m):
                log(f"bench: could not unmount {m}")
        for p in list(self.procs):
            if p.poll() is None:
                self.stop(p, grace=2.0)
        for d in self.tmpdirs:
            if any(m.startswith(str(d) + "/") for m in mountinfo()):
                log(f"bench: leaving {d}: something is still mounted beneath it")
                continue
            rmtree(d)


REG = Registry()


def rmtree(path):
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    # Kernel overlayfs leaves its work dir with mode 000; root removes it anyway.
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def out(cmd, default="?"):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        s = (r.stdout or r.stderr).strip()
        return s.splitlines()[0] if s else default
    except (OSError, subprocess.TimeoutExpired):
        return default


def drop_caches(level=3):
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write(str(level))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# --------------------------------------------------------------------------------------
# Kinds
# --------------------------------------------------------------------------------------


class Kind:
    name = "?"
    fuse = True
    union = True
    only = None  # None: every workload; else the workloads this kind runs

    def probe(self):
        """Raises Skip when this kind cannot run here."""

    def version(self):
        return ""

    def command(self, lower, upper, work, mnt, foreground):
        raise NotImplementedError

    def mount(self, lower, upper, work, mnt, logfile):
        """Mounts in the foreground (our child), returns the Popen (None for the kernel)."""
        cmd = self.command(lower, upper, work, mnt, foreground=True)
        logf = open(logfile, "ab")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             start_new_session=True)
        logf.close()
        REG.procs.append(p)
        deadline = time.monotonic() + 30
        while True:
            if is_mounted(mnt):
                REG.add_mount(mnt)
                return p
            if p.poll() is not None:
                REG.procs.remove(p)
                raise Failed(f"{self.name}: mount failed (exit {p.returncode}): "
                             f"{tail(logfile)}")
            if time.monotonic() > deadline:
                REG.stop(p, grace=0.1)
                raise Failed(f"{self.name}: mount not live after 30 s")
            time.sleep(0.002)

    def unmount(self, mnt, proc):
        """Unmounts; returns a problem string or None."""
        problems = []
        if not REG.unmount(mnt, fuse=self.fuse):
            problems.append(f"{mnt} still mounted after umount, fusermount3 -uz, umount -l")
        if proc is not None:
            p = REG.stop(proc)
            if p:
                problems.append(p)
            elif proc.returncode not in (0, None):
                problems.append(f"daemon exited with {proc.returncode}")
        return "; ".join(problems) or None


def tail(path, n=3):
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-n:])
    except OSError:
        return ""


class Native(Kind):
    name = "native"
    fuse = False
    union = False


class Kernel(Kind):
    name = "kernel"
    fuse = False

    def probe(self):
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read():
                subprocess.run(["modprobe", "overlay"], check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read():
                raise Skip("the kernel has no overlay filesystem")

    def version(self):
        return f"overlayfs in Linux {platform.release()}"

    def command(self, lower, upper, work, mnt, foreground):
        return ["mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={lower},upperdir={upper},workdir={work}", str(mnt)]

    def mount(self, lower, upper, work, mnt, logfile):
        r = subprocess.run(self.command(lower, upper, work, mnt, True),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise Failed(f"mount -t overlay: {r.stderr.strip()}")
        REG.add_mount(mnt)
        return None


class FuseOverlayfs(Kind):
    name = "fuse-overlayfs"

    def probe(self):
        self.bin = shutil.which("fuse-overlayfs")
        if not self.bin:
            raise Skip("fuse-overlayfs is not installed (apt-get install fuse-overlayfs)")

    def version(self):
        r = subprocess.run([self.bin, "--version"], capture_output=True, text=True)
        for line in (r.stdout + r.stderr).splitlines():
            if "fuse-overlayfs" in line:
                return line.strip()
        return "fuse-overlayfs ?"

    def command(self, lower, upper, work, mnt, foreground):
        return [self.bin] + (["-f"] if foreground else []) + [
            "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(mnt)]


class UnionfsFuse(Kind):
    name = "unionfs-fuse"

    def probe(self):
        # Debian's package installs /usr/bin/unionfs (and the link unionfs-fuse). Ours is
        # called unionfs too: only take a binary that says it is unionfs-fuse.
        cands = [shutil.which("unionfs-fuse"), "/usr/bin/unionfs-fuse", "/usr/bin/unionfs"]
        for c in cands:
            if c and os.access(c, os.X_OK):
                r = subprocess.run([c, "--version"], capture_output=True, text=True)
                text = r.stdout + r.stderr
                if "unionfs-fuse" in text:
                    self.bin = c
                    self.ver = next(l.strip() for l in text.splitlines() if "unionfs-fuse" in l)
                    return
        raise Skip("unionfs-fuse is not installed (apt-get install unionfs-fuse)")

    def version(self):
        return self.ver

    def command(self, lower, upper, work, mnt, foreground):
        return [self.bin] + (["-f"] if foreground else []) + [
            "-o", "cow,allow_other", f"{upper}=RW:{lower}=RO", str(mnt)]


class Ours(Kind):
    name = "ours"

    def __init__(self, binary, extra_opts="", name="ours", only=None):
        self.bin = str(binary)
        self.extra = extra_opts
        self.name = name
        self.only = only

    def probe(self):
        if not os.access(self.bin, os.X_OK):
            raise Skip(f"{self.bin} is missing")
        if self.extra:
            # An option the binary does not know yet is a skip, not a crash.
            d = Path(tempfile.mkdtemp(prefix="unionfs-probe.", dir=ARGS.tmp))
            try:
                for s in ("l", "u", "w", "m"):
                    (d / s).mkdir()
                r = subprocess.run(
                    self.command(d / "l", d / "u", d / "w", d / "m", foreground=False),
                    capture_output=True, text=True, timeout=30)
                if r.returncode != 0:
                    raise Skip(f"-o {self.extra}: {r.stderr.strip()}")
                REG.add_mount(d / "m")
                REG.unmount(d / "m")
            finally:
                if not is_mounted(d / "m"):
                    rmtree(d)

    def version(self):
        v = out([self.bin, "--version"])
        built = datetime.datetime.fromtimestamp(os.stat(self.bin).st_mtime).strftime("%Y-%m-%d %H:%M")
        if Path(self.bin) == (release_dir() / "unionfs").resolve():
            rev = out(["git", "-C", str(REPO), "describe", "--always", "--dirty"], "")
            return f"{v} ({self.bin}, built {built} from work tree {rev})"
        return f"{v} ({self.bin}, built {built}; --unionfs-bin)"

    def command(self, lower, upper, work, mnt, foreground):
        opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
        if self.extra:
            opts += "," + self.extra
        return [self.bin] + (["-f"] if foreground else []) + ["-o", opts, "none", str(mnt)]


# --------------------------------------------------------------------------------------
# Lower trees (prepared once, shared read-only by every mount)
# --------------------------------------------------------------------------------------


class Sizes:
    def __init__(self, quick):
        self.include_max_files = 3000 if quick else 10000  # issue: "~8k files"
        self.big = (128 if quick else 1024) * MiB
        self.par = (32 if quick else 256) * MiB  # each of 4
        self.write = self.big
        self.touch = 500 if quick else 2000
        self.small = 1000 if quick else 5000
        self.many_dirs, self.many_per_dir = (20, 1000) if quick else (200, 1000)
        self.repo_files = 300
        self.mount_cycles = 3 if quick else 5


def count_files(path):
    n = 0
    for _, dirs, files in os.walk(path):
        n += len(files) + len(dirs)
    return n


class Lower:
    def __init__(self, root, sizes):
        self.root = Path(root)
        self.dir = self.root / "lower"
        self.sizes = sizes
        self.info = {}
        self.done = set()

    def p(self, name):
        return self.dir / name

    def ensure(self, names):
        for n in names:
            if n not in self.done:
                t0 = time.monotonic()
                getattr(self, "make_" + n.replace("-", "_"))()
                self.done.add(n)
                log(f"  prepared lower/{n} in {time.monotonic() - t0:.1f} s")

    def make_include(self):
        # A copy of /usr/include; its largest top-level subdirectories are left out until
        # at most include_max_files entries remain (here: /usr/include without boost/,
        # about 8k files, the size the issue names).
        src = Path("/usr/include")
        dst = self.p("include")
        dst.mkdir(parents=True)
        if not src.is_dir():
            raise Skip("/usr/include is missing")
        entries = sorted(src.iterdir())
        counts = {e: (count_files(e) + 1 if e.is_dir() and not e.is_symlink() else 1)
                  for e in entries}
        total = sum(counts.values())
        dropped = []
        for e in sorted(entries, key=lambda e: -counts[e]):
            if total <= self.sizes.include_max_files:
                break
            total -= counts[e]
            dropped.append(e.name + "/")
        keep = [str(e) for e in entries if e.name + "/" not in dropped]
        run(["cp", "-a", "--"] + keep + [str(dst)])
        files = sum(1 for _, _, fs in os.walk(dst) for _ in fs)
        size = int(out(["du", "-sk", str(dst)], "0").split()[0]) * 1024
        self.info["include"] = (f"copy of /usr/include without {', '.join(dropped) or 'nothing'}: "
                                f"{files} files, {count_files(dst)} entries, {size / MiB:.0f} MiB")

    def make_rmtree(self):
        src = Path("/usr/include/linux")
        dst = self.p("rmtree")
        if src.is_dir():
            run(["cp", "-a", str(src), str(dst)])
        else:
            make_synthetic_tree(dst, 20, 40, 2048)
        self.info["rmtree"] = f"copy of /usr/include/linux: {count_files(dst)} entries"

    def make_touch(self):
        dst = self.p("touch")
        make_synthetic_tree(dst, 20, self.sizes.touch // 20, 4096)
        self.info["touch"] = f"{self.sizes.touch} files of 4 KiB in 20 directories"

    def make_big(self):
        write_random(self.p("big"), self.sizes.big)
        self.info["big"] = f"one {self.sizes.big // MiB} MiB file of random bytes"

    def make_par(self):
        d = self.p("par")
        d.mkdir()
        for i in range(4):
            write_random(d / str(i), self.sizes.par)
        self.info["par"] = f"4 files of {self.sizes.par // MiB} MiB"

    def make_smalldir(self):
        d = self.p("smalldir")
        d.mkdir()
        (d / "lower-file").write_text("a file of the lower branch\n")

    def make_repo(self):
        d = self.p("repo")
        make_synthetic_tree(d, 15, self.sizes.repo_files // 15, 3000, text=True)
        env = git_env()
        run(["git", "init", "-q", str(d)], env=env)
        run(["git", "-C", str(d), "add", "-A"], env=env)
        run(["git", "-C", str(d), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
             "commit", "-q", "-m", "initial"], env=env)
        self.info["repo"] = (f"git repository (git init + commit), {self.sizes.repo_files} "
                             f"files in 15 directories")

    def make_crate(self):
        d = self.p("crate")
        (d / "src").mkdir(parents=True)
        (d / "Cargo.toml").write_text(
            '[package]\nname = "benchcrate"\nversion = "0.1.0"\nedition = "2021"\n\n'
            "[dependencies]\n")
        mods = []
        for m in range(8):
            fns = "\n".join(
                f"pub fn f{i}(x: u64) -> u64 {{ let v: Vec<u64> = (0..x).map(|k| k * {i + 1} + "
                f"{m}).collect(); v.iter().sum::<u64>() ^ {i} }}" for i in range(30))
            (d / "src" / f"m{m}.rs").write_text(fns + "\n")
            mods.append(f"mod m{m};")
        calls = " + ".join(f"m{m}::f{m}(10)" for m in range(8))
        (d / "src" / "main.rs").write_text(
            "\n".join(mods) + f'\nfn main() {{ let s = {calls}; if s > 0 {{ println!("ok"); }} }}\n')
        self.info["crate"] = "a crate with no dependencies: 9 source files, 240 functions"

    def make_many(self):
        d = self.p("many")
        d.mkdir()
        for i in range(self.sizes.many_dirs):
            sub = d / f"d{i:03}"
            sub.mkdir()
            for j in range(self.sizes.many_per_dir):
                os.close(os.open(sub / f"file-with-a-longish-name-{j:04}",
                                 os.O_CREAT | os.O_WRONLY, 0o644))
        n = self.sizes.many_dirs * self.sizes.many_per_dir
        self.info["many"] = f"{n} empty files in {self.sizes.many_dirs} directories"

    def make_empty(self):
        self.p("empty").mkdir()

    def make_tarball(self):
        # ~1,200 files: /usr/include/c++ and /usr/include/x86_64-linux-gnu (or synthetic).
        t = self.root / "untar.tar"
        srcs = [s for s in ("c++", "x86_64-linux-gnu") if (Path("/usr/include") / s).is_dir()]
        if srcs:
            run(["tar", "-cf", str(t), "-C", "/usr/include"] + srcs)
        else:
            tmp = self.root / "tarsrc"
            make_synthetic_tree(tmp, 40, 30, 8000, text=True)
            run(["tar", "-cf", str(t), "-C", str(tmp), "."])
            rmtree(tmp)
        n = len(out_all(["tar", "-tf", str(t)]).splitlines())
        self.info["tarball"] = (f"tar of /usr/include/{{{','.join(srcs)}}}: {n} entries, "
                                f"{t.stat().st_size / MiB:.0f} MiB (outside the union)")
        self.tar_entries = n


def out_all(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def make_synthetic_tree(root, ndirs, per_dir, size, text=False):
    rng = random.Random(42)
    root = Path(root)
    root.mkdir(parents=True)
    for i in range(ndirs):
        d = root / f"dir{i:02}"
        d.mkdir()
        for j in range(per_dir):
            if text:
                words = " ".join(f"w{rng.randrange(10000)}" for _ in range(size // 6))
                (d / f"file{j:03}.txt").write_text(words[:size] + "\n")
            else:
                (d / f"file{j:03}.bin").write_bytes(rng.randbytes(size))


def write_random(path, size):
    chunk = os.urandom(4 * MiB)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            # Random data (not zeros, no holes), cheap to make: a random block, varied.
            n = min(left, len(chunk))
            f.write(chunk[:n])
            chunk = chunk[1:] + chunk[:1] if left > n else chunk
            left -= n
        f.flush()
        os.fsync(f.fileno())


def git_env():
    env = dict(os.environ)
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", LC_ALL="C")
    return env


# Which lower trees were last read into the page cache, per drop_caches epoch.
CACHE = {"epoch": 0, "warm": {}}


def warm_tools(lower, tmp):
    """After a drop_caches, the tools' own binaries and libraries (rustc's are large) are
    read back once, untimed, so that the first kind to run after a drop does not pay."""
    if CACHE["warm"].get("_tools") == CACHE["epoch"]:
        return
    for tool in ("find", "du", "grep", "tar", "rm", "touch", "dd", "git", "cargo"):
        if shutil.which(tool):
            subprocess.run([tool, "--version"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
    if shutil.which("cargo") and lower.p("crate").is_dir():
        w = Path(tmp) / "cargo-warm"
        rmtree(w)
        run(["cp", "-a", str(lower.p("crate")), str(w)])
        env = dict(os.environ)
        env.pop("RUSTC_WRAPPER", None)
        env["CARGO_TARGET_DIR"] = str(w / "target")
        subprocess.run(["cargo", "build", "--offline", "-q"], cwd=w, env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rmtree(w)
    CACHE["warm"]["_tools"] = CACHE["epoch"]


def prewarm(lower, names):
    """Reads lower trees into the page cache (untimed) after a drop_caches."""
    for n in names:
        if CACHE["warm"].get(n) == CACHE["epoch"]:
            continue
        p = lower.p(n)
        paths = [p] if p.is_file() else [Path(r) / f for r, _, fs in os.walk(p) for f in fs]
        for f in paths:
            if f.is_symlink() or not f.is_file():
                continue
            with open(f, "rb", buffering=0) as fh:
                while fh.read(MiB):
                    pass
        CACHE["warm"][n] = CACHE["epoch"]


# --------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------


class Ctx:
    """Where one run of one workload happens: p(tree) is a lower tree as this kind shows
    it (in the union, or the lower itself / a private copy for native); root is a place
    to create new files (in the union, or a fresh directory for native)."""

    def __init__(self, kind, lower, root, trees, copied, scratch):
        self.kind, self.lower, self.root = kind, lower, Path(root)
        self.trees, self.copied, self.scratch = trees, copied, Path(scratch)

    def p(self, name):
        if not self.kind.union:
            return self.root / name if name in self.copied else self.lower.p(name)
        return self.root / name


def timed(cmd, ctx, env=None, cwd=None, ok=(0,), stdout=None):
    """Runs cmd in its own process group; returns seconds; raises Failed."""
    so = open(stdout, "wb") if stdout else subprocess.DEVNULL
    se = open(ctx.scratch / "stderr", "wb")
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=so, stderr=se, env=env,
                             cwd=cwd, start_new_session=True)
        REG.groups.add(p.pid)
        try:
            rc, timed_out = wait_exact(p, ARGS.timeout)
        finally:
            if p.poll() is not None:
                REG.groups.discard(p.pid)
        if timed_out:
            extra = f" ({timed_out})" if isinstance(timed_out, str) else ""
            raise Failed(f"TIMEOUT after {ARGS.timeout} s: {' '.join(map(str, cmd))[:200]}{extra}")
        dt = time.perf_counter() - t0
    finally:
        if stdout:
            so.close()
        se.close()
    if rc not in ok:
        err = (ctx.scratch / "stderr").read_text(errors="replace").strip().splitlines()
        raise Failed(f"exit {rc}: {' '.join(map(str, cmd))[:120]}: " + " | ".join(err[:3]))
    return dt


CURRENT = {"daemon": None}  # the foreground FUSE daemon (our child) serving the current run


def reap_after_kill(pid):
    """Waits for a SIGKILLed workload. A process whose FUSE request the daemon has already
    read cannot die until it is answered: if it is still there after 5 s, SIGKILL the
    daemon of this run (a child of ours), which aborts the connection."""
    for _ in range(500):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return None
        time.sleep(0.01)
    d = CURRENT["daemon"]
    note = "the workload could not be killed (waiting on the FUSE daemon)"
    if d is not None and d.poll() is None:
        d.kill()
        note += f"; SIGKILLed the daemon (pid {d.pid})"
    os.waitpid(pid, 0)
    return note


def wait_exact(p, timeout):
    """Waits for p with a blocking waitpid (Popen.wait(timeout=) polls with sleeps of up to
    50 ms, which would quantize the timings); a watchdog SIGKILLs p's process group (one we
    created with start_new_session) after timeout seconds. Returns (returncode, timed_out)."""
    fired = []

    def kill():
        fired.append(True)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    def watchdog():
        kill()
        time.sleep(5)
        d = CURRENT["daemon"]
        if p.poll() is None and d is not None and d.poll() is None:
            fired.append("the workload could not be killed (waiting on the FUSE daemon); "
                         f"SIGKILLed the daemon (pid {d.pid})")
            d.kill()
    t = threading.Timer(timeout, watchdog)
    t.daemon = True
    t.start()
    try:
        rc = p.wait()
    finally:
        t.cancel()
    return rc, (" ".join(x for x in fired if isinstance(x, str)) or True) if fired else False


def in_process(fn):
    """Runs fn (system calls on the mount) in a forked child that times itself, so that a
    hung daemon cannot hang the harness: the child is SIGKILLed after --timeout (a fatal
    signal ends a process waiting for a FUSE answer). Returns fn's seconds."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        msg = b""
        try:
            os.setsid()
            t0 = time.perf_counter()
            fn()
            msg = f"ok {time.perf_counter() - t0!r}".encode()
        except BaseException as e:  # the child reports everything, then exits
            msg = f"err {type(e).__name__}: {e}".encode(errors="replace")
        finally:
            try:
                os.write(wr, msg)
            finally:
                os._exit(0)
    os.close(wr)
    REG.groups.add(pid)
    try:
        import select
        r, _, _ = select.select([rd], [], [], ARGS.timeout)
        if not r:
            os.kill(pid, signal.SIGKILL)
            note = reap_after_kill(pid)
            REG.groups.discard(pid)
            raise Failed(f"TIMEOUT after {ARGS.timeout} s (in-process system calls)"
                         + (f" ({note})" if note else ""))
        data = b""
        while True:
            chunk = os.read(rd, 65536)
            if not chunk:
                break
            data += chunk
        os.waitpid(pid, 0)
        REG.groups.discard(pid)
    finally:
        os.close(rd)
    text = data.decode(errors="replace")
    if text.startswith("ok "):
        return float(text[3:])
    raise Failed(text[4:] if text.startswith("err ") else f"child died: {text!r}")


class Workload:
    def __init__(self, name, label, trees, run, cache="warm", mutates=False, category="",
                 setup=None, check=None, needs=None, kinds_only=None, in_upper=()):
        self.name, self.label, self.trees, self.run = name, label, trees, run
        self.cache, self.mutates, self.category = cache, mutates, category
        self.setup, self.check, self.needs = setup, check, needs
        # Lower files hard-linked into the upper (rw) branch before mounting, as NAME-rw.
        self.in_upper = in_upper


def w_find(ctx):
    return timed(["find", ctx.p("include")], ctx)


def w_du(ctx):
    return timed(["du", "-s", ctx.p("include")], ctx)


def w_grep(ctx):
    return timed(["grep", "-r", "-F", "unionfs-bench-needle-not-there", ctx.p("include")], ctx,
                 ok=(1,))


def s_untar(ctx):
    (ctx.root / "untar").mkdir()


def w_untar(ctx):
    return timed(["tar", "-xf", ctx.lower.root / "untar.tar", "-C", ctx.root / "untar"], ctx)


def c_untar(ctx):
    n = sum(len(d) + len(f) for _, d, f in os.walk(ctx.root / "untar"))
    want = ctx.lower.tar_entries
    if abs(n - want) > 2:
        raise Failed(f"untar: {n} entries in the union, the archive has {want}")


def w_rm(ctx):
    return timed(["rm", "-rf", ctx.p("rmtree")], ctx)


def c_rm(ctx):
    if os.path.lexists(ctx.p("rmtree")):
        raise Failed("rm -rf: the subtree is still visible")
    if ctx.kind.union and count_files(ctx.lower.p("rmtree")) == 0:
        raise Failed("rm -rf: the LOWER branch lost its files")


def s_touch(ctx):
    files = sorted(str(Path(r) / f) for r, _, fs in os.walk(ctx.p("touch")) for f in fs)
    ctx.touch_files = files
    ctx.touch_before = os.stat(files[0]).st_mtime_ns


def w_touch(ctx):
    return timed(["touch", "--"] + ctx.touch_files, ctx)


def c_touch(ctx):
    for f in (ctx.touch_files[0], ctx.touch_files[-1]):
        if os.stat(f).st_mtime_ns <= ctx.touch_before:
            raise Failed(f"touch: {f} kept its old mtime")


def w_read(ctx):
    return timed(["dd", f"if={ctx.p('big')}", "of=/dev/null", "bs=1M", "status=none"], ctx)


def w_read_rw(ctx):
    return timed(["dd", f"if={ctx.root / 'big-rw'}", "of=/dev/null", "bs=1M", "status=none"],
                 ctx)


def w_write(ctx):
    n = ctx.lower.sizes.write // MiB
    return timed(["dd", "if=/dev/zero", f"of={ctx.root / 'written'}", "bs=1M", f"count={n}",
                  "conv=fdatasync", "status=none"], ctx)


def c_write(ctx):
    if os.stat(ctx.root / "written").st_size != ctx.lower.sizes.write:
        raise Failed("write: wrong size")


def w_append(ctx):
    def go():
        fd = os.open(ctx.p("big"), os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
    return in_process(go)


def c_append(ctx):
    if os.stat(ctx.p("big")).st_size != ctx.lower.sizes.big + 1:
        raise Failed("append: the union's file does not have size+1")
    if ctx.kind.union and os.stat(ctx.lower.p("big")).st_size != ctx.lower.sizes.big:
        raise Failed("append: the LOWER file changed")


def w_trunc(ctx):
    def go():
        os.close(os.open(ctx.p("big"), os.O_WRONLY | os.O_TRUNC))
    return in_process(go)


def c_trunc(ctx):
    if os.stat(ctx.p("big")).st_size != 0:
        raise Failed("O_TRUNC: the file is not empty")
    if ctx.kind.union and os.stat(ctx.lower.p("big")).st_size != ctx.lower.sizes.big:
        raise Failed("O_TRUNC: the LOWER file changed")


def w_small(ctx):
    d = ctx.p("smalldir")
    names = [str(d / f"small-{i:05}") for i in range(ctx.lower.sizes.small)]
    data = b"s" * 1024

    def go():
        for n in names:
            fd = os.open(n, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.write(fd, data)
            os.close(fd)
        for n in names:
            os.stat(n)
        for n in names:
            os.unlink(n)
    return in_process(go)


def c_small(ctx):
    left = sorted(os.listdir(ctx.p("smalldir")))
    if left != ["lower-file"]:
        raise Failed(f"small files: the directory holds {left[:5]}... after unlinking")


def w_par(ctx):
    script = " ".join(f'dd if="{ctx.p("par")}/{i}" of=/dev/null bs=1M status=none &'
                      for i in range(4)) + " wait"
    return timed(["sh", "-c", script], ctx)


def w_git(ctx):
    env = git_env()
    return timed(["git", "-C", ctx.p("repo"), "status", "--porcelain"], ctx, env=env,
                 stdout=ctx.scratch / "git.out")


def c_git(ctx):
    o = (ctx.scratch / "git.out").read_text(errors="replace").strip()
    if o:
        raise Failed(f"git status: the checkout is not clean in the union: {o.splitlines()[:3]}")


def w_cargo(ctx):
    env = dict(os.environ)
    env.pop("RUSTC_WRAPPER", None)
    env.update(CARGO_TARGET_DIR=str(ctx.root / "cargo-target"), CARGO_TERM_COLOR="never")
    return timed(["cargo", "build", "--offline", "-q"], ctx, env=env, cwd=ctx.p("crate"))


def c_cargo(ctx):
    exe = ctx.root / "cargo-target" / "debug" / "benchcrate"
    r = subprocess.run([str(exe)], capture_output=True, text=True)
    if r.stdout.strip() != "ok":
        raise Failed(f"cargo build: the binary printed {r.stdout!r} {r.stderr[:100]!r}")


def cargo_needed():
    if not shutil.which("cargo"):
        raise Skip("cargo is not on PATH")


WORKLOADS = [
    Workload("find", "find ~8k files", ["include"], w_find, category="meta"),
    Workload("find-cold", "find ~8k files, caches dropped", ["include"], w_find, cache="cold",
             category="info"),
    Workload("du", "du -s", ["include"], w_du, category="meta"),
    Workload("grep", "grep -r", ["include"], w_grep, category="meta"),
    Workload("untar", "untar ~1.2k files", ["tarball"], w_untar, cache="n/a", category="meta",
             setup=s_untar, check=c_untar),
    Workload("rm-rf", "rm -rf lower subtree", ["rmtree"], w_rm, mutates=True, category="meta",
             check=c_rm),
    Workload("touch", "touch 2,000 lower files", ["touch"], w_touch, mutates=True,
             category="touch", setup=s_touch, check=c_touch),
    Workload("read", "read 1 GiB lower file", ["big"], w_read, category="data"),
    Workload("read-rw", "read 1 GiB file on the rw branch", ["big"], w_read_rw,
             category="data", in_upper=("big",)),
    Workload("write", "write 1 GiB + fdatasync", [], w_write, cache="n/a", category="data",
             check=c_write),
    Workload("append", "append 1 byte to 1 GiB lower (copy-up)", ["big"], w_append,
             mutates=True, category="copyup", check=c_append),
    Workload("trunc", "open O_TRUNC 1 GiB lower", ["big"], w_trunc, mutates=True,
             category="trunc", check=c_trunc),
    Workload("small", "5,000 create/stat/unlink", ["smalldir"], w_small, mutates=True,
             cache="n/a", category="meta", check=c_small),
    Workload("parallel", "4 processes read 4 lower files", ["par"], w_par, category="info"),
    Workload("git", "git status", ["repo"], w_git, mutates=True, category="info", check=c_git),
    Workload("cargo", "cargo build (small crate)", ["crate"], w_cargo, mutates=True,
             cache="n/a", category="info", check=c_cargo, needs=cargo_needed),
    Workload("mount", "empty mount + unmount", ["empty"], None, cache="n/a", category="mount"),
]
WL = {w.name: w for w in WORKLOADS}


def labels(sizes):
    """Row labels that say the sizes actually used."""
    big = f"{sizes.big // MiB} MiB" if sizes.big != 1024 * MiB else "1 GiB"
    WL["touch"].label = f"touch {sizes.touch:,} lower files"
    WL["read"].label = f"read {big} lower file"
    WL["read-rw"].label = f"read {big} file on the rw branch"
    WL["write"].label = f"write {big} + fdatasync"
    WL["append"].label = f"append 1 byte to {big} lower (copy-up)"
    WL["trunc"].label = f"open O_TRUNC {big} lower"
    WL["small"].label = f"{sizes.small:,} create/stat/unlink"
    WL["parallel"].label = f"4 processes read 4x{sizes.par // MiB} MiB"


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


class Bench:
    def __init__(self, kinds, lower, tmp):
        self.kinds, self.lower, self.tmp = kinds, lower, Path(tmp)
        self.results = {}  # (workload, kind) -> list of seconds
        self.errors = {}  # (workload, kind) -> list of messages
        self.notes = []  # daemon problems seen (unmount, exit)
        self.runs = []  # (workload, kind, rep, ms or None, status)
        self.seq = 0

    def fresh(self, kind_name):
        self.seq += 1
        d = self.tmp / "runs" / f"{self.seq:04}-{kind_name}"
        for s in ("upper", "work", "mnt", "scratch"):
            (d / s).mkdir(parents=True)
        return d

    def one(self, wl, kind, rep):
        if wl.name == "mount":
            return self.one_mount(kind, rep)
        d = self.fresh(kind.name)
        proc = None
        mnt = d / "mnt"
        copied = set()
        for t in wl.in_upper:
            # The same inode as the lower file: its pages are as warm as the lower's.
            os.link(self.lower.p(t), d / "upper" / f"{t}-rw")
        try:
            if kind.union:
                root = mnt
                logfile = self.tmp / "logs" / f"{d.name}-{wl.name}.log"
                proc = kind.mount(self.lower.dir, d / "upper", d / "work", mnt, logfile)
                CURRENT["daemon"] = proc
            else:
                root = d / "upper"
                if wl.mutates:
                    for t in wl.trees:
                        run(["cp", "-a", str(self.lower.p(t)), str(root / t)])
                        copied.add(t)
            ctx = Ctx(kind, self.lower, root, wl.trees, copied, d / "scratch")
            if wl.setup:
                wl.setup(ctx)
            if wl.cache == "cold":
                drop_caches(3)
                CACHE["epoch"] += 1
            else:
                warm_tools(self.lower, self.tmp)
                if not copied:
                    prewarm(self.lower, [t for t in wl.trees if t != "tarball"])
                os.sync()
            secs = wl.run(ctx)
            if wl.check:
                wl.check(ctx)
            return secs
        finally:
            if kind.union:
                CURRENT["daemon"] = None
                if is_mounted(mnt) or proc is not None:
                    problem = kind.unmount(mnt, proc)
                    if problem:
                        self.notes.append(f"{kind.name} after {wl.name} (run {rep + 1}): {problem}")
            if not is_mounted(mnt):
                rmtree(d)
            os.sync()

    def one_mount(self, kind, rep):
        if not kind.union:
            raise Skip("not a mount")
        times = []
        for _ in range(self.lower.sizes.mount_cycles):
            d = self.fresh(kind.name)
            mnt = d / "mnt"
            cmd = kind.command(self.lower.p("empty"), d / "upper", d / "work", mnt,
                               foreground=False)
            try:
                logf = open(self.tmp / "logs" / f"{d.name}-mount.log", "wb")
                t0 = time.perf_counter()
                mp = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
                rc, timed_out = wait_exact(mp, 60)
                logf.close()
                REG.add_mount(mnt)
                if rc != 0:
                    raise Failed(f"{cmd[0]} exit {rc}: {tail(logf.name)}")
                while not is_mounted(mnt):
                    if time.perf_counter() - t0 > 10:
                        raise Failed("mount command returned but nothing is mounted")
                    time.sleep(0.0002)
                um = subprocess.Popen(["umount", str(mnt)], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                urc, _ = wait_exact(um, 60)
                t1 = time.perf_counter()
                if urc != 0:
                    raise Failed(f"umount exit {urc}")
                times.append(t1 - t0)
            finally:
                if is_mounted(mnt):
                    REG.unmount(mnt, fuse=kind.fuse)
                elif str(mnt) in REG.mounts:
                    REG.mounts.remove(str(mnt))
                if not is_mounted(mnt):
                    rmtree(d)
        return statistics.median(times)

    def go(self, workloads, runs):
        total = len(workloads) * runs
        k = 0
        for rep in range(runs):
            for wl in workloads:
                k += 1
                order = self.kinds[rep % len(self.kinds):] + self.kinds[:rep % len(self.kinds)]
                cells = []
                for kind in order:
                    if kind.only is not None and wl.name not in kind.only:
                        continue
                    key = (wl.name, kind.name)
                    try:
                        secs = self.one(wl, kind, rep)
                        self.results.setdefault(key, []).append(secs)
                        self.runs.append((wl.name, kind.name, rep + 1, secs * 1e3, "ok"))
                        cells.append(f"{kind.name} {secs * 1e3:.0f}")
                    except Skip as e:
                        self.errors.setdefault(key, []).append(f"skipped: {e}")
                        self.runs.append((wl.name, kind.name, rep + 1, None, f"skipped: {e}"))
                    except Failed as e:
                        self.errors.setdefault(key, []).append(str(e))
                        self.runs.append((wl.name, kind.name, rep + 1, None, f"FAILED: {e}"))
                        cells.append(f"{kind.name} FAILED")
                        log(f"    {kind.name} {wl.name}: FAILED: {e}")
                log(f"  [{k}/{total}] run {rep + 1} {wl.name}: " + ", ".join(cells))

    def median_ms(self, w, k):
        v = self.results.get((w, k))
        return statistics.median(v) * 1e3 if v else None


def measure_memory(ours, lower, tmp):
    """RSS of our daemon per cached inode after find over the 'many' tree, and after the
    kernel forgets the inodes (echo 2 > drop_caches)."""
    d = Path(tmp) / "mem"
    for s in ("upper", "work", "mnt"):
        (d / s).mkdir(parents=True)
    mnt = d / "mnt"
    res = {}
    proc = ours.mount(lower.dir, d / "upper", d / "work", mnt, Path(tmp) / "logs" / "mem.log")
    try:
        time.sleep(0.5)
        res["rss_start_kib"] = rss_kib(proc.pid)
        t0 = time.perf_counter()
        r = subprocess.run(["find", str(mnt / "many"), "-printf", ".%s"], capture_output=True,
                           text=True, timeout=max(ARGS.timeout, 900))
        res["find_s"] = time.perf_counter() - t0
        if r.returncode != 0:
            raise Failed(f"find exit {r.returncode}: {r.stderr[:200]}")
        seen = r.stdout.count(".")
        res["entries"] = seen
        res["rss_after_find_kib"] = rss_kib(proc.pid)
        res["nodes_after_find"] = ctl_nodes(ours, mnt)
        drop_caches(2)
        CACHE["epoch"] += 1
        time.sleep(3)
        res["rss_after_forget_kib"] = rss_kib(proc.pid)
        res["nodes_after_forget"] = ctl_nodes(ours, mnt)
        grow = res["rss_after_find_kib"] - res["rss_start_kib"]
        res["bytes_per_inode"] = grow * 1024 / max(seen, 1)
        res["shrunk_kib"] = res["rss_after_find_kib"] - res["rss_after_forget_kib"]
    finally:
        problem = ours.unmount(mnt, proc)
        if problem:
            res["problem"] = problem
        if not is_mounted(mnt):
            rmtree(d)
    return res


def ctl_nodes(ours, mnt):
    try:
        r = subprocess.run([ours.bin, "ctl", str(mnt), "stats", "--json"], capture_output=True,
                           text=True, timeout=10)
        if r.returncode == 0:
            return json.loads(r.stdout).get("nodes")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    return None


def profile(bench, ours, wl, outdir):
    """One run of wl on ours with `strace -c -f -p DAEMON` attached."""
    if not shutil.which("strace"):
        return f"{wl.name}: strace is not installed"
    d = bench.fresh("profile")
    mnt = d / "mnt"
    logfile = bench.tmp / "logs" / f"profile-{wl.name}.log"
    proc = ours.mount(bench.lower.dir, d / "upper", d / "work", mnt, logfile)
    report = outdir / f"profile-{wl.name}.txt"
    st = None
    try:
        ops0 = ctl_stat(ours, mnt)
        st = subprocess.Popen(["strace", "-c", "-f", "-p", str(proc.pid), "-o", str(report)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        REG.procs.append(st)
        time.sleep(1.0)  # let strace attach to every thread
        ctx = Ctx(ours, bench.lower, mnt, wl.trees, set(), d / "scratch")
        if wl.setup:
            wl.setup(ctx)
        prewarm(bench.lower, [t for t in wl.trees if t != "tarball"])
        cpu0 = cpu_secs(proc.pid)
        secs = wl.run(ctx)
        cpu1 = cpu_secs(proc.pid)
        ops1 = ctl_stat(ours, mnt)
    finally:
        if st is not None:
            st.send_signal(signal.SIGINT)
            try:
                st.wait(timeout=20)
            except subprocess.TimeoutExpired:
                st.kill()
            REG.procs.remove(st)
        problem = ours.unmount(mnt, proc)
        if not is_mounted(mnt):
            rmtree(d)
    ops = None
    if ops0 and ops1:
        ops = {k: ops1.get(k, 0) - ops0.get(k, 0) for k in ("ops", "copy_ups", "bytes_copied")}
    with open(report, "a") as f:
        f.write(f"\n# {wl.label} under strace: {secs * 1e3:.0f} ms; daemon counters: {ops}; "
                f"daemon CPU user {cpu1[0] - cpu0[0]:.2f} s, system {cpu1[1] - cpu0[1]:.2f} s\n")
        if problem:
            f.write(f"# unmount: {problem}\n")
    return f"{wl.name}: strace -c -f -p <daemon> in {report.relative_to(REPO) if report.is_relative_to(REPO) else report} ({secs * 1e3:.0f} ms under strace; {ops})"


def cpu_secs(pid):
    """(user, system) CPU seconds of a process, all threads."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return int(f[11]) / hz, int(f[12]) / hz


def ctl_stat(ours, mnt):
    try:
        r = subprocess.run([ours.bin, "ctl", str(mnt), "stats", "--json"], capture_output=True,
                           text=True, timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def fmt_ms(ms):
    if ms is None:
        return "-"
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def table(bench, workloads, kinds):
    names = [k.name for k in kinds]
    head = ["workload", "cache"] + names
    rows = []
    for wl in workloads:
        kern = bench.median_ms(wl.name, "kernel")
        row = [wl.label, wl.cache]
        for k in kinds:
            ms = bench.median_ms(wl.name, k.name)
            errs = bench.errors.get((wl.name, k.name), [])
            if ms is None:
                if k.only is not None and wl.name not in k.only:
                    row.append("")
                elif errs and all(e.startswith("skipped") for e in errs):
                    row.append("n/a" if wl.name == "mount" and not k.union else "skipped")
                else:
                    row.append("FAILED" if errs else "-")
                continue
            cell = fmt_ms(ms)
            if kern and k.name != "kernel":
                cell += f" [{ms / kern:.2f}]"
            if any(not e.startswith("skipped") for e in errs):
                cell += " !"
            row.append(cell)
        rows.append(row)
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
    sep = "|" + "|".join("-" * (x + 2) for x in w) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in rows])


def targets(bench, mem):
    """The issue's targets for ours, from this run's medians."""
    m = bench.median_ms
    res = []

    ran = {w for (w, _k) in list(bench.results) + list(bench.errors)}

    def add(what, ok, detail, row=None):
        if ok is None and row is not None and row not in ran:
            res.append((what, "not run", "row not selected (--only/--skip)"))
            return
        res.append((what, "met" if ok else ("MISSED" if ok is not None else "not measured"),
                    detail))

    for w in ("find", "du", "grep", "untar", "rm-rf", "small"):
        o, k = m(w, "ours"), m(w, "kernel")
        anchors = [x for x in (m(w, "fuse-overlayfs"), m(w, "unionfs-fuse")) if x]
        if o is None or k is None:
            add(f"{WL[w].label}: <= 2x kernel, <= 0.5x faster FUSE anchor", None, "", w)
            continue
        r = o / k
        detail = f"ours/kernel {r:.2f}"
        ok = r <= 2.0
        if anchors:
            ra = o / min(anchors)
            detail += f", ours/faster FUSE anchor {ra:.2f}"
            ok = ok and ra <= 0.5
        add(f"{WL[w].label}: <= 2x kernel, <= 0.5x faster FUSE anchor", ok, detail)
    o, k = m("write", "ours"), m("write", "kernel")
    add(f"{WL['write'].label}: <= 1.2x kernel", (o / k <= 1.2) if o and k else None,
        f"ours/kernel {o / k:.2f}" if o and k else "", "write")
    for w in ("read", "read-rw"):
        o, k = m(w, "ours"), m(w, "kernel")
        if o and k:
            add(f"{WL[w].label}: >= 0.9x kernel throughput", k / o >= 0.9,
                f"throughput ours/kernel {k / o:.2f}")
        else:
            add(f"{WL[w].label}: >= 0.9x kernel throughput", None, "", w)
    for w, lim, kind in (("append", 1.2, "ours"), ("touch", 1.0, "ours"),
                         ("touch", 0.35, "ours-metacopy"), ("trunc", 1.5, "ours")):
        o, k = m(w, kind), m(w, "kernel")
        label = f"{WL[w].label}{' (-o metacopy=on)' if kind != 'ours' else ''}: <= {lim}x kernel"
        if o and k:
            add(label, o / k <= lim, f"{kind}/kernel {o / k:.2f}")
        else:
            why = "; ".join(bench.errors.get((w, kind), []))[:120]
            add(label, None, why, w)
    o, f = m("mount", "ours"), m("mount", "fuse-overlayfs")
    if o and f:
        add("empty mount + unmount: no slower than fuse-overlayfs", o <= f,
            f"ours {o:.1f} ms, fuse-overlayfs {f:.1f} ms ({o / f:.2f})")
    else:
        add("empty mount + unmount: no slower than fuse-overlayfs", None, "", "mount")
    if mem and "bytes_per_inode" in mem:
        add("daemon RSS per cached inode < 1 KiB", mem["bytes_per_inode"] < 1024,
            f"{mem['bytes_per_inode']:.0f} bytes per inode")
        grow = mem["rss_after_find_kib"] - mem["rss_start_kib"]
        shr = mem["shrunk_kib"]
        add("RSS shrinks back when the kernel forgets the inodes", grow > 0 and shr >= grow / 2,
            f"grew {grow} KiB with find, shrank {shr} KiB after drop_caches")
    else:
        add("daemon RSS per cached inode < 1 KiB", None, (mem or {}).get("error", ""))
    return res


def targets_metadata(bench):
    """Issue 13's targets, for ours with io_uring (default) and without (uring=off)."""
    m = bench.median_ms
    res = []
    rows = [("find", 2.0, "ours"), ("du", 2.0, "ours"), ("grep", 2.0, "ours"),
            ("git", 2.0, "ours"), ("untar", 3.0, "ours"), ("small", 3.0, "ours"),
            ("rm-rf", 3.0, "ours"), ("touch", 0.6, "ours-metacopy")]
    for w, lim, kind in rows:
        k = m(w, "kernel")
        label = f"{WL[w].label}{' (-o metacopy=on)' if kind != 'ours' else ''}: <= {lim}x kernel"
        ring, off = m(w, kind), (m(w, "ours-uring-off") if kind == "ours" else None)
        if ring is None or k is None:
            res.append((label, "not measured", ""))
            continue
        detail = f"{kind}/kernel {ring / k:.2f}"
        if off is not None:
            detail += f"; uring=off/kernel {off / k:.2f}, ring/off {ring / off:.2f}"
        res.append((label, "met" if ring / k <= lim else "MISSED", detail))
    o, f = m("mount", "ours"), m("mount", "fuse-overlayfs")
    if o and f:
        res.append(("empty mount + unmount: <= fuse-overlayfs", "met" if o <= f else "MISSED",
                    f"ours {o:.1f} ms, fuse-overlayfs {f:.1f} ms ({o / f:.2f})"))
    else:
        res.append(("empty mount + unmount: <= fuse-overlayfs", "not measured", ""))
    return res


def header(kinds, skipped, lower, args, sizes):
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    distro = "?"
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    fs = out(["findmnt", "-no", "FSTYPE,SOURCE", "-T", str(lower.dir)])
    lines = [
        f"# unionfs side-by-side benchmark{' (--quick: smaller sizes, 1 run)' if args.quick else ''}",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {mem / 1024:.1f} GiB RAM; {distro}",
        f"- kernel: {platform.release()}",
        "- FUSE over io_uring (enable_uring): " + (open("/sys/module/fuse/parameters/enable_uring")
            .read().strip() if os.path.exists("/sys/module/fuse/parameters/enable_uring")
            else "not in this kernel"),
        f"- branches on: {fs} ({lower.dir.parent})",
        f"- runs: median of {args.runs} per cell; every run on a fresh mount with a fresh upper "
        f"branch; kinds interleaved within each repetition (order rotated per repetition)",
        "- cache: 'warm' = the lower trees are in the page cache before the run (the union's "
        "own caches are empty: fresh mount); 'cold' = `echo 3 > /proc/sys/vm/drop_caches` "
        "after mounting, before the run; 'n/a' = the row writes new data",
        "- tools: " + "; ".join(f"{k.name}: {k.version()}" for k in kinds if k.union)
        + f"; {out(['fusermount3', '--version'])}; {out(['git', '--version'])}; "
        f"{out(['cargo', '--version'])}; {out(['tar', '--version'])}",
    ]
    for k, why in skipped:
        lines.append(f"- skipped kind {k}: {why}")
    lines.append("- lower trees: " + "; ".join(f"{n}: {v}" for n, v in lower.info.items()))
    dev = []
    if sizes.include_max_files < 10000:
        dev.append(f"find/du/grep over ≤{sizes.include_max_files} entries")
    if sizes.big != 1024 * MiB:
        dev.append(f"the big file is {sizes.big // MiB} MiB, not 1 GiB")
    if sizes.touch != 2000:
        dev.append(f"touch of {sizes.touch} files")
    if sizes.small != 5000:
        dev.append(f"{sizes.small} small files")
    if sizes.many_dirs * sizes.many_per_dir != 200000:
        dev.append(f"memory: find over {sizes.many_dirs * sizes.many_per_dir} files, not 200k")
    lines.append("- sizes smaller than the issue's: " + ("; ".join(dev) if dev else "none"))
    lines.append("- the machine may be shared: absolute times are noisy; compare the ratios "
                 "(measured side by side in this run)")
    return "\n".join(lines)


def plot(bench, workloads, kinds, path):
    rows = [w for w in workloads if bench.median_ms(w.name, "kernel")]
    others = [k for k in kinds if k.name != "kernel"]
    if not rows or not others:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return plot_svg(bench, rows, others, path.with_suffix(".svg"))
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(rows) + 3), 5.5))
    n = len(others)
    width = 0.8 / n
    for i, k in enumerate(others):
        xs, ys = [], []
        for j, w in enumerate(rows):
            o = bench.median_ms(w.name, k.name)
            if o:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(o / bench.median_ms(w.name, "kernel"))
        ax.bar(xs, ys, width, label=k.name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("time / kernel overlayfs time (log scale; lower is faster)")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([w.name for w in rows], rotation=35, ha="right")
    ax.set_title(f"unionfs benchmark: ratio to kernel overlayfs ({platform.release()}, "
                 f"{datetime.date.today()})")
    ax.legend(fontsize="small")
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_svg(bench, rows, others, path):
    """A plain SVG bar chart when matplotlib is missing."""
    import math
    W, H, L, B = 100 + 70 * len(rows), 420, 60, 340
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    ymin, ymax = -2.0, 2.0  # log10 ratio 0.01 .. 100
    y = lambda r: B - (min(max(math.log10(r), ymin), ymax) - ymin) / (ymax - ymin) * (B - 20)
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-size="11">']
    for e in range(-2, 3):
        s.append(f'<line x1="{L}" x2="{W - 10}" y1="{y(10 ** e)}" y2="{y(10 ** e)}" '
                 f'stroke="{"black" if e == 0 else "#ddd"}"/><text x="5" y="{y(10 ** e) + 4}">'
                 f"{10 ** e:g}x</text>")
    bw = 60 / len(others)
    for j, w in enumerate(rows):
        x0 = L + 70 * j + 5
        k0 = bench.median_ms(w.name, "kernel")
        for i, k in enumerate(others):
            o = bench.median_ms(w.name, k.name)
            if o:
                yy = y(o / k0)
                s.append(f'<rect x="{x0 + i * bw}" y="{min(yy, y(1))}" width="{bw - 1}" '
                         f'height="{abs(y(1) - yy)}" fill="{colors[i % len(colors)]}"/>')
        s.append(f'<text x="{x0}" y="{B + 15}" transform="rotate(30 {x0} {B + 15})">{w.name}</text>')
    for i, k in enumerate(others):
        s.append(f'<rect x="{L + 110 * i}" y="{H - 15}" width="10" height="10" '
                 f'fill="{colors[i % len(colors)]}"/><text x="{L + 110 * i + 14}" y="{H - 6}">'
                 f"{k.name}</text>")
    s.append("</svg>")
    path.write_text("\n".join(s))
    return path


def write_outputs(bench, workloads, kinds, outdir, text, mem):
    outdir.mkdir(parents=True, exist_ok=True)
    with open(outdir / "results.csv", "w", newline="") as f:
        c = csv.writer(f)
        c.writerow(["workload", "label", "cache", "kind", "median_ms", "ratio_to_kernel", "runs",
                    "min_ms", "max_ms", "errors"])
        for wl in workloads:
            kern = bench.median_ms(wl.name, "kernel")
            for k in kinds:
                v = bench.results.get((wl.name, k.name), [])
                med = bench.median_ms(wl.name, k.name)
                errs = bench.errors.get((wl.name, k.name), [])
                if not v and not errs:
                    continue
                c.writerow([wl.name, wl.label, wl.cache, k.name,
                            f"{med:.3f}" if med else "",
                            f"{med / kern:.4f}" if med and kern else "", len(v),
                            f"{min(v) * 1e3:.3f}" if v else "", f"{max(v) * 1e3:.3f}" if v else "",
                            " || ".join(sorted(set(errs)))])
        if mem:
            for key, val in mem.items():
                c.writerow([f"memory:{key}", "", "", "ours", val, "", "", "", "", ""])
    with open(outdir / "runs.csv", "w", newline="") as f:
        c = csv.writer(f)
        c.writerow(["workload", "kind", "run", "ms", "status"])
        for r in bench.runs:
            c.writerow([r[0], r[1], r[2], f"{r[3]:.3f}" if r[3] is not None else "", r[4]])
    (outdir / "summary.md").write_text(text + "\n")
    return plot(bench, workloads, kinds, outdir / "ratios.png")


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


KIND_NAMES = ["native", "kernel", "fuse-overlayfs", "unionfs-fuse", "ours", "ours-uring-off",
              "ours-unpinned", "ours-no-readahead", "ours-metacopy", "ours-pt-on"]
ARGS = None


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=None, help="runs per cell (default 3; 1 with --quick)")
    ap.add_argument("--only", default="", help="comma-separated workloads (see --list); "
                    "'memory' is the RSS measurement")
    ap.add_argument("--skip", default="", help="comma-separated workloads to leave out")
    ap.add_argument("--kinds", default="", help="comma-separated kinds (default: all): "
                    + ",".join(KIND_NAMES))
    ap.add_argument("--quick", action="store_true", help="smaller sizes, 1 run (smoke test)")
    ap.add_argument("--unionfs-bin", default=None,
                    help="use this unionfs binary instead of building target/<host>/release/unionfs")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build")
    ap.add_argument("--ours-opts", default="", help="extra -o options for ours")
    ap.add_argument("--profile", default="", help="comma-separated workloads to run once more "
                    "on ours under `strace -c -f -p DAEMON` (bench-results/profile-*.txt)")
    ap.add_argument("--out", default=str(REPO / "bench-results"), help="output directory")
    ap.add_argument("--tmp", default="/var/tmp", help="where the temp dir goes (branches, mounts)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds before a run is a TIMEOUT")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (debugging)")
    ap.add_argument("--list", action="store_true", help="list workloads and kinds, then exit")
    a = ap.parse_args()
    if a.runs is None:
        a.runs = 1 if a.quick else 3
    return a


def main():
    global ARGS
    ARGS = args = parse()
    if args.list:
        for w in WORKLOADS:
            print(f"{w.name:10} {w.cache:5} {w.label}")
        print(f"{'memory':10} {'':5} RSS of our daemon per cached inode after find over 200k files")
        print("kinds: " + ", ".join(KIND_NAMES))
        return 0
    if os.geteuid() != 0:
        log("bench: run me as root (mount -t overlay, drop_caches, FUSE mounts)")
        return 2
    names = [n for n in args.only.split(",") if n] or [w.name for w in WORKLOADS] + ["memory"]
    skip = {n for n in args.skip.split(",") if n}
    bad = [n for n in names + list(skip) if n not in WL and n != "memory"]
    if bad:
        log(f"bench: unknown workload(s) {', '.join(bad)} (see --list)")
        return 2
    names = [n for n in names if n not in skip]
    kind_names = [k for k in args.kinds.split(",") if k] or KIND_NAMES
    bad = [k for k in kind_names if k not in KIND_NAMES]
    if bad:
        log(f"bench: unknown kind(s) {', '.join(bad)}: {', '.join(KIND_NAMES)}")
        return 2

    t_start = time.monotonic()
    binary = args.unionfs_bin
    if binary is None:
        binary = release_dir() / "unionfs"
        if any(k.startswith("ours") for k in kind_names) or "memory" in names:
            if not args.no_build:
                log("bench: cargo build --release -p unionfs")
                r = subprocess.run(["cargo", "build", "--release", "-p", "unionfs"], cwd=REPO)
                if r.returncode != 0:
                    log("bench: the build failed; fix it, or pass --unionfs-bin PATH "
                        "(or --no-build to use the last target/<host>/release/unionfs)")
                    return 1
    binary = Path(binary).resolve()

    sizes = Sizes(args.quick)
    labels(sizes)
    all_kinds = {
        "native": Native(), "kernel": Kernel(), "fuse-overlayfs": FuseOverlayfs(),
        "unionfs-fuse": UnionfsFuse(), "ours": Ours(binary, args.ours_opts),
        # The classic transport (/dev/fuse reads and writes); "ours" uses FUSE over io_uring
        # where the kernel offers it (uring=auto, enable_uring=Y).
        "ours-uring-off": Ours(binary, ",".join(x for x in (args.ours_opts, "uring=off") if x),
                               name="ours-uring-off"),
        # The ring with workers free to run on any CPU (uring_pin=off).
        "ours-unpinned": Ours(binary, ",".join(x for x in (args.ours_opts, "uring_pin=off") if x),
                              name="ours-unpinned"),
        # No directory readahead during tree walks (dir_readahead=off).
        "ours-no-readahead": Ours(binary, ",".join(x for x in (args.ours_opts,
                                                               "dir_readahead=off") if x),
                                  name="ours-no-readahead"),
        "ours-metacopy": Ours(binary, ",".join(x for x in (args.ours_opts, "metacopy=on") if x),
                              name="ours-metacopy", only={"touch", "append", "trunc"}),
        # Passthrough of lower files too (opt-in: see docs/cli.md).
        "ours-pt-on": Ours(binary, ",".join(x for x in (args.ours_opts, "passthrough=on") if x),
                           name="ours-pt-on", only={"read", "parallel", "grep"}),
    }
    tmp = Path(tempfile.mkdtemp(prefix="unionfs-bench.", dir=args.tmp))
    if not args.keep:
        REG.tmpdirs.append(tmp)
    (tmp / "logs").mkdir()

    def on_signal(sig, frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    try:
        kinds, skipped = [], []
        for kn in kind_names:
            k = all_kinds[kn]
            try:
                k.probe()
                kinds.append(k)
            except Skip as e:
                skipped.append((kn, str(e)))
                log(f"bench: skipping {kn}: {e}")
        workloads = []
        for n in names:
            if n == "memory":
                continue
            w = WL[n]
            if w.needs:
                try:
                    w.needs()
                except Skip as e:
                    log(f"bench: skipping workload {n}: {e}")
                    continue
            workloads.append(w)
        lower = Lower(tmp, sizes)
        log(f"bench: preparing the lower trees in {lower.dir}")
        lower.dir.mkdir()
        trees = {t for w in workloads for t in w.trees}
        if "memory" in names:
            trees.add("many")
        lower.ensure(sorted(trees))
        snapshot = tree_digest(lower.dir)

        bench = Bench(kinds, lower, tmp)
        log(f"bench: {len(workloads)} workloads x {len(kinds)} kinds x {args.runs} runs")
        bench.go(workloads, args.runs)

        mem = None
        ours = all_kinds["ours"]
        if "memory" in names:
            if ours in kinds or "ours" not in kind_names:
                try:
                    ours.probe()
                    log("bench: memory: find over lower/many on ours (-f), then drop_caches 2")
                    mem = measure_memory(ours, lower, tmp)
                except (Skip, Failed, OSError, RuntimeError) as e:
                    mem = {"error": str(e)}
                    log(f"bench: memory: {e}")
        profiles = []
        for n in [x for x in args.profile.split(",") if x]:
            if n in WL and n != "mount" and ours in kinds:
                try:
                    Path(args.out).mkdir(parents=True, exist_ok=True)
                    profiles.append(profile(bench, ours, WL[n], Path(args.out)))
                except (Failed, OSError) as e:
                    profiles.append(f"{n}: {e}")

        if tree_digest(lower.dir) != snapshot:
            bench.notes.append("the LOWER branch changed during the run (a write leaked "
                               "through a union)")

        text = [header(kinds, skipped, lower, args, sizes), "",
                "Milliseconds (median); [ratio to kernel overlayfs]; ! = some runs failed.", "",
                table(bench, workloads, kinds), ""]
        if mem:
            text.append("## Memory (ours)\n")
            if "error" in mem:
                text.append(f"- failed: {mem['error']}")
            else:
                n = mem["entries"]
                text.append(
                    f"- `find -printf .%s` over {n} entries took {mem['find_s']:.1f} s; VmRSS "
                    f"{mem['rss_start_kib']} KiB at mount -> {mem['rss_after_find_kib']} KiB "
                    f"after find: {mem['bytes_per_inode']:.0f} bytes per cached inode "
                    f"(inodes held: {mem['nodes_after_find']})")
                shrink = (f"shrank by {mem['shrunk_kib']} KiB" if mem["shrunk_kib"] > 0 else
                          f"did not shrink (grew by {-mem['shrunk_kib']} KiB)")
                text.append(
                    f"- after `echo 2 > /proc/sys/vm/drop_caches` (+3 s): VmRSS "
                    f"{mem['rss_after_forget_kib']} KiB (inodes held: "
                    f"{mem['nodes_after_forget']}): {shrink}")
                if mem.get("problem"):
                    text.append(f"- unmount: {mem['problem']}")
            text.append("")
        if "ours" in [k.name for k in kinds]:
            text.append("## Targets of issue 6 (ours)\n")
            text.append("| target | status | measured |")
            text.append("|---|---|---|")
            for what, st, detail in targets(bench, mem):
                text.append(f"| {what} | {st} | {detail} |")
            text.append("")
            text.append("## Targets of issue 13 (metadata; ours = FUSE over io_uring where "
                        "the kernel offers it, ours-uring-off = /dev/fuse)\n")
            text.append("| target | status | measured |")
            text.append("|---|---|---|")
            for what, st, detail in targets_metadata(bench):
                text.append(f"| {what} | {st} | {detail} |")
            text.append("")
        errs = [(k, e) for k, es in bench.errors.items() for e in sorted(set(es))
                if not e.startswith("skipped")]
        if errs or bench.notes:
            text.append("## Failures and problems\n")
            for (w, k), e in errs:
                text.append(f"- {k} / {w}: {e}")
            for n in bench.notes:
                text.append(f"- {n}")
            text.append("")
        if profiles:
            text.append("## Profiles\n")
            text += [f"- {p}" for p in profiles]
            text.append("")
        text.append(f"(harness wall time {(time.monotonic() - t_start) / 60:.1f} min)")
        text = "\n".join(text)
        png = write_outputs(bench, workloads, kinds, Path(args.out), text, mem)
        print(text)
        log(f"bench: wrote {Path(args.out) / 'results.csv'}, runs.csv, summary.md"
            + (f", {png.name}" if png else ""))
        return 0
    except KeyboardInterrupt:
        log("bench: interrupted; cleaning up")
        return 130
    finally:
        REG.cleanup()
        if args.keep:
            log(f"bench: kept {tmp}")


def tree_digest(path):
    """Names, sizes, modes and mtimes of a tree: to see that no union wrote to its lower."""
    import hashlib
    h = hashlib.sha256()
    for r, ds, fs in os.walk(path):
        ds.sort()
        for n in sorted(fs + ds):
            st = os.lstat(os.path.join(r, n))
            h.update(f"{r}/{n} {st.st_size} {st.st_mode} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
