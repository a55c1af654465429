#!/bin/sh
# Probe hook for pppd's ip-up/ip-down (tests/vmlab/pppd_probe.py): dumps what the hook
# is given (argv, environment) and what the ppp interface shows at that moment
# (sysfs statistics, rtnetlink), one file per call under /tmp/vmlab/probe/.
# Installed as ip-up.d/00-probe, ip-down.d/00-probe and ip-down.d/zz-probe (run-parts'
# first and last), so the dumps bracket the other hooks.
DIR=/tmp/vmlab/probe
mkdir -p "$DIR" 2>/dev/null || exit 0
PHASE=$(basename "$(dirname "$0")")
TAG=$(basename "$0")
IFACE="${PPP_IFACE:-${IFNAME:-$1}}"
OUT="$DIR/$PHASE.$TAG.$IFACE.${PPPD_PID:-nopid}.$$"
{
  echo "UPTIME=$(cut -d' ' -f1 /proc/uptime)"
  echo "EPOCH=$(date +%s.%N)"
  echo "ARGC=$#"
  i=0
  for a in "$0" "$@"; do echo "ARGV$i=$a"; i=$((i + 1)); done
  echo "--- env"
  env | sort
  echo "--- sysfs"
  if [ -d "/sys/class/net/$IFACE" ]; then
    echo "EXISTS=yes"
    echo "OPERSTATE=$(cat "/sys/class/net/$IFACE/operstate" 2>&1)"
    echo "FLAGS=$(cat "/sys/class/net/$IFACE/flags" 2>&1)"
    echo "IFINDEX_SYS=$(cat "/sys/class/net/$IFACE/ifindex" 2>&1)"
    for f in /sys/class/net/"$IFACE"/statistics/*; do
      echo "STAT_$(basename "$f")=$(cat "$f" 2>&1)"
    done
  else
    echo "EXISTS=no"
  fi
  echo "--- ip -s link"
  ip -s -d link show dev "$IFACE" 2>&1
  echo "--- ip addr"
  ip addr show dev "$IFACE" 2>&1
  echo "--- pppd cmdline"
  [ -n "$PPPD_PID" ] && tr '\000' ' ' < "/proc/$PPPD_PID/cmdline" 2>&1
  echo
  echo "--- parent"
  tr '\000' ' ' < "/proc/$PPID/cmdline" 2>&1
  echo
} > "$OUT.tmp" 2>&1
mv -f "$OUT.tmp" "$OUT.txt"
exit 0
