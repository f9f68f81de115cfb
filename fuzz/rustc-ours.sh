#!/bin/sh
# rustc wrapper for fuzz.sh's quick builds (FUZZ_INSTRUMENT=ours): coverage instrumentation
# (FUZZ_SANCOV) only for Onair's own crates and the fuzz targets, not for their dependencies.
# libFuzzer then steers by our code's branches alone — enough for CI's 20-second smoke runs, and
# the dependencies (axum, sqlx, rtc, ring…) build as fast as in any build. Long runs instrument
# everything (fuzz.sh's default).
rustc=$1
shift
case "$CARGO_PKG_NAME" in
  onair | onair-sfu | onair-fuzz)
    case " $* " in
      *" --crate-name build_script_"*) ;;
      *) exec "$rustc" "$@" $FUZZ_SANCOV ;;
    esac
    ;;
esac
exec "$rustc" "$@"
