#!/bin/busybox sh
# /init of drsite's test guest (an initramfs with busybox and the cloud kernel's modules). What it
# does comes from the kernel command line, so one image serves every test:
#   drsite.run=a,b,...   actions in order: qga write read churn seed script wait hang (then poweroff)
#   drsite.path=/f       file on the VM's disk (ext4 on the first virtio disk) for write/read
#   drsite.data=BASE64   content that `write` puts there
#   drsite.off=0         stay up after the actions instead of powering off
# Every report is one serial console line starting with "DRSITE ", which the tests match.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /mnt /seed /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console node of its own, so the kernel may have started us without one.
exec </dev/console >/dev/console 2>&1

say() { echo "DRSITE $*"; }

# Only names made of [a-z_] become variables, so the command line cannot inject shell code.
for w in $(cat /proc/cmdline); do
  case "$w" in
    drsite.*=*)
      k=${w%%=*}; k=${k#drsite.}; v=${w#*=}
      case "$k" in *[!a-z_]*) continue ;; esac
      eval "ARG_$k=\$v" ;;
  esac
done

for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m.ko" 2>/dev/null || say "insmod $m failed"
done

off() {
  sync
  umount /mnt 2>/dev/null
  umount /seed 2>/dev/null
  say "poweroff"
  poweroff -f
}

fail() {
  say "error $*"
  off
}

