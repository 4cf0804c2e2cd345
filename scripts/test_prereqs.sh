#!/bin/sh
# Best effort, for `make test`: install what the root-only suites need, when running as root
# with apt-get and it is missing. Never fails the build: without it those tests skip and the
# run ends with "reflink suite: skipped (<why>)" or "multi-host suite: skipped (<why>)".
# - the reflink tests (tests/test_reflink.py) format a loop image as XFS: mkfs.xfs (xfsprogs);
# - the multi-host tests (tests/test_hosts.py) run a private sshd and mount it with sshfs
#   (openssh-server, sshfs), and skew a host's clock with libfaketime (faketime).
PATH="$PATH:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    exit 0
fi

packages=""
command -v mkfs.xfs >/dev/null 2>&1 || packages="$packages xfsprogs"
command -v sshfs >/dev/null 2>&1 || packages="$packages sshfs"
if ! command -v sshd >/dev/null 2>&1; then
    # Installing openssh-server starts the system's sshd (port 22) where systemd runs and no
    # policy-rc.d forbids it: leave that machine as it is (the multi-host tests then skip).
    if [ -d /run/systemd/system ] && [ ! -x /usr/sbin/policy-rc.d ]; then
        echo "test_prereqs: not installing openssh-server: it would start this machine's sshd"
    else
        packages="$packages openssh-server"
    fi
fi
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || packages="$packages faketime"
[ -n "$packages" ] || exit 0

# Bounded: a missing network or a busy dpkg lock costs at most a few minutes, then the tests skip.
run() {
    if command -v timeout >/dev/null 2>&1; then timeout 300 "$@"; else "$@"; fi
}
install() {
    # shellcheck disable=SC2086  # one word per package
    run apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=60 $1 >/dev/null 2>&1
}

echo "test_prereqs: installing$packages for the reflink and multi-host tests"
if install "$packages"; then
    :
elif run apt-get update -q >/dev/null 2>&1 && ! install "$packages"; then
    for package in $packages; do  # one that cannot be had must not keep the others out
        install "$package" || echo "test_prereqs: could not install $package; tests that need it will skip"
    done
fi
for wanted in mkfs.xfs sshfs sshd; do
    found=$(command -v "$wanted" 2>/dev/null) && echo "test_prereqs: $wanted is $found"
done
exit 0
