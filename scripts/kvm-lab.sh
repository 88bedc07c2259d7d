#!/usr/bin/env bash
# A KVM lab on one machine, from Debian packages only: each "host" is its own
# libvirt daemon in its own mount and network namespace, joined by veth to a
# bridge in the root namespace; guests boot a Debian kernel and a busybox
# initramfs that brings up its network, answers ping and speaks enough of the
# QEMU guest agent's protocol for vmdr (guest-sync, guest-ping,
# guest-network-get-interfaces, and vmdr-poweroff: the guest powers itself
# off). Guests run under KVM where it works here, else under TCG.
#
#   kvm-lab.sh up [HOST...]        build the lab (hosts: kvm-a1 kvm-a2 kvm-b1)
#   kvm-lab.sh demo                up, then guests web-1 and db-1 on kvm-a1 and
#                                  app-1 on kvm-a2, agents and BMCs
#                                  (examples/kvm.toml drives it)
#   kvm-lab.sh down                remove it: guests, daemons, namespaces, links
#   kvm-lab.sh guest HOST NAME IP [KERNEL-ARGS]
#                                  define and start a guest on HOST (IP: its
#                                  address, host part of the lab's /24;
#                                  vmdr.writer=USEC: it writes numbered
#                                  records to its disk, one per 4 KiB block;
#                                  vmdr.disks=2: a second disk, vdb, and the
#                                  records alternate between the two)
#   kvm-lab.sh kill HOST           the host dies: its daemon and guests are
#                                  SIGKILLed and its address stops answering
#   kvm-lab.sh cut HOST            the host is cut off (guests keep running)
#   kvm-lab.sh heal HOST           undoes cut
#   kvm-lab.sh revive HOST         after kill: link up, daemon started again
#   kvm-lab.sh agents [BIN [TIMEOUT [INTERVAL]]]
#                                  start vmdr-agent (BIN: target/release/vmdr-agent)
#                                  in every host's namespace: it heartbeats to drd's
#                                  agent listener at the lab's .1, port 7171, token
#                                  $DIR/agent-token, records in $DIR/shared/heartbeats;
#                                  cut off for TIMEOUT (10s) it destroys its guests
#   kvm-lab.sh bmcs                a BMC for every host: OpenIPMI's ipmi_sim on
#                                  127.0.0.1 (out of band: a cut link leaves it
#                                  alone), user admin, password in
#                                  $DIR/bmc-password, port in $DIR/HOST/bmc/port;
#                                  its chassis power is the host's: off kills
#                                  the host as `kill` does, on revives it
#                                  (fence_ipmilan drives it, as drd's
#                                  [[fence.device]] does)
#   kvm-lab.sh power HOST get|set power [0|1]
#                                  the chassis control ipmi_sim runs
#   kvm-lab.sh uri HOST            the host's libvirt URI (TCP, through its link)
#   kvm-lab.sh status              hosts, addresses and guests
#
# Environment (each has a default):
#   VMDR_LAB_DIR    state of the lab (/run/vmdr-lab)
#   VMDR_LAB_NAME   prefix of namespaces and links, at most 7 characters (vmdrlab)
#   VMDR_LAB_NET    the lab is 198.19.NET.0/24 (0); hosts .11, .12, ...;
#                   the root namespace's end .1
#   VMDR_LAB_CACHE  the guest kernel and initramfs (/var/cache/vmdr-lab)
#   VMDR_LAB_ACCEL  kvm or tcg to skip the probe
#
# Needs root and the packages the test command installs (libvirt-daemon,
# libvirt-daemon-driver-qemu, libvirt-clients, qemu-system-x86, qemu-utils,
# busybox-static, iproute2). Traffic stays inside the lab's namespaces.
set -euo pipefail

DIR=${VMDR_LAB_DIR:-/run/vmdr-lab}
NAME=${VMDR_LAB_NAME:-vmdrlab}
NET=${VMDR_LAB_NET:-0}
CACHE=${VMDR_LAB_CACHE:-/var/cache/vmdr-lab}
PREFIX=198.19.$NET
BRIDGE=${NAME}br

