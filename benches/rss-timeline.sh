#!/usr/bin/env bash
# Runs a command, stamps each line it prints with the epoch second, and samples the VmRSS and
# VmHWM of the newest process whose command line matches PATTERN every 0.5 s, so a memory
# peak can be put against the phase that made it.
#
# Usage: benches/rss-timeline.sh PATTERN OUT -- CMD [ARG...]
#   OUT gets the stamped output, then one line per sample: epoch, pid, VmHWM kB, VmRSS kB.
# Run 12 in BENCHMARKS.md:
#   benches/rss-timeline.sh 'tamizdat-distributor serve --root /work/b/' timeline.txt -- \
#     target/release/tamizdat-bench --no-build --sizes 100000 --mirrors 1 \
#     --skip lsyncd,serving,producer --work /work/b
set -euo pipefail
pattern=$1 out=$2
shift 2
[ "${1:-}" = "--" ] && shift
samples=$(mktemp)
trap 'rm -f "$samples"' EXIT
stamp() { while IFS= read -r l; do echo "$(date +%s) $l"; done; }
"$@" 2>&1 | stamp >"$out" &
run=$!
while kill -0 "$run" 2>/dev/null; do
    p=$(pgrep -n -f "$pattern" || true)
    m=$([ -n "$p" ] && grep -E 'VmHWM|VmRSS' /proc/"$p"/status 2>/dev/null | awk '{printf "%s ", $2}' || true)
    [ -n "$m" ] && echo "$(date +%s) $p $m" >>"$samples"
    sleep 0.5
done
wait "$run" || true
{ echo "# samples: epoch pid VmHWM(kB) VmRSS(kB)"; cat "$samples"; } >>"$out"
