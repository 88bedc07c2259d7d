#!/usr/bin/env bash
# Runs every check and test of the workspace, installing what it needs first.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step is printed with the seconds since the start, so a slow CI run
# shows which step grew.
start=$SECONDS
say() { printf '\n==> [%ss] %s\n' "$((SECONDS - start))" "$*"; }

# Rust toolchain: the machine's rustup toolchain; components if missing.
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# Debian packages the tests use: iproute2 (test hosts in network namespaces),
# nftables (packet loss inside a test host), fping (the prober benchmark's
# reference), golang-go and golang-github-vmware-govmomi-dev (govmomi's
# vCenter simulator, built by the dr-vsphere tests), rsync (the replication
# benchmark's reference), fence-agents, openipmi and ipmitool (a real fence
# agent, fence_ipmilan, against OpenIPMI's BMC simulator), etcd-server and
# etcd-client (the cluster's three-member etcd on loopback, and etcdctl to
# set it up), openssl (certificates for etcd over TLS), chromium (the
# console's browser test, headless), openssh-server (an ssh host's backup
# export reached through ssh, run by the test in a lab host's namespace on
# a port of its own). Installed when missing
# and we are root; the tests that need them fail in CI without them and skip
# with a reason elsewhere.
need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ] || need+=(golang-github-vmware-govmomi-dev)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v fping >/dev/null 2>&1 || need+=(fping)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
[ -x /usr/sbin/fence_ipmilan ] || need+=(fence-agents)
command -v ipmi_sim >/dev/null 2>&1 || need+=(openipmi)
command -v ipmitool >/dev/null 2>&1 || need+=(ipmitool)
[ -x /usr/bin/etcd ] || need+=(etcd-server)
[ -x /usr/bin/etcdctl ] || need+=(etcd-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)

# The KVM lab (scripts/kvm-lab.sh: libvirt daemons in namespaces, real
# guests): libvirt and QEMU. On Debian 12 they come from bookworm-backports,
# as the machine's qemu-utils does (QEMU 10, libvirt 11): one QEMU for both.
lab=()
command -v libvirtd >/dev/null 2>&1 || lab+=(libvirt-daemon libvirt-daemon-driver-qemu)
command -v virsh >/dev/null 2>&1 || lab+=(libvirt-clients)
command -v qemu-system-x86_64 >/dev/null 2>&1 || lab+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || lab+=(qemu-utils)

updated=
apt_update() {
    [ -n "$updated" ] && return
    apt-get update -q >/dev/null
    updated=1
}
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if [ ${#need[@]} -gt 0 ]; then
        say "installing ${need[*]}"
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
    fi
    if [ ${#lab[@]} -gt 0 ]; then
        target=()
        if grep -q '^VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null; then
            if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
                echo 'deb http://deb.debian.org/debian bookworm-backports main' \
                    >/etc/apt/sources.list.d/vmdr-backports.list
                updated=
            fi
            target=(-t bookworm-backports)
        fi
        say "installing the KVM lab's ${lab[*]}"
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${target[@]}" "${lab[@]}" >/dev/null
    fi
    # The lab's guest kernel is fetched with apt-get download: package lists
    # must be there.
    if [ ! -s /var/cache/vmdr-lab/vmlinuz ] && ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
        apt_update
    fi
elif [ $((${#need[@]} + ${#lab[@]})) -gt 0 ]; then
    echo "note: missing ${need[*]} ${lab[*]} (not root or no apt-get): namespace and lab tests will skip" >&2
fi

say "format"
cargo fmt --all -- --check

say "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "tests"
cargo test --workspace --locked

# Every release binary and benchmark in one build: built one package (or
# the benchmarks, with their dev-dependencies' features) at a time, each
# build would resolve the dependencies' features apart and compile them
# again.
say "release build of every binary and benchmark"
cargo build --locked --release --workspace --bins --benches
bin=target/release

# In the release profile: the bench profile is another profile to cargo,
# and would build every dependency once more.
say "benchmarks run once"
cargo bench --locked --profile release --workspace --bench decision_engine -- --test

if [ "$(id -u)" = 0 ] && command -v fping >/dev/null 2>&1; then
    say "prober sweep against fping (1,000 targets in a test namespace)"
    "$bin/probe-sweep" 1000
fi

if command -v go >/dev/null 2>&1; then
    say "vSphere inventory round trips against the vCenter simulator"
    "$bin/vsphere-inventory"
fi

if command -v rsync >/dev/null 2>&1; then
    say "replication against rsync (a 64 MiB image, 2 s of load; docs/BENCHMARKS.md has 2 GiB)"
    "$bin/repl-bench" 64 2
fi

say "replication shipping throughput (128 MiB to two receiver processes; docs/BENCHMARKS.md has 2 GiB)"
"$bin/ship-bench" 128 1024 2

say "main job's configuration: drd check-config examples/sim.toml"
"$bin/drd" check-config examples/sim.toml

say "the paper's scenarios on virtual time"
"$bin/drctl" simulate examples/seed-scenarios.toml --human | tail -n 1

say "10,000 random seeds (full isolation, agent crashes, storage loss among the faults), two sweeps at once"
"$bin/drctl" simulate --random --seeds 5000 --first-seed 1 | tail -n 1 &
first=$!
"$bin/drctl" simulate --random --seeds 5000 --first-seed 5001 | tail -n 1 &
second=$!
wait "$first"
wait "$second"

say "done"
