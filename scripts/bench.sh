#!/usr/bin/env bash
# The side-by-side benchmark of issue 6, as root, on Debian 12 (or similar):
#   1. installs what it compares against and uses, if missing (fuse3, fuse-overlayfs,
#      unionfs-fuse, git, tar, strace, python3, python3-matplotlib for the plot), running
#      `apt-get update` only when something is missing; a package that cannot be installed
#      is a warning (its kind is then reported as skipped), not a failure;
#   2. runs benches/compare.py with Debian's python3, passing every argument through: it
#      builds `cargo build --release -p unionfs`, runs the workloads on native, kernel
#      overlayfs, fuse-overlayfs, unionfs-fuse and ours, and writes bench-results/
#      (results.csv, runs.csv, summary.md, ratios.png).
#
#   scripts/bench.sh                 # everything, medians of 3 runs (~15-20 min, 2 cores)
#   scripts/bench.sh --quick         # smaller sizes, 1 run (~2 min)
#   scripts/bench.sh --only find,du --kinds kernel,ours --runs 5
#   scripts/bench.sh --help          # every option; --list: workloads and kinds
#
# See benches/README.md for what each row measures.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'scripts/bench.sh: %s\n' "$*" >&2; exit 1; }

for a in "$@"; do
    case "$a" in
    -h | --help | --list) exec /usr/bin/env python3 benches/compare.py "$@" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run me as root (I install packages, mount overlayfs and FUSE, drop caches)"

packages=(fuse3 fuse-overlayfs unionfs-fuse git tar strace procps util-linux python3 python3-matplotlib)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "scripts/bench.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt_log="$(mktemp)"
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$apt_log" 2>&1; then
        # One by one, so that one missing package does not stop the others.
        for p in "${missing[@]}"; do
            apt-get install -y -qq --no-install-recommends "$p" >>"$apt_log" 2>&1 \
                || echo "scripts/bench.sh: warning: could not install $p (see $apt_log)" >&2
        done
    else
        rm -f "$apt_log"
    fi
fi

# FUSE over io_uring where the kernel has it ("ours" then uses it; "ours-uring-off" not).
uring=/sys/module/fuse/parameters/enable_uring
[ -e "$uring" ] && echo Y > "$uring"

# Debian's python3 (it sees python3-matplotlib); any python3 >= 3.9 works without the plot
# module (an SVG is written instead).
py=/usr/bin/python3
[ -x "$py" ] || py="$(command -v python3)" || die "python3 is missing"
exec "$py" benches/compare.py "$@"
