#!/usr/bin/env bash
# Checks the systemd units in deploy/ with `systemd-analyze verify` (syntax, known
# directives, sandboxing options), and the example configs with the binaries' own parser.
# `verify` also insists that ExecStart's program exists: the units name /usr/local/bin/..., so
# each is checked in a temporary copy pointing at the binaries built in the target directory.
# Usage: deploy/verify.sh [TARGET_DIR]   (default: $CARGO_TARGET_DIR or ./target; debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}}/debug"
for b in tamizdat-distributor tamizdat-mirror tamizdat-producer; do
    [[ -x "$bin/$b" ]] || { echo "no $bin/$b: cargo build --workspace first" >&2; exit 1; }
done
bin="$(cd "$bin" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for unit in deploy/*.service; do
    sed "s|/usr/local/bin/|$bin/|g" "$unit" >"$tmp/$(basename "$unit")"
done
# systemd-analyze prints problems and exits non-zero on errors; warnings fail too.
out="$(systemd-analyze verify --man=no --generators=no "$tmp"/*.service 2>&1)" || {
    echo "$out" >&2
    exit 1
}
if [[ -n "$out" ]]; then
    echo "$out" >&2
    echo "systemd-analyze printed warnings" >&2
    exit 1
fi
echo "systemd-analyze verify: $(ls deploy/*.service | wc -l) units OK"

# The example configs parse: --help after --config makes the binary read the file, map every
# key to a flag and validate the flags, without starting anything.
"$bin/tamizdat-distributor" serve --config deploy/distributor.toml --help >/dev/null
"$bin/tamizdat-mirror" run --config deploy/mirror.toml --help >/dev/null
echo "example configs parse"
