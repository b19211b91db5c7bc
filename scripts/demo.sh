#!/usr/bin/env bash
# A two-minute tour of unionfs: a read-only lower branch under an empty read-write upper
# branch, merged at a mount point; copy-up on write, a whiteout on delete. Everything lives
# in a temp dir that is unmounted and removed on exit, whatever happens.
#
#   scripts/demo.sh            (as root, or as a user who can open /dev/fuse)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -t 1 ]; then bold=$'\e[1m'; off=$'\e[0m'; else bold=; off=; fi
say() { printf '\n%s# %s%s\n' "$bold" "$*" "$off"; }
run() { printf '$ %s\n' "$*"; "$@"; }

if ! command -v fusermount3 >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        say "installing fuse3 (fusermount3, mount.fuse3)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends fuse3
    else
        echo "demo.sh: fuse3 is missing: sudo apt-get install fuse3" >&2
        exit 1
    fi
fi

say "building the release binary (cargo build --release -p unionfs)"
cargo build --release -q -p unionfs
bin="${CARGO_TARGET_DIR:-target}/$(rustc --print host-tuple)/release/unionfs"
bin="$(cd "$(dirname "$bin")" && pwd)/unionfs"

demo="$(mktemp -d "${TMPDIR:-/tmp}/unionfs-demo.XXXXXX")"
lower="$demo/lower" upper="$demo/upper" mnt="$demo/mnt"
cleanup() {
    if mountpoint -q "$mnt" 2>/dev/null; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
    chmod -R u+w "$demo" 2>/dev/null || true
    rm -rf "$demo"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$lower/docs" "$upper" "$mnt"
echo "hello from the lower branch" >"$lower/hello.txt"
echo "remember the milk" >"$lower/docs/todo.txt"
echo "an old log line" >"$lower/old.log"
chmod -R a-w "$lower"

say "a read-only lower branch with a few files, and an empty read-write upper branch"
run ls -lR "$lower" "$upper"

say "mount them: upper (rw) above lower (ro)"
run "$bin" --branch "$upper=rw" --branch "$lower=ro" "$mnt"

say "the merged view"
run ls -la "$mnt"

say "append to a lower file through the mount: it is copied up first"
printf '$ echo "a line added through the union" >> %s\n' "$mnt/hello.txt"
echo "a line added through the union" >>"$mnt/hello.txt"
run cat "$mnt/hello.txt"
say "the copy now lives in the upper branch"
run cat "$upper/hello.txt"
say "and the lower file is unchanged"
run cat "$lower/hello.txt"

say "delete a lower file through the mount"
run rm "$mnt/old.log"
run ls -la "$mnt"
say "the lower file is still there; the upper branch holds a whiteout that hides it"
run ls -la "$lower" "$upper"
if [ -c "$upper/old.log" ]; then
    echo "old.log in the upper branch is a character device 0/0: the overlay whiteout format"
    echo "(kernel overlayfs reads this upper directory the same way)"
elif [ -e "$upper/.wh.old.log" ]; then
    echo ".wh.old.log in the upper branch: the wh whiteout format (OCI layers, AUFS)"
fi

if [ -d "$upper/.unionfs-work" ]; then
    echo "(.unionfs-work is the daemon's private work dir: copy-ups are built there, then renamed into place)"
fi

say "unmount"
run fusermount3 -u "$mnt"
say "done: the upper branch keeps the changes, the lower branch is as it was"
run ls -la "$upper"

# Part two: the same union as a container's root filesystem (unionrun). It needs root
# (namespaces, cgroups); as another user the union demo above is the whole tour.
if [ "$(id -u)" -eq 0 ]; then
    say "part two: a container whose root filesystem is such a union (scripts/demo-runner.sh)"
    scripts/demo-runner.sh
else
    say "part two (a container on a union rootfs) needs root: sudo scripts/demo-runner.sh"
fi
