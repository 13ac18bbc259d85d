#!/usr/bin/env bash
# Installs what safeattach's demo and tests need on Debian 12, and nothing
# when everything is already there. Safe to run again and again.
set -euo pipefail

packages=(
  openjdk-17-jdk-headless   # the reference target JVM and javac
  gcc libc6-dev             # compiles the C test agents
  libjemalloc2              # jemalloc with heap profiling built in
  libgoogle-perftools4      # full tcmalloc (heap profiler, libunwind)
  libtcmalloc-minimal4      # minimal tcmalloc (no stack capture)
  libunwind8                # the unwinder in the deadlock
  jattach                   # compared against in bench/
  hyperfine                 # times whole commands in bench/
  procps                    # pgrep/ps for the demo
  util-linux                # unshare, for container-like targets
  curl openssl              # scripts/kube-apiserver.sh: readiness, keys
  libseccomp-dev pkg-config # scripts/kube-node.sh builds runc (seccomp filters)
  containernetworking-plugins iptables  # the real node's bridge network
  make
)

# kubectl checks deploy/kubernetes; any kubectl on PATH will do (Debian's
# kubernetes-client conflicts with the Cloud SDK's kubectl package).
if ! command -v kubectl >/dev/null 2>&1; then
  packages+=(kubernetes-client)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "prereqs: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
if ! command -v go >/dev/null 2>&1; then
  echo "prereqs: Go is not installed. Install Go 1.26 or newer (https://go.dev/doc/install) into /usr/local/go." >&2
  exit 1
fi
go mod download
