#!/usr/bin/env bash
# The whole Onair test suite. Installs what the tests need when it is missing, then runs:
#   - `cargo fmt --check` (rustfmt.toml) and clippy with warnings as errors,
#   - every unit and integration test of the workspace (real WebRTC peers on loopback, real
#     ffmpeg pushing RTMP, the store against SQLite and a PostgreSQL server the test starts),
#   - a smoke run of the forwarding-path benchmark (it must still build and forward),
#   - promtool on deploy/prometheus/: the alert rules, the scrape config, the rules' unit tests,
#   - the browser end-to-end test in headless Chromium (web-client/tests/e2e.mjs).
# Usage: ./test.sh            (CI: .ci/run calls this)
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the suites drive, installed only when missing.
need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs npm)
# Studio-feed tests push real RTMP with ffmpeg (libx264 + AAC) and check with ffprobe.
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need_apt+=(ffmpeg)
# promtool (Debian ships it in `prometheus`) checks deploy/prometheus/ and the /metrics exposition.
# Without recommends: the node exporter and its friends are not wanted.
need_apt_lean=()
command -v promtool >/dev/null || need_apt_lean+=(prometheus)
# The store's tests run against PostgreSQL too: each starts a throwaway cluster on a loopback port
# with Debian's initdb/pg_ctl (signaling/tests/common/pg.rs) and stops it after; no service runs.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt_lean+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ] || [ ${#need_apt_lean[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]} ${need_apt_lean[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  # PostgreSQL's package would create and start a "main" cluster: the tests start their own.
  # (Its postinst reads this file; dpkg keeps ours below with --force-confold.)
  if [[ " ${need_apt_lean[*]} " == *" postgresql "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    $sudo_ mkdir -p /etc/postgresql-common
    echo 'create_main_cluster = false' | $sudo_ tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  $sudo_ apt-get update -qq
  [ ${#need_apt[@]} -eq 0 ] || $sudo_ apt-get install -y -qq "${need_apt[@]}"
  [ ${#need_apt_lean[@]} -eq 0 ] || $sudo_ apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${need_apt_lean[@]}"
fi
# npm packages of the browser test, from the committed lockfile.
if [ ! -d web-client/node_modules/playwright-core ]; then
  (cd web-client && npm ci --no-audit --no-fund)
fi

export RUST_LOG="${RUST_LOG:-error}"
export RUST_BACKTRACE=1
# Style and lints first: they fail in seconds, the suites take minutes. (rustfmt and clippy come
# with the machine's rustup toolchain; a toolchain without them skips the check, loudly.)
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all --check; else echo "WARNING: rustfmt missing, style check skipped"; fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets --locked -- -D warnings
else
  echo "WARNING: clippy missing, lint check skipped"
fi
cargo test --workspace --locked
cargo test --locked -p onair-sfu --bench forward -- --quick
echo "bench smoke: ok"

# Prometheus files (deploy/prometheus/): the rules parse, the scrape config loads them, and the
# rules' unit tests (synthetic series in, alerts out) pass.
promtool check rules deploy/prometheus/alerts.yml
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/alerts_test.yml

# Browser end to end: real Chromium pages against the real binary (screenshots in target/screenshots/).
cargo build --locked -p onair
node web-client/tests/e2e.mjs
