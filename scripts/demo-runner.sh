#!/usr/bin/env bash
# unionrun end to end: a busybox rootfs (Debian's busybox-static) is the read-only lower
# branch of our FUSE union, an empty directory the upper branch, and the container runs a
# shell script that shows it is PID 1's child in its own pid namespace, its hostname, its
# own empty network, writes a file (it lands in the upper branch, the lower stays as it
# was), hits a memory limit (the hog is OOM-killed, the container goes on), and exits with
# a chosen code, which unionrun returns. Everything lives in a temp dir removed on exit.
#
#   scripts/demo-runner.sh      (as root: it may apt-get install busybox-static and fuse3)
#
# UNIONRUN_BIN / UNIONFS_BIN: use these binaries instead of building the release ones.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -t 1 ]; then bold=$'\e[1m'; off=$'\e[0m'; else bold=; off=; fi
say() { printf '\n%s# %s%s\n' "$bold" "$*" "$off"; }
die() { printf 'demo-runner.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run me as root (the demo uses cgroups and may install packages)"

missing=()
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v fusermount3 >/dev/null || missing+=(fuse3)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ -z "${UNIONRUN_BIN:-}" ]; then
    say "building the release binaries (cargo build --release -p runner -p unionfs)"
    cargo build --release -q -p runner -p unionfs
    dir="$(cd "${CARGO_TARGET_DIR:-target}/$(rustc --print host-tuple)/release" && pwd)"
    UNIONRUN_BIN="$dir/unionrun" UNIONFS_BIN="$dir/unionfs"
fi
export UNIONFS_BIN="${UNIONFS_BIN:-$(dirname "$UNIONRUN_BIN")/unionfs}"

demo="$(mktemp -d "${TMPDIR:-/tmp}/unionrun-demo.XXXXXX")"
lower="$demo/rootfs" upper="$demo/upper"
trap 'rm -rf "$demo"' EXIT
trap 'exit 130' INT TERM

say "a busybox rootfs as the lower branch: $lower"
mkdir -p "$lower"/{bin,proc,dev,sys,tmp,etc,root} "$upper"
cp /bin/busybox "$lower/bin/busybox"
for applet in $("$lower/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$lower/bin/$applet"
done
chmod 1777 "$lower/tmp"
echo "root:x:0:0:root:/root:/bin/sh" >"$lower/etc/passwd"
cat >"$lower/demo.sh" <<'EOF'
#!/bin/sh
echo "I am pid $$; pid 1 is $(cat /proc/1/comm), and these are all the processes I can see:"
ps -o pid,comm
echo "hostname: $(hostname)"
echo "network interfaces (a new network namespace):"; ip link
echo "hello from inside" > /hello.txt && echo "wrote /hello.txt"
echo "allocating 256 MiB under a 64 MiB limit..."
( x=$(head -c 256m /dev/zero | tr '\0' a); echo "never printed ${#x}" )
echo "the memory hog exited with $? (137 = SIGKILL by the OOM killer); I am still here"
exit 42
EOF
chmod 0755 "$lower/demo.sh"
chmod -R a-w "$lower"

say "unionrun run --lower ROOTFS --upper UPPER --hostname demo --memory 64m -- /demo.sh"
set +e
"$UNIONRUN_BIN" run --lower "$lower" --upper "$upper" --hostname demo --memory 64m -- /demo.sh
code=$?
set -e

say "unionrun returned $code (the payload's exit code)"
[ "$code" -eq 42 ] || die "expected exit code 42, got $code"
say "the write landed in the upper branch, the lower branch is unchanged"
ls -l "$upper"
[ -f "$upper/hello.txt" ] || die "hello.txt is not in the upper branch"
[ ! -e "$lower/hello.txt" ] || die "hello.txt leaked into the lower branch"
echo "upper/hello.txt: $(cat "$upper/hello.txt")"
echo "lower/hello.txt: absent"
say "demo done"
