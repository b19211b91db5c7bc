#!/usr/bin/env bash
# unionrun as an OCI runtime against runc, side by side in one hyperfine run each (issue
# 12), as root on Debian 12 (or similar):
#   1. `podman run --rm IMAGE true` with --runtime runc and with --runtime unionrun (a
#      busybox image imported from a tar, private storage, vfs, cgroupfs, no network);
#   2. `create + start + delete --force` of one busybox bundle (`true`), runc vs unionrun.
# Installs what it needs if missing (podman, runc, hyperfine, busybox-static), builds
# `cargo build --release -p runner -p unionfs`, and writes bench-results/oci/ (hyperfine's
# markdown and JSON per comparison). Read the ratios: this machine is noisy.
#
#   scripts/bench-oci.sh [--runs N]      # default 30 runs after 5 warmups
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'scripts/bench-oci.sh: %s\n' "$*" >&2; exit 1; }
runs=30
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs="${2:?--runs needs a number}"; shift 2 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "run me as root (podman and runc as root, cgroups)"

missing=()
for p in podman runc hyperfine busybox-static tar; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "scripts/bench-oci.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release -q -p runner -p unionfs
unionrun="$(pwd)/target/$(rustc --print host-tuple)/release/unionrun"
runc="$(command -v runc)"
out="$(pwd)/bench-results/oci"
mkdir -p "$out"

work="$(mktemp -d /tmp/unionrun-bench-oci.XXXXXX)"
cleanup() {
    podman "${world[@]}" rm -af >/dev/null 2>&1 || true
    podman "${world[@]}" rmi -af >/dev/null 2>&1 || true
    for r in "$work/runc-root" "$work/ur-root"; do
        for id in $(ls "$r" 2>/dev/null); do
            "$runc" --root "$r" delete --force "$id" >/dev/null 2>&1 || true
            "$unionrun" --root "$r" delete --force "$id" >/dev/null 2>&1 || true
        done
    done
    rm -rf "$work"
}
trap cleanup EXIT

# A busybox rootfs, as an image and as a bundle.
rootfs="$work/bundle/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/proc" "$rootfs/dev" "$rootfs/sys"
cp /bin/busybox "$rootfs/bin/busybox"
for a in sh true cat echo sleep; do ln -s busybox "$rootfs/bin/$a"; done
tar -C "$rootfs" -cf "$work/bb.tar" .
world=(--root "$work/storage" --runroot "$work/run" --tmpdir "$work/tmp" --storage-driver vfs
    --cgroup-manager cgroupfs --events-backend file)
podman "${world[@]}" import "$work/bb.tar" localhost/bench-bb:1 >/dev/null
ulimits="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
podman_run() { echo "podman ${world[*]} --runtime $1 run --rm --network none $ulimits localhost/bench-bb:1 true"; }

"$unionrun" spec --bundle "$work/bundle"
python3 - "$work/bundle/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["true"]
json.dump(c, open(p, "w"), indent=1)
EOF
lifecycle() { # runtime root
    echo "sh -c '$1 --root $2 create --bundle $work/bundle c && $1 --root $2 start c && $1 --root $2 delete --force c'"
}

hyperfine -N --warmup 5 --runs "$runs" \
    --export-markdown "$out/podman-run.md" --export-json "$out/podman-run.json" \
    -n "podman run --rm (runc)" "$(podman_run "$runc")" \
    -n "podman run --rm (unionrun)" "$(podman_run "$unionrun")"
hyperfine -N --warmup 5 --runs "$runs" \
    --export-markdown "$out/lifecycle.md" --export-json "$out/lifecycle.json" \
    -n "runc create+start+delete" "$(lifecycle "$runc" "$work/runc-root")" \
    -n "unionrun create+start+delete" "$(lifecycle "$unionrun" "$work/ur-root")"
echo "scripts/bench-oci.sh: results in $out" >&2
