#!/usr/bin/env bash
# Start a Spark standalone master and N workers on this machine, from the pip-installed
# pyspark (which has spark-class but no sbin/start-master.sh), in the background.
#
#   scripts/start-cluster.sh [-n WORKERS] [-c CORES] [-m MEMORY] [-p PORT] [-u UI_PORT] [-d STATE_DIR]
#
#   -n  workers (default 2)            -c  cores per worker (default 1: one tfos node each)
#   -m  memory per worker (default 2g) -p  master port (default 7077; 0: a free port)
#   -u  master web UI port (default 8080; 0: a free port)
#   -d  state dir for pid files, logs and work dirs (default $TFOS_CLUSTER_DIR or
#       /tmp/tfos-standalone-$USER)
#
# Binds SPARK_LOCAL_IP (default 127.0.0.1: nothing leaves this machine). Waits, at most
# $TFOS_CLUSTER_TIMEOUT seconds (default 90), until the master answers and every worker has
# registered, then prints the master URL (spark://host:port) as the last line of stdout and
# writes it to STATE_DIR/master-url. Stop everything with scripts/stop-cluster.sh -d STATE_DIR.
# Uses $SPARK_HOME/bin/spark-class if SPARK_HOME is set, else pyspark's; ${PYTHON:-python3}
# finds pyspark and probes the ports.
set -euo pipefail

workers=2 cores=1 memory=2g port=7077 ui_port=8080
state_dir="${TFOS_CLUSTER_DIR:-/tmp/tfos-standalone-${USER:-$(id -un)}}"
timeout_s="${TFOS_CLUSTER_TIMEOUT:-90}"
python="${PYTHON:-python3}"

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
die() { echo "start-cluster.sh: error: $*" >&2; exit 1; }

while getopts "n:c:m:p:u:d:h" opt; do
  case "$opt" in
    n) workers="$OPTARG" ;; c) cores="$OPTARG" ;; m) memory="$OPTARG" ;;
    p) port="$OPTARG" ;; u) ui_port="$OPTARG" ;; d) state_dir="$OPTARG" ;;
    h) usage 0 ;; *) usage 2 ;;
  esac
done
for value in "$workers" "$cores" "$port" "$ui_port" "$timeout_s"; do
  [[ "$value" =~ ^[0-9]+$ ]] || die "expected a whole number, got '$value' (see -h)"
done
(( workers >= 1 && cores >= 1 )) || die "need at least one worker with one core; got -n $workers -c $cores"

host="${SPARK_LOCAL_IP:-127.0.0.1}"
export SPARK_LOCAL_IP="$host"

if [[ -n "${SPARK_HOME:-}" ]]; then
  spark_class="$SPARK_HOME/bin/spark-class"
else
  pyspark_dir="$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null)" \
    || die "cannot import pyspark with $python; install it (python -m pip install pyspark) or set SPARK_HOME"
  spark_class="$pyspark_dir/bin/spark-class"
fi
[[ -x "$spark_class" ]] || die "no spark-class at $spark_class"

mkdir -p "$state_dir"
state_dir="$(cd "$state_dir" && pwd)"
for pid_file in "$state_dir"/*.pid; do
  [[ -e "$pid_file" ]] || continue
  if kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    die "a cluster from $state_dir is still running ($(basename "$pid_file" .pid) pid $(cat "$pid_file")); run scripts/stop-cluster.sh -d $state_dir first"
  fi
  rm -f "$pid_file"
done

free_port() {
  "$python" -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$host"
}
(( port != 0 )) || port="$(free_port)"
(( ui_port != 0 )) || ui_port="$(free_port)"
master_url="spark://$host:$port"

# Each daemon gets its own session (setsid), so stop-cluster.sh can end it with everything
# it started (executors, Python workers) by process group.
launch() {  # name, then the command
  local name="$1"; shift
  setsid "$@" >"$state_dir/$name.log" 2>&1 < /dev/null &
  echo $! >"$state_dir/$name.pid"
}

cleanup_on_failure() {
  echo "start-cluster.sh: stopping what was started; logs stay in $state_dir" >&2
  "$(dirname "$0")/stop-cluster.sh" -d "$state_dir" >&2 || true
}

# Ask the master's JSON page (UI port) how many workers are ALIVE; -1 while it does not answer.
alive_workers() {
  "$python" - "$host" "$ui_port" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/json/", timeout=2) as r:
        state = json.load(r)
    print(sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE"))
except Exception:
    print(-1)
EOF
}

wait_for() {  # what, wanted count
  local what="$1" wanted="$2" deadline=$((SECONDS + timeout_s)) alive
  while :; do
    alive="$(alive_workers)"
    if (( alive >= wanted )); then return 0; fi
    for pid_file in "$state_dir"/*.pid; do
      if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        echo "start-cluster.sh: error: $(basename "$pid_file" .pid) exited while waiting for $what; its log:" >&2
        tail -n 30 "$state_dir/$(basename "$pid_file" .pid).log" >&2 || true
        cleanup_on_failure; exit 1
      fi
    done
    if (( SECONDS >= deadline )); then
      echo "start-cluster.sh: error: waited ${timeout_s} s for $what at http://$host:$ui_port/json/; $( ((alive < 0)) && echo "the master does not answer" || echo "$alive of $wanted workers registered"); see $state_dir/*.log" >&2
      cleanup_on_failure; exit 1
    fi
    sleep 0.5
  done
}

launch master "$spark_class" org.apache.spark.deploy.master.Master \
  --host "$host" --port "$port" --webui-port "$ui_port"
wait_for "the master" 0

for i in $(seq 1 "$workers"); do
  mkdir -p "$state_dir/work-$i"
  launch "worker-$i" "$spark_class" org.apache.spark.deploy.worker.Worker \
    --host "$host" --cores "$cores" --memory "$memory" --webui-port 0 \
    --work-dir "$state_dir/work-$i" "$master_url"
done
wait_for "$workers worker(s) to register" "$workers"

echo "$master_url" >"$state_dir/master-url"
echo "start-cluster.sh: master $master_url (web UI http://$host:$ui_port), $workers worker(s) of $cores core(s) and $memory; state in $state_dir" >&2
echo "$master_url"