wait_dev() {
  i=0
  while [ ! -b "$1" ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && return 1
    sleep 0.1
  done
}

# The VM's disk is the first virtio disk that is not the seed (serial "cidata").
root_dev() {
  for b in /sys/block/vd*; do
    [ -e "$b" ] || continue
    [ "$(cat "$b/serial" 2>/dev/null)" = cidata ] && continue
    echo "/dev/${b##*/}"
    return
  done
}

mounted=
mount_root() {
  [ -n "$mounted" ] && return
  i=0
  dev=$(root_dev)
  while [ -z "$dev" ]; do
    i=$((i + 1)); [ $i -gt 100 ] && fail "no virtio disk"
    sleep 0.1; dev=$(root_dev)
  done
  wait_dev "$dev" || fail "$dev did not appear"
  mount -t ext4 "$dev" /mnt || fail "cannot mount $dev"
  mounted=1
  say "mounted $dev"
}

# ACPI power button (QMP system_powerdown): unmount cleanly and power off.
watch_power_button() {
  for e in /sys/class/input/event*; do
    [ "$(cat "$e/device/name" 2>/dev/null)" = "Power Button" ] || continue
    ( dd if="/dev/input/${e##*/}" bs=24 count=1 >/dev/null 2>&1; say "power button"; off ) &
    return
  done
  say "no power button"
}

do_write() {
  mount_root
  [ -n "$ARG_path" ] || fail "write needs drsite.path"
  mkdir -p "/mnt$(dirname "$ARG_path")"
  echo "$ARG_data" | base64 -d > "/mnt$ARG_path" || fail "write $ARG_path"
  sync
  say "wrote $ARG_path sha256=$(sha256sum "/mnt$ARG_path" | cut -d' ' -f1)"
}

do_read() {
  mount_root
  if [ -f "/mnt$ARG_path" ]; then
    say "read $ARG_path sha256=$(sha256sum "/mnt$ARG_path" | cut -d' ' -f1)"
  else
    say "read $ARG_path missing"
  fi
}

# Writes until killed: each round appends its number to /churn.log and rewrites one of 16 blocks,
# then syncs, so what survived a crash is the log's last line.
do_churn() {
  mount_root
  mkdir -p /mnt/churn
  n=0
  while :; do
    n=$((n + 1))
    dd if=/dev/urandom of="/mnt/churn/$((n % 16))" bs=65536 count=1 2>/dev/null
    echo "$n" >> /mnt/churn.log
    sync
    [ $((n % 10)) -eq 0 ] && say "churn $n"
  done
}

# Prints (and applies) what a cloud-init NoCloud seed disk declares: hostname, addresses, routes, DNS.
do_seed() {
  dev=
  for b in /sys/block/vd*; do
    [ "$(cat "$b/serial" 2>/dev/null)" = cidata ] && dev=/dev/${b##*/}
  done
  [ -n "$dev" ] || dev=$(findfs LABEL=cidata 2>/dev/null)
  if [ -z "$dev" ]; then say "seed none"; return; fi
  mount -t vfat -o ro "$dev" /seed 2>/dev/null || mount -t iso9660 -o ro "$dev" /seed || fail "cannot mount seed $dev"
  say "seed hostname $(sed -n 's/^local-hostname: *//p' /seed/meta-data | tr -d '"')"
  [ -f /seed/network-config ] || { say "seed no network-config"; return; }
  # Reads the block style seed.ts writes (lists one item a line), not every YAML spelling.
  awk '
    function unq(s) { gsub(/["\047]/, "", s); return s }
    /^  [^ ]/ { mac = ""; sec = "" }
    /^      macaddress:/ { mac = unq($2) }
    /^    [^ -]/ { sec = "" }
    /^    addresses:/ { sec = "addr"; next }
    /^    routes:/ { sec = "route"; next }
    /^    nameservers:/ { sec = "ns"; next }
    sec == "ns" && /^      addresses:/ { sec = "dns"; next }
    sec == "addr" && /^      - / { print "addr", mac, unq($2) }
    sec == "dns" && /^        - / { print "dns", mac, unq($2) }
    sec == "route" && /^ +via:/ { print "gateway", mac, unq($2) }
  ' /seed/network-config > /tmp/net
  while read -r kind mac value; do
    ifname=
    for n in /sys/class/net/*; do
      [ "$(cat "$n/address")" = "$mac" ] && ifname=${n##*/}
    done
    if [ -z "$ifname" ]; then say "seed $kind $mac $value no-nic"; continue; fi
    ip link set "$ifname" up
    case "$kind" in
      addr) ip addr add "$value" dev "$ifname" && say "seed addr $ifname $mac $value" ;;
      gateway) say "seed gateway $ifname $mac $value" ;;
      dns) say "seed dns $ifname $mac $value" ;;
    esac
  done < /tmp/net
}

# qemu-guest-agent on its virtio-serial port (org.qemu.guest_agent.0), in the background: the host
# freezes and thaws the filesystems through it for application-consistent recovery points.
do_qga() {
  port=
  i=0
  while [ -z "$port" ]; do
    for p in /sys/class/virtio-ports/*; do
      [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
    done
    [ -n "$port" ] && break
    i=$((i + 1)); [ $i -gt 50 ] && { say "qga no port"; return; }
    sleep 0.1
  done
  i=0
  while [ ! -c "$port" ]; do
    i=$((i + 1)); [ $i -gt 50 ] && { say "qga $port did not appear"; return; }
    sleep 0.1
  done
  mkdir -p /var/run /tmp/qga
  LD_LIBRARY_PATH=/lib/x86_64-linux-gnu /usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /tmp/qga -f /tmp/qga.pid -d || { say "qga failed"; return; }
  say "qga started on $port"
}

do_script() {
  mount_root
  if [ -f /mnt/drsite/run.sh ]; then sh /mnt/drsite/run.sh; say "script exit $?"; else say "script missing"; fi
}

say "boot $(uname -r)"
case ",$ARG_run," in *,hang,*) ;; *) watch_power_button ;; esac
for a in $(echo "$ARG_run" | tr ',' ' '); do
  case "$a" in
    write) do_write ;;
    read) do_read ;;
    churn) do_churn ;;
    seed) do_seed ;;
    qga) do_qga ;;
    script) do_script ;;
    wait) say "waiting"; while :; do sleep 1; done ;;
    hang) say "hanging"; trap '' TERM INT; while :; do sleep 1; done ;;
    *) say "unknown action $a" ;;
  esac
done
say "done"
[ "$ARG_off" = 0 ] && { while :; do sleep 1; done; }
off
