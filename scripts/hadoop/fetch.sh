#!/usr/bin/env bash
# Copy Hadoop's mini-cluster jars (hadoop-client-minicluster and what it needs, pom.xml) from
# Maven Central into DEST (default: ~/.cache/tfos/hadoop-<version>), once; prints DEST.
# The tests' HDFS and YARN fixtures call it (tests/hadoop_cluster.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(sed -n 's:.*<hadoop.version>\(.*\)</hadoop.version>.*:\1:p' "$here/pom.xml")"
dest="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/tfos/hadoop-$version}"
if [ ! -f "$dest/.complete" ]; then
  mkdir -p "$dest"
  mvn -B -q -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$dest" >&2
  touch "$dest/.complete"
fi
echo "$dest"
