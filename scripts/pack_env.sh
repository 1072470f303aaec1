#!/usr/bin/env bash
# Pack a Python environment (with tfos, TensorFlow and pyspark installed) into an archive
# to ship to YARN containers.
#
#   scripts/pack_env.sh [ENV_DIR] [OUTPUT]
#
# ENV_DIR defaults to the active environment ($VIRTUAL_ENV, else $CONDA_PREFIX); OUTPUT to
# tfos-env.tar.gz. A conda environment (ENV_DIR/conda-meta) is packed with conda-pack, a
# virtualenv (ENV_DIR/pyvenv.cfg) with venv-pack. Then submit with
#
#   tfos submit --master yarn --deploy-mode cluster --cluster-size N --pack-env OUTPUT train.py
#
# venv-pack does not copy the Python interpreter: every node needs the same Python at the
# same path as this machine. conda-pack archives carry their interpreter.
set -euo pipefail

die() { echo "pack_env.sh: error: $*" >&2; exit 1; }
[[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }

env_dir="${1:-${VIRTUAL_ENV:-${CONDA_PREFIX:-}}}"
output="${2:-tfos-env.tar.gz}"
[[ -n "$env_dir" ]] || die "no environment given and none active (\$VIRTUAL_ENV and \$CONDA_PREFIX are unset); usage: pack_env.sh ENV_DIR [OUTPUT]"
[[ -d "$env_dir" ]] || die "no such directory: $env_dir"

if [[ -d "$env_dir/conda-meta" ]]; then
  if command -v conda-pack >/dev/null; then
    packer=(conda-pack)
  elif command -v conda >/dev/null && conda pack --help >/dev/null 2>&1; then
    packer=(conda pack)
  else
    die "$env_dir is a conda environment but conda-pack is not installed (conda install -c conda-forge conda-pack, or python -m pip install conda-pack)"
  fi
elif [[ -f "$env_dir/pyvenv.cfg" ]]; then
  command -v venv-pack >/dev/null \
    || die "$env_dir is a virtualenv but venv-pack is not installed (python -m pip install venv-pack)"
  packer=(venv-pack)
else
  die "$env_dir is neither a conda environment (no conda-meta/) nor a virtualenv (no pyvenv.cfg)"
fi

echo "pack_env.sh: ${packer[*]} -p $env_dir -o $output --force" >&2
"${packer[@]}" -p "$env_dir" -o "$output" --force
echo "pack_env.sh: wrote $output ($(du -h "$output" | cut -f1)); ship it with tfos submit --pack-env $output" >&2
