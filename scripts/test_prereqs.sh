#!/bin/sh
# Best effort, for `make test`: the reflink tests (tests/test_reflink.py) format a loop image
# as XFS, which needs mkfs.xfs (Debian/Ubuntu: xfsprogs). Install it when running as root
# with apt-get and it is missing. Never fails the build: without it those tests skip and the
# run ends with "reflink suite: skipped (<why>)".
PATH="$PATH:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ] || command -v mkfs.xfs >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    exit 0
fi

# Bounded: a missing network or a busy dpkg lock costs at most a few minutes, then the tests skip.
run() {
    if command -v timeout >/dev/null 2>&1; then timeout 300 "$@"; else "$@"; fi
}
install() {
    run apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=60 xfsprogs >/dev/null 2>&1
}

echo "test_prereqs: installing xfsprogs (mkfs.xfs) for the reflink tests"
install || { run apt-get update -q >/dev/null 2>&1 && install; }
if command -v mkfs.xfs >/dev/null 2>&1; then
    echo "test_prereqs: installed $(command -v mkfs.xfs)"
else
    echo "test_prereqs: could not install xfsprogs; the reflink tests will skip"
fi
exit 0
