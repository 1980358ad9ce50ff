#!/usr/bin/env bash
# Installs everything ddpm-cluster needs on Debian 12 (run as root, or with sudo available).
set -euo pipefail
PKGS=(
  build-essential pkg-config
  libopenblas-dev libopenmpi-dev openmpi-bin
  # oneDNN's direct convolutions (common/ops/conv_dnnl.c)
  libdnnl-dev
  libprotobuf-c-dev protobuf-c-compiler
  libzstd-dev libyaml-dev zlib1g-dev libpng-dev libjpeg-dev libwebp-dev liblmdb-dev
  python3-torch python3-numpy python3-scipy python3-pil python3-yaml zstd
  # ops/plot_metrics.py (tests/integration/test_logs.sh draws one; nodes need none)
  python3-matplotlib
  # tools the tests call: /usr/bin/time (peak RSS), pgrep; not on every minimal image
  time procps
  # ip and tc for the emulated cluster (ops/netns-cluster.sh, tests/integration/test_cluster.sh)
  iproute2
  dataset-fashion-mnist
  # a real Slurm cluster for tests/integration/test_slurm.sh and test_slurm_multinode.sh (ops/slurm-local.sh)
  munge slurmctld slurmd slurm-client
  # the libFuzzer targets (make fuzz; CI builds them and replays their corpora)
  clang-14 libclang-rt-14-dev libomp-14-dev
)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
