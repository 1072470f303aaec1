#!/usr/bin/env bash
# Stop the standalone master and workers that scripts/start-cluster.sh started.
#
#   scripts/stop-cluster.sh [-d STATE_DIR] [-t GRACE_SECONDS]
#
# Sends SIGTERM to each daemon's process group (the daemon, its executors and their Python
# workers), waits up to GRACE_SECONDS (default 10) for the group to go, then sends SIGKILL.
# Removes the pid files; keeps the logs. Exits 0 when nothing is left running.
set -euo pipefail

state_dir="${TFOS_CLUSTER_DIR:-/tmp/tfos-standalone-${USER:-$(id -un)}}"
grace_s=10
while getopts "d:t:h" opt; do
  case "$opt" in
    d) state_dir="$OPTARG" ;; t) grace_s="$OPTARG" ;;
    h) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
  esac
done
[[ -d "$state_dir" ]] || { echo "stop-cluster.sh: nothing to stop: no $state_dir" >&2; exit 0; }

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

# workers first, so the master does not log them as lost while it still runs
pid_files=()
for f in "$state_dir"/worker-*.pid "$state_dir"/master.pid; do [[ -e "$f" ]] && pid_files+=("$f"); done
(( ${#pid_files[@]} )) || { echo "stop-cluster.sh: nothing to stop in $state_dir" >&2; exit 0; }

for f in "${pid_files[@]}"; do
  pid="$(cat "$f")"
  group_alive "$pid" && kill -TERM -- "-$pid" 2>/dev/null || true
done
deadline=$((SECONDS + grace_s))
for f in "${pid_files[@]}"; do
  pid="$(cat "$f")"
  while group_alive "$pid" && (( SECONDS < deadline )); do sleep 0.2; done
  if group_alive "$pid"; then
    echo "stop-cluster.sh: $(basename "$f" .pid) (process group $pid) ignored SIGTERM for ${grace_s} s; sending SIGKILL" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
    sleep 0.2
  fi
done
left=()
for f in "${pid_files[@]}"; do
  pid="$(cat "$f")"
  if group_alive "$pid"; then left+=("$(basename "$f" .pid):$pid"); else rm -f "$f"; fi
done
if (( ${#left[@]} )); then
  echo "stop-cluster.sh: error: still running: ${left[*]}" >&2
  exit 1
fi
rm -f "$state_dir/master-url"
echo "stop-cluster.sh: stopped the cluster in $state_dir" >&2
