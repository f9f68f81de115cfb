#!/usr/bin/env bash
# The whole Onair test suite. Installs what the tests need when it is missing, then runs:
#   - every unit and integration test of the workspace (real WebRTC peers on loopback),
#   - a smoke run of the forwarding-path benchmark (it must still build and forward).
# Usage: ./test.sh            (CI: .ci/run calls this)
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
# Nothing outside the Rust toolchain is needed yet; browser (chromium) and RTMP (ffmpeg) suites
# add their packages here when they land, installed only when missing:
#   command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi

export RUST_LOG="${RUST_LOG:-error}"
export RUST_BACKTRACE=1
cargo test --workspace --locked
cargo test --locked -p onair-sfu --bench forward -- --quick
echo "bench smoke: ok"
