#!/usr/bin/env bash
# Build and run Onair's fuzz targets on the stable toolchain (docs/fuzzing.md).
#
# libFuzzer's coverage comes from LLVM's SanitizerCoverage pass, which stable rustc runs with
# `-Cpasses=sancov-module` and `-Cllvm-args=…` (the flags cargo-fuzz sets); no sanitizer (a
# nightly `-Z` flag) is needed to find panics, overflows and failed invariants in safe Rust.
# libfuzzer-sys builds libFuzzer itself with the C++ compiler (g++).
#
#   fuzz/fuzz.sh build                    build every target (fuzz/target, not the main target/)
#   fuzz/fuzz.sh run TARGET [SECONDS] [libFuzzer flags…]
#                                         fuzz one target from its seeds (fuzz/corpus/TARGET);
#                                         new inputs go to fuzz/target/corpus/TARGET, crashes to
#                                         fuzz/artifacts/TARGET
#   fuzz/fuzz.sh smoke [SECONDS]          every target for SECONDS each (default 30), one at a
#                                         time, then a summary (CI: test.sh)
#   fuzz/fuzz.sh list                     the targets
#
# Environment: FUZZ_JOBS (cargo -j), FUZZ_NICE (nice level for builds and runs, default 0),
# FUZZ_INSTRUMENT (`all`, the default: every crate carries coverage instrumentation; `ours`: only
# Onair's crates and the targets, see rustc-ours.sh — a quicker build for CI's short runs),
# FUZZ_PARALLEL (smoke: targets run at once, default 1), FUZZ_PROFILE (cargo profile of the
# build and of the binaries run, default release; CI's smoke uses `ci`, see Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")"

triple=$(rustc -vV | sed -n 's/^host: //p')
profile=${FUZZ_PROFILE:-release}
bin_dir="target/$triple/$profile"
# Run a command at FUZZ_NICE. With autogroup scheduling (most desktop and server kernels) nice
# only ranks processes within one session's group, and every session's group gets an equal
# share: a fuzzer started from another terminal or with setsid took a whole core from the builds
# and tests beside it whatever its nice. So with FUZZ_NICE set the command gets a session (and
# group) of its own whose nice is FUZZ_NICE; the caller's own group is left alone (Ctrl-C does
# not reach that session: stop a run with `pkill -INT -f fuzz/target`).
nice_() {
  if [ -n "${FUZZ_NICE:-}" ] && [ -w /proc/self/autogroup ] && command -v setsid >/dev/null; then
    setsid -w sh -c 'n=$1; shift; echo "$n" > /proc/self/autogroup 2>/dev/null; exec nice -n "$n" "$@"' sh "$FUZZ_NICE" "$@"
  else
    nice -n "${FUZZ_NICE:-0}" "$@"
  fi
}
targets() { sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^onair-fuzz$'; }

build() {
  # The versions of the main workspace: its lockfile, plus what only fuzzing adds.
  cp ../Cargo.lock Cargo.lock
  local flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
  flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
  flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
  case "$triple" in *-linux-*) flags+=" -Cllvm-args=-sanitizer-coverage-stack-depth" ;; esac
  if [ "${FUZZ_INSTRUMENT:-all}" = ours ]; then
    # Our crates only (rustc-ours.sh): a quicker build for short runs.
    FUZZ_SANCOV="$flags" RUSTC_WRAPPER="$PWD/rustc-ours.sh" nice_ cargo build --profile "$profile" --target "$triple" \
      ${FUZZ_JOBS:+-j "$FUZZ_JOBS"} --bins
    return
  fi
  # --target keeps these flags off build scripts and proc macros.
  RUSTFLAGS="$flags ${RUSTFLAGS:-}" nice_ cargo build --profile "$profile" --target "$triple" ${FUZZ_JOBS:+-j "$FUZZ_JOBS"} --bins
}

run() {
  local t=$1 secs=${2:-60}
  shift 2 || shift $#
  [ -x "$bin_dir/$t" ] || { echo "no such target built: $t (fuzz/fuzz.sh build)" >&2; exit 2; }
  mkdir -p "target/corpus/$t" "corpus/$t" "artifacts/$t"
  # -rss_limit_mb: a parser that reserves what a length field claims is a finding too.
  nice_ "$bin_dir/$t" "target/corpus/$t" "corpus/$t" -max_total_time="$secs" -rss_limit_mb=2048 \
    -timeout=10 -max_len=65536 -print_final_stats=1 -artifact_prefix="artifacts/$t/" "$@"
}

smoke() {
  # FUZZ_PARALLEL targets at a time (default 1: one fuzzer process, one core).
  local secs=${1:-30} par=${FUZZ_PARALLEL:-1} failed=() summary=() all t j execs
  mapfile -t all < <(targets)
  for ((i = 0; i < ${#all[@]}; i += par)); do
    local pids=() names=()
    for t in "${all[@]:i:par}"; do
      run "$t" "$secs" >"target/smoke-$t.log" 2>&1 &
      pids+=($!)
      names+=("$t")
    done
    for j in "${!pids[@]}"; do
      t=${names[j]}
      if wait "${pids[j]}"; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "target/smoke-$t.log")
        summary+=("$(printf '%-16s ok    %9s runs in %ss' "$t" "${execs:-?}" "$secs")")
      else
        failed+=("$t")
        summary+=("$(printf '%-16s FAIL  (log: fuzz/target/smoke-%s.log; input in fuzz/artifacts/%s/)' "$t" "$t" "$t")")
        tail -40 "target/smoke-$t.log"
      fi
    done
  done
  echo "fuzz smoke: ${#all[@]} targets, ${secs}s each"
  printf '  %s\n' "${summary[@]}"
  [ ${#failed[@]} -eq 0 ] || { echo "fuzz smoke failed: ${failed[*]}"; exit 1; }
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  smoke) shift; smoke "${1:-30}" ;;
  list) targets ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
