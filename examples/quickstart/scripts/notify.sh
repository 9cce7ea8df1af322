#!/bin/sh
# Recovery plan action for the quickstart: appends one line describing the step it was run for
# (its arguments and the DRSITE_* environment the plan runner gives it) to a log file, named by
# DRSITE_ACTION_LOG or .drsite/plan-actions.log by default.
set -eu
log="${DRSITE_ACTION_LOG:-.drsite/plan-actions.log}"
mkdir -p "$(dirname "$log")"
{
  printf '%s args=[%s]' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
  env | grep '^DRSITE_' | sort | sed 's/^/ /' | tr -d '\n'
  printf '\n'
} >> "$log"
