"""Mount + umount cycles, kinds interleaved; prints the median of each half per kind.

usage (root): N=40 python3 mount-cycles.py fo,BINARY,BINARY:uring=off
  fo = fuse-overlayfs; BINARY[:OPTS] = a unionfs binary, with extra -o options.
"""
import subprocess, time, os, statistics, sys, shutil
base = "/var/tmp/mtx"
os.makedirs(base + "/empty", exist_ok=True)
def cmd(kind, d):
    lo, up, wk, mnt = base + "/empty", d + "/upper", d + "/work", d + "/mnt"
    if kind == "fo":
        return ["fuse-overlayfs", "-o", f"lowerdir={lo},upperdir={up},workdir={wk}", mnt]
    binary, _, opt = kind.partition(":")
    o = f"lowerdir={lo},upperdir={up},workdir={wk}" + ("," + opt if opt else "")
    return [binary, "-o", o, mnt]
kinds = sys.argv[1].split(",")
res = {k: ([], []) for k in kinds}
for i in range(int(os.environ.get("N", "15"))):
    for k in kinds:
        d = f"{base}/{abs(hash(k))}{i}"
        for s in ("upper", "work", "mnt"):
            os.makedirs(f"{d}/{s}")
        t0 = time.perf_counter()
        subprocess.run(cmd(k, d), check=True)
        t1 = time.perf_counter()
        subprocess.run(["umount", d + "/mnt"], check=True)
        t2 = time.perf_counter()
        res[k][0].append((t1 - t0) * 1000); res[k][1].append((t2 - t1) * 1000)
        shutil.rmtree(d)
for k, (m, u) in res.items():
    print(f"{k:20s} mount {statistics.median(m):.2f} ms  umount {statistics.median(u):.2f} ms")