die() { echo "kvm-lab: $*" >&2; exit 1; }
[ ${#NAME} -le 7 ] || die "VMDR_LAB_NAME must be at most 7 characters (link names are limited to 15)"
case $NET in '' | *[!0-9]*) die "VMDR_LAB_NET must be a number from 0 to 255" ;; esac
[ "$NET" -le 255 ] || die "VMDR_LAB_NET must be a number from 0 to 255"

# The index (1, 2, ...) of a host of the lab, from its state.
host_index() {
    local line
    line=$(grep -E "^$1 " "$DIR/hosts" 2>/dev/null) || die "no host $1 in the lab at $DIR"
    echo "${line#* }"
}
host_ip() { echo "$PREFIX.$((10 + $(host_index "$1")))"; }
host_ns() { echo "$NAME-$1"; }
host_link() { echo "${NAME}h$(host_index "$1")"; }
unix_uri() { echo "qemu+unix:///system?socket=$DIR/$1/libvirt-sock"; }
tcp_uri() { echo "qemu+tcp://$(host_ip "$1")/system"; }
virsh_on() { local h=$1; shift; virsh -q -c "$(unix_uri "$h")" "$@"; }

# The guest kernel (Debian's cloud kernel, fetched with apt-get download) and
# the busybox initramfs, built once into the cache.
guest_assets() {
    if [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/initrd.gz" ] && [ -s "$CACHE/version" ] &&
        [ "$(cat "$CACHE/version")" = 7 ]; then
        return
    fi
    command -v busybox >/dev/null || die "busybox is missing (apt-get install busybox-static)"
    local work pkg kver
    work=$(mktemp -d)
    mkdir -p "$CACHE"
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[^ ]*\)/\1/p' | head -n 1)
    [ -n "$pkg" ] || die "cannot find Debian's cloud kernel package (apt-get update first)"
    (cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
    dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
    kver=$(ls "$work/k/lib/modules")
    cp "$work/k/boot/vmlinuz-$kver" "$CACHE/vmlinuz.new"
    local root=$work/initrd mods=$work/k/lib/modules/$kver/kernel
    mkdir -p "$root"/{bin,proc,sys,dev,tmp,run,lib/modules}
    cp "$(command -v busybox)" "$root/bin/busybox"
    # Dependency order: virtio_ring before virtio, the PCI transport, then
    # the devices (net_failover for virtio_net, the console for the agent).
    local m f
    for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
        failover net_failover virtio_net virtio_blk virtio_console; do
        f=$(find "$mods" -name "$m.ko*" | head -n 1)
        [ -n "$f" ] || die "kernel $kver has no module $m"
        case $f in
        *.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
        *.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
        *) cp "$f" "$root/lib/modules/$m.ko" ;;
        esac
    done
    cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
    failover net_failover virtio_net virtio_blk virtio_console; do
    insmod /lib/modules/$m.ko
done
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
ip=$(arg vmdr.ip); gw=$(arg vmdr.gw)
ip link set lo up
ip link set eth0 up
[ -n "$ip" ] && ip addr add "$ip" dev eth0
[ -n "$gw" ] && ip route add default via "$gw"
mac=$(cat /sys/class/net/eth0/address)
echo "vmdr-guest up ip=$ip"
mkdir -p /tmp
# The benchmark's writes, on the agent's command: vmdr-fill writes PERCENT of
# vda in 64 KiB units at distinct random offsets (SEED), then syncs;
# vmdr-churn writes 1 MiB at random offsets, each flushed, about MBPS MB/s
# at most, until vmdr-churn-stop.
cat >/vmdr-fill <<'FILL'
units=$(( $(cat /sys/block/vda/size) / 128 ))
awk -v n=$(( units * $1 / 100 )) -v u="$units" -v s="$2" 'BEGIN {
    srand(s); while (c < n) { o = int(rand() * u); if (!(o in seen)) { seen[o] = 1; c++; print o } } }' |
    while read -r o; do dd if=/dev/zero of=/dev/vda bs=65536 seek="$o" count=1 conv=notrunc 2>/dev/null; done
sync
FILL
cat >/vmdr-churn <<'CHURN'
units=$(( $(cat /sys/block/vda/size) / 2048 ))
pause=$(( 1000000 / ${1:-1000} ))
awk -v u="$units" 'BEGIN { srand(); while (1) print int(rand() * u) }' |
    while read -r o; do
        [ -e /tmp/churn-stop ] && break
        dd if=/dev/zero of=/dev/vda bs=1048576 seek="$o" count=1 conv=notrunc,fsync 2>/dev/null
        usleep "$pause"
    done
CHURN
# The writer (vmdr.writer=MICROSECONDS between records): numbered records in
# order, one per 4 KiB block of the disk, each flushed before the next is
# written, for the replication tests' crash-consistency checks.
# With vmdr.disks=2 record k goes to block k/2 of disk k%2 (vda, vdb): the
# two disks written alternately, for checks that a point is one instant of
# both.
w=$(arg vmdr.writer); nd=$(arg vmdr.disks)
if [ -n "$w" ] && [ -b /dev/vda ]; then
    (k=0; while [ "$k" -lt 4096 ]; do
        dev=/dev/vda; blk=$k
        if [ "$nd" = 2 ]; then
            blk=$((k / 2)); [ $((k % 2)) = 1 ] && dev=/dev/vdb
        fi
        printf 'vmdr-record %08d\n' "$k" |
            dd of="$dev" bs=4096 seek="$blk" conv=notrunc,sync,fsync 2>/dev/null
        k=$((k + 1)); usleep "$w"
    done) &
fi
# The guest agent: one JSON command a line on the agent's virtio port.
agent() {
    local port=$1
    # A virtio port opens once: one descriptor for both directions.
    exec 3<>"$port"
    while true; do
        awk -v ip="${ip%/*}" -v prefix="${ip#*/}" -v mac="$mac" '
        function reply(s) { print s; fflush() }
        {
            line = $0; gsub(/\377/, "", line)
            if (line ~ /"guest-sync/) {
                id = line; sub(/.*"id"[ ]*:[ ]*/, "", id); sub(/[^0-9].*/, "", id)
                if (line ~ /guest-sync-delimited/) printf "\377"
                reply("{\"return\": " id "}")
            } else if (line ~ /"guest-ping"/) {
                reply("{\"return\": {}}")
            } else if (line ~ /"guest-network-get-interfaces"/) {
                reply("{\"return\": [{\"name\": \"lo\", \"ip-addresses\": [{\"ip-address-type\": \"ipv4\", \"ip-address\": \"127.0.0.1\", \"prefix\": 8}]}, {\"name\": \"eth0\", \"hardware-address\": \"" mac "\", \"ip-addresses\": [{\"ip-address-type\": \"ipv4\", \"ip-address\": \"" ip "\", \"prefix\": " prefix "}]}]}")
            } else if (line ~ /"vmdr-fill"/) {
                pct = line; sub(/.*"percent"[ ]*:[ ]*/, "", pct); sub(/[^0-9].*/, "", pct)
                seed = line; sub(/.*"seed"[ ]*:[ ]*/, "", seed); sub(/[^0-9].*/, "", seed)
                system("sh /vmdr-fill " pct " " seed)
                reply("{\"return\": {}}")
            } else if (line ~ /"vmdr-churn-stop"/) {
                system("touch /tmp/churn-stop")
                reply("{\"return\": {}}")
            } else if (line ~ /"vmdr-churn"/) {
                rate = line; sub(/.*"mbps"[ ]*:[ ]*/, "", rate); sub(/[^0-9].*/, "", rate)
                system("rm -f /tmp/churn-stop; sh /vmdr-churn " rate " >/dev/null 2>&1 &")
                reply("{\"return\": {}}")
            } else if (line ~ /"vmdr-poweroff"/) {
                reply("{\"return\": {}}")
                system("sync; poweroff -f")
            } else if (line ~ /"execute"/) {
                reply("{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"not supported by the lab guest\"}}")
            }
        }' <&3 >&3 2>/dev/null
        sleep 1
    done
}
for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && agent "/dev/${p##*/}" &
done
setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1' &
while true; do sleep 3600; done
INIT
    chmod +x "$root/init"
    (cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$CACHE/initrd.gz.new")
    mv "$CACHE/vmlinuz.new" "$CACHE/vmlinuz"
    mv "$CACHE/initrd.gz.new" "$CACHE/initrd.gz"
    echo 7 >"$CACHE/version"
    rm -rf "$work"
}

# KVM where a guest really boots under it (here /dev/kvm may open while its
# guests hang at early boot), else TCG.
accel() {
    if [ -n "${VMDR_LAB_ACCEL:-}" ]; then echo "$VMDR_LAB_ACCEL"; return; fi
    # A property of the machine: probed once, kept beside the kernel.
    if [ -s "$CACHE/accel" ]; then cat "$CACHE/accel"; return; fi
    local result=tcg log
    if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
        log=$(mktemp)
        timeout 20 qemu-system-x86_64 -machine pc,accel=kvm -m 128 -display none -no-reboot \
            -serial "file:$log" -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.gz" \
            -append "console=ttyS0 panic=-1 quiet" -nic none </dev/null >/dev/null 2>&1 &
        local pid=$! i
        for i in $(seq 1 40); do
            if grep -q "vmdr-guest up" "$log" 2>/dev/null; then result=kvm; break; fi
            sleep 0.25
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        rm -f "$log"
    fi
    echo "$result" >"$CACHE/accel"
    echo "$result"
}

start_daemon() {
    local h=$1 ns hd
    ns=$(host_ns "$h")
    hd=$DIR/$h
    rm -f "$hd/libvirt-sock" "$hd/libvirt-sock-ro" "$hd/libvirt-admin-sock"
    # Private state per daemon: its own /etc/libvirt, /run/libvirt,
    # /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt.
    ip netns exec "$ns" unshare --mount --propagation private sh -c "
        mount --bind '$hd/etc' /etc/libvirt
        mount --bind '$hd/run' /run/libvirt
        mount --bind '$hd/lib' /var/lib/libvirt
        mount --bind '$hd/cache' /var/cache/libvirt
        mount --bind '$hd/log' /var/log/libvirt
        exec setsid libvirtd --listen -f '$hd/etc/libvirtd.conf' -p '$hd/libvirtd.pid'
    " >"$hd/daemon.out" 2>&1 </dev/null &
    local i
    for i in $(seq 1 100); do
        if [ -S "$hd/libvirt-sock" ] && virsh -q -c "$(unix_uri "$h")" version >/dev/null 2>&1; then
            return
        fi
        sleep 0.1
    done
    cat "$hd/daemon.out" >&2 || true
    die "libvirtd of $h did not start (log: $hd/log/libvirtd.log)"
}

up() {
    [ "$(id -u)" = 0 ] || die "needs root"
    local hosts=("$@")
    [ ${#hosts[@]} -gt 0 ] || hosts=(kvm-a1 kvm-a2 kvm-b1)
    [ ! -e "$DIR/hosts" ] || die "a lab is up at $DIR already (kvm-lab.sh down first)"
    for cmd in libvirtd virsh qemu-system-x86_64 qemu-img ip unshare; do
        command -v $cmd >/dev/null || die "$cmd is missing (the test command installs it)"
    done
    mkdir -p "$DIR/shared"
    guest_assets
    accel >/dev/null
    : >"$DIR/hosts"
    ip link add "$BRIDGE" type bridge
    ip addr add "$PREFIX.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    local i=0 h
    for h in "${hosts[@]}"; do
        i=$((i + 1))
        echo "$h $i" >>"$DIR/hosts"
        local ns link hd
        ns=$(host_ns "$h")
        link=$(host_link "$h")
        hd=$DIR/$h
        mkdir -p "$hd"/{etc,run,lib,cache,log,images}
        ip netns add "$ns"
        ip link add "$link" type veth peer name "${link}i"
        ip link set "${link}i" netns "$ns"
        ip link set "$link" master "$BRIDGE" up
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" ip link set "${link}i" name eth0
        ip netns exec "$ns" ip link add br0 type bridge
        ip netns exec "$ns" ip link set eth0 master br0 up
        ip netns exec "$ns" ip addr add "$(host_ip "$h")/24" dev br0
        ip netns exec "$ns" ip link set br0 up
        cat >"$hd/etc/libvirtd.conf" <<EOF
unix_sock_dir = "$hd"
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
listen_tcp = 1
listen_tls = 0
listen_addr = "$(host_ip "$h")"
auth_tcp = "none"
log_outputs = "3:file:$hd/log/libvirtd.log"
EOF
        # A daemon in a namespace without cgroups or a security driver.
        cat >"$hd/etc/qemu.conf" <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
EOF
        start_daemon "$h"
    done
    echo "lab up at $DIR: ${hosts[*]} on $PREFIX.0/24 (guests: $(accel))"
}

# vmdr-agent in each host's namespace (killed with the host by kill_host,
# and by down). No watchdog: the lab's hosts share this machine's kernel.
agents() {
    local bin=${1:-target/release/vmdr-agent} timeout=${2:-10s} interval=${3:-1s} h
    [ -x "$bin" ] || die "no vmdr-agent at $bin (cargo build --release first)"
    bin=$(realpath "$bin")
    [ -s "$DIR/agent-token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/agent-token"
    mkdir -p "$DIR/shared/heartbeats"
    while read -r h _; do
        cat >"$DIR/$h/agent.toml" <<EOF
host = "$h"
drd = ["$PREFIX.1:7171"]
token_file = "$DIR/agent-token"
libvirt = "$(unix_uri "$h")"
isolation_timeout = "$timeout"
interval = "$interval"
isolation_addresses = ["$PREFIX.1"]
storage_dir = "$DIR/shared/heartbeats"
state_file = "$DIR/$h/agent.state"
EOF
        ip netns exec "$(host_ns "$h")" setsid "$bin" --config "$DIR/$h/agent.toml" \
            >"$DIR/$h/agent.log" 2>&1 </dev/null &
    done <"$DIR/hosts"
    echo "agents started (logs: $DIR/HOST/agent.log); drd's [agents] listens on $PREFIX.1:7171"
}

# A BMC per host (see the usage above). ipmi_sim calls `power HOST get
# power` and `power HOST set power "0"`.
bmcs() {
    command -v ipmi_sim >/dev/null || die "ipmi_sim is missing (apt-get install openipmi)"
    [ -s "$DIR/bmc-password" ] || head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/bmc-password"
    local self h i port
    self=$(realpath "$0")
    while read -r h i; do
        local b=$DIR/$h/bmc
        mkdir -p "$b/state"
        port=$((20000 + NET * 16 + i))
        echo "$port" >"$b/port"
        cat >"$b/lan.conf" <<EOF
name "$h"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 $port
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcd$(printf %02x "$i")
  endlan
  chassis_control "env VMDR_LAB_DIR=$DIR VMDR_LAB_NAME=$NAME VMDR_LAB_NET=$NET $self power $h"
  user 2 true "admin" "$(cat "$DIR/bmc-password")" admin 10 none md2 md5 straight
EOF
        printf 'mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n' >"$b/bmc.emu"
        setsid ipmi_sim -c "$b/lan.conf" -f "$b/bmc.emu" -s "$b/state" -n \
            >"$b/ipmi_sim.log" 2>&1 </dev/null &
        echo $! >"$b/pid"
    done <"$DIR/hosts"
    # Up once each answers.
    while read -r h _; do
        local k
        for k in $(seq 1 50); do
            if ipmitool -I lanplus -C 3 -H 127.0.0.1 -p "$(cat "$DIR/$h/bmc/port")" -U admin \
                -f "$DIR/bmc-password" chassis power status >/dev/null 2>&1; then
                break
            fi
            [ "$k" -lt 50 ] || die "the BMC of $h does not answer (log: $DIR/$h/bmc/ipmi_sim.log)"
            sleep 0.2
        done
    done <"$DIR/hosts"
    echo "BMCs up on 127.0.0.1 (ports in $DIR/HOST/bmc/port), user admin, password in $DIR/bmc-password"
}

# A host's chassis power, as its BMC sees it: off is a host killed
# (`kill`), marked so; on revives it.
power() {
    local h=$1 op=${2:-} what=${3:-} value=${4:-}
    host_index "$h" >/dev/null
    [ "$what" = power ] || exit 0
    case $op in
    get)
        if [ -e "$DIR/$h/powered-off" ]; then echo "power:0"; else echo "power:1"; fi
        ;;
    set)
        value=${value//\"/}
        echo "$(date +%s.%N) set power $value" >>"$DIR/$h/bmc/calls"
        if [ "$value" = 0 ] && [ ! -e "$DIR/$h/powered-off" ]; then
            : >"$DIR/$h/powered-off"
            kill_host "$h"
        elif [ "$value" = 1 ] && [ -e "$DIR/$h/powered-off" ]; then
            rm -f "$DIR/$h/powered-off"
            ip link set "$(host_link "$h")" up
            start_daemon "$h" >/dev/null
        fi
        ;;
    *) die "usage: kvm-lab.sh power HOST get|set power [0|1]" ;;
    esac
}

down() {
    if [ -e "$DIR/hosts" ]; then
        local h
        while read -r h _; do
            [ -s "$DIR/$h/bmc/pid" ] && kill "$(cat "$DIR/$h/bmc/pid")" 2>/dev/null || true
            local ns
            ns=$(host_ns "$h")
            if ip netns list | grep -qw "$ns"; then
                ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
                ip netns del "$ns" 2>/dev/null || true
            fi
            ip link del "${NAME}h$(host_index "$h")" 2>/dev/null || true
        done <"$DIR/hosts"
    fi
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -rf "$DIR"
}

guest() {
    local h=$1 name=$2 addr=$3 extra=${4:-}
    [ -n "$name" ] && [ -n "$addr" ] || die "usage: kvm-lab.sh guest HOST NAME IP [KERNEL-ARGS]"
    host_index "$h" >/dev/null
    local disk=$DIR/shared/$name.qcow2 type xml second=
    [ -e "$disk" ] || qemu-img create -q -f qcow2 "$disk" 16M
    case " $extra " in
    *" vmdr.disks=2 "*)
        [ -e "$DIR/shared/$name-b.qcow2" ] || qemu-img create -q -f qcow2 "$DIR/shared/$name-b.qcow2" 16M
        second="<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$DIR/shared/$name-b.qcow2'/><target dev='vdb' bus='virtio'/></disk>"
        ;;
    esac
    type=$([ "$(accel)" = kvm ] && echo kvm || echo qemu)
    # A MAC of its own, fixed by its address: a guest defined again from
    # this file keeps it (neighbours' ARP caches stay right).
    local mac
    mac=$(echo "$addr" | awk -F. '{printf "52:54:00:%02x:%02x:%02x", $2, $3, $4}')
    mkdir -p "$DIR/guests"
    xml=$DIR/guests/$name.xml
    cat >"$xml" <<EOF
<domain type='$type'>
  <name>$name</name>
  <metadata>
    <vmdr:vm xmlns:vmdr="https://vmdr.dev/xmlns/libvirt/1"><vmdr:ip>$addr</vmdr:ip></vmdr:vm>
  </metadata>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$CACHE/vmlinuz</kernel>
    <initrd>$CACHE/initrd.gz</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet vmdr.ip=$addr/24 $extra</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    $second
    <interface type='bridge'>
      <mac address='$mac'/>
      <source bridge='br0'/>
      <model type='virtio'/>
    </interface>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <serial type='pty'/>
    <console type='pty'/>
    <panic model='isa'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
    virsh_on "$h" define "$xml" >/dev/null
    virsh_on "$h" start "$name" >/dev/null
    echo "guest $name on $h at $addr"
}

kill_host() {
    local h=$1 ns
    ns=$(host_ns "$h")
    ip netns pids "$ns" | xargs -r kill -9 2>/dev/null || true
    ip link set "$(host_link "$h")" down
}

status() {
    [ -e "$DIR/hosts" ] || { echo "no lab at $DIR"; return; }
    echo "lab at $DIR, guests under $(accel)"
    local h
    while read -r h _; do
        echo "$h $(host_ip "$h") $(tcp_uri "$h")"
        virsh_on "$h" list --all 2>/dev/null | sed 's/^/   /' || echo "   (daemon not answering)"
    done <"$DIR/hosts"
}

cmd=${1:-}
shift || true
case $cmd in
up) up "$@" ;;
demo)
    up kvm-a1 kvm-a2 kvm-b1
    guest kvm-a1 web-1 "$PREFIX.101"
    guest kvm-a1 db-1 "$PREFIX.102"
    guest kvm-a2 app-1 "$PREFIX.103"
    if [ -x target/release/vmdr-agent ]; then
        agents target/release/vmdr-agent
    else
        echo "no target/release/vmdr-agent: the hosts run no agent (cargo build --release, then kvm-lab.sh agents)"
    fi
    if command -v ipmi_sim >/dev/null && command -v ipmitool >/dev/null; then
        bmcs
    else
        echo "no ipmi_sim or ipmitool: the hosts have no BMC (apt-get install openipmi ipmitool; drop [[fence.device]] from examples/kvm.toml)"
    fi
    ;;
down) down ;;
guest) guest "${1:-}" "${2:-}" "${3:-}" "${4:-}" ;;
kill) kill_host "${1:?host}" ;;
cut) ip link set "$(host_link "${1:?host}")" down ;;
heal) ip link set "$(host_link "${1:?host}")" up ;;
revive) ip link set "$(host_link "${1:?host}")" up && start_daemon "$1" ;;
agents) agents "$@" ;;
bmcs) bmcs ;;
power) power "${1:?host}" "${2:-}" "${3:-}" "${4:-}" ;;
uri) tcp_uri "${1:?host}" ;;
status) status ;;
*) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
esac
