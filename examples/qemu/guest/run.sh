#!/bin/sh
# web-01's own work, run by the test guest's init from its disk (/drsite/run.sh): say where it runs
# and what it has, then append a line to /visits.log every 5 seconds (a write replication ships).
host=$(sed -n 's/^local-hostname: *//p' /seed/meta-data 2>/dev/null | tr -d '"')
echo "DRSITE booted ${host:-without a seed disk (on its own site)}; $(wc -l < /mnt/visits.log 2>/dev/null || echo 0) lines in /visits.log"
while :; do
  echo "$(date -u +%FT%TZ) $(cat /proc/sys/kernel/hostname)" >> /mnt/visits.log
  sync
  sleep 5
done
