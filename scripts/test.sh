#!/usr/bin/env bash
# Runs every test of the workspace on a fresh Debian 12 machine, as root:
#   1. installs what the tests use, if missing (fuse3, attr, git, tar, busybox-static, procps, python3,
#      util-linux, podman, runc, uidmap, slirp4netns, unionfs-fuse), running `apt-get update` only when something is missing;
#   2. makes /dev/fuse usable by everyone (mode 0666: the rootless tests mount through
#      fusermount3 as an unprivileged user, and fusermount3 opens /dev/fuse as that user);
#   3. creates the unprivileged test user `unionfs-test` if absent, with /etc/subuid and
#      /etc/subgid ranges (rootless podman);
#   4. turns on FUSE over io_uring where the kernel has it (enable_uring=Y);
#   5. builds every binary (debug), then runs `cargo test --workspace`, passing extra
#      arguments through: `scripts/test.sh -- --nocapture`, `scripts/test.sh -- cli::`;
#      where the kernel has io_uring, the integration suite runs a second time with
#      UNIONFS_URING=off, so both transports are tested.
#
# The rootless tests copy the unionfs binary into their own world-readable temp dir, so the
# checkout may live anywhere (e.g. under /root, mode 0700). With CI=true (set by .ci/run) a
# test whose requirements are missing fails instead of skipping. Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'scripts/test.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run me as root (I install packages, chmod /dev/fuse and create the user unionfs-test)"
command -v cargo >/dev/null || die "cargo is not on PATH"

start=$SECONDS

step "system packages"
# podman runc uidmap slirp4netns: the podman mount_program tests (tests/compat.rs);
# unionfs-fuse: the unionfs-fuse interop tests.
packages=(fuse3 attr git tar busybox-static procps util-linux podman runc uidmap slirp4netns unionfs-fuse python3)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_log="$(mktemp)"
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        die "apt-get failed"
    fi
    rm -f "$apt_log"
else
    echo "all present: ${packages[*]}"
fi
for tool in fusermount3 mount.fuse3 setfattr getfattr git tar busybox ps unshare runuser setpriv \
    podman runc newuidmap newgidmap unionfs-fuse; do
    command -v "$tool" >/dev/null || [ -x "/sbin/$tool" ] || [ -x "/bin/$tool" ] \
        || die "$tool is still missing after installing packages"
done

step "/dev/fuse"
if [ ! -c /dev/fuse ]; then
    modprobe fuse 2>/dev/null || true
    [ -c /dev/fuse ] || mknod -m 0666 /dev/fuse c 10 229
fi
chmod 0666 /dev/fuse
ls -l /dev/fuse

step "FUSE over io_uring"
# Linux 6.14+ built with CONFIG_FUSE_IO_URING has the parameter; root turns it on so the
# suite runs over the ring (the daemon's default, uring=auto, then uses it).
uring=/sys/module/fuse/parameters/enable_uring
if [ -e "$uring" ]; then
    echo Y > "$uring"
    echo "enable_uring: $(cat "$uring")"
else
    echo "this kernel has no FUSE over io_uring: the suite runs over /dev/fuse only"
fi

step "test user"
if ! id -u unionfs-test >/dev/null 2>&1; then
    useradd -m unionfs-test
fi
# Sub-id ranges for rootless podman (tests/compat.rs), added once.
for f in /etc/subuid /etc/subgid; do
    touch "$f"
    grep -q '^unionfs-test:' "$f" || echo 'unionfs-test:100000:65536' >> "$f"
done
id unionfs-test

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

step "build (cargo build --workspace --bins)"
cargo build --workspace --bins

step "test (cargo test --workspace --no-fail-fast $*)"
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?

if [ -e "$uring" ]; then
    # The same integration suite again over the classic transport (the first run had the
    # ring: auto with enable_uring on).
    step "test over /dev/fuse (UNIONFS_URING=off cargo test --test tests $*)"
    UNIONFS_URING=off cargo test --no-fail-fast --test tests "$@" || status=$?
fi
[ "$status" -eq 0 ] || die "tests failed"

step "all tests passed in $((SECONDS - start)) s"
