#!/bin/sh
# web-01's own work, run by the test guest's init from its disk (/drsite/run.sh): say where it runs
# and what it has, then append a line to /visits.log every 5 seconds (a write replication ships).
host=$(sed -n 's/^local-hostname: *//p' /seed/meta-data 2>/dev/null | tr -d '"')
# (The test first: a redirection that fails reports before any 2>/dev/null after it applies.)
lines=0
[ -f /mnt/visits.log ] && lines=$(wc -l < /mnt/visits.log)
echo "DRSITE booted ${host:-without a seed disk (on its own site)}; $lines lines in /visits.log"
while :; do
  echo "$(date -u +%FT%TZ) $(cat /proc/sys/kernel/hostname)" >> /mnt/visits.log
  sync
  sleep 5
done
