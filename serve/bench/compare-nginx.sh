#!/usr/bin/env bash
# Serves the same generated tree with tamizdat-serve (examples/serve-dir) and with nginx
# (Debian's package; 2 workers, sendfile on, access log off), then loads each with wrk on
# loopback: one 10 KB page, a random mix of 1,000 pages, a 5 MB file. Prints a markdown table
# of requests/s, p99 latency and peak RSS.
#
#   apt-get install wrk nginx
#   serve/bench/compare-nginx.sh            # DURATION=10s CONNS=64 THREADS=2 by default
#
# Needs the example built first:
#   CARGO_TARGET_DIR=... cargo build --release -p tamizdat-serve --example serve-dir
set -euo pipefail

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
TARGET=${CARGO_TARGET_DIR:-target}
SERVE_BIN=${SERVE_BIN:-$TARGET/release/examples/serve-dir}
HERE=$(cd "$(dirname "$0")" && pwd)

work=$(mktemp -d /tmp/tz-serve-bench.XXXXXX)
chmod 755 "$work"  # nginx workers run as www-data
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

python3 - "$work/site" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(7)
words = "mirror volunteers published report police station community radio arrests".split()
def page(n):
    body = []
    size = 0
    while size < n:
        p = "<p>" + " ".join(rng.choice(words) for _ in range(60)) + "</p>\n"
        body.append(p); size += len(p)
    s = "<!doctype html><html><head><title>t</title></head><body>" + "".join(body) + "</body></html>\n"
    return s[:n].encode()
os.makedirs(os.path.join(root, "mix"), exist_ok=True)
open(os.path.join(root, "one.html"), "wb").write(page(10 * 1024))
for i in range(1000):
    open(os.path.join(root, "mix", f"p{i:04d}.html"), "wb").write(page(rng.randint(2_000, 30_000)))
open(os.path.join(root, "big.bin"), "wb").write(rng.randbytes(5 * 1024 * 1024))
PY
chmod -R a+rX "$work/site"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tz_port=$(free_port)
sh_port=$(free_port)
ng_port=$(free_port)

# spawn_threads: one current-thread runtime per thread (the default of the example)
"$SERVE_BIN" "$work/site" "127.0.0.1:$tz_port" 2 2>"$work/serve.log" &
tz_pid=$!
pids+=("$tz_pid")
# run() on one 2-worker multi-thread runtime
TZ_RUNTIME=shared "$SERVE_BIN" "$work/site" "127.0.0.1:$sh_port" 2 2>"$work/serve-shared.log" &
sh_pid=$!
pids+=("$sh_pid")

mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    server {
        listen 127.0.0.1:$ng_port;
        root $work/site;
    }
}
CONF
nginx -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
pids+=("$!")

for port in "$tz_port" "$sh_port" "$ng_port"; do
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/one.html" && break
        sleep 0.1
    done
done

cat >"$work/mix.lua" <<'LUA'
local paths = {}
for i = 0, 999 do paths[#paths + 1] = string.format("/mix/p%04d.html", i) end
math.randomseed(42)
request = function() return wrk.format(nil, paths[math.random(#paths)]) end
LUA

rss_kb() { # peak RSS (VmHWM) of a pid and its children, in KB
    local total=0
    for p in "$1" $(pgrep -P "$1" || true); do
        v=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + v))
    done
    echo "$total"
}

run() { # name port path [script]
    local out
    if [ -n "${4:-}" ]; then
        out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$4" "http://127.0.0.1:$2$3")
    else
        out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$2$3")
    fi
    echo "$out" >>"$work/wrk.log"
    local rps p99 errs
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {printf "%s ", $0}')
    echo "$rps|$p99|$errs"
}

echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency, loopback, $(nproc) cores, $(nginx -v 2>&1)"
echo
echo "| scenario | server | requests/s | p99 latency | notes |"
echo "|---|---|---:|---:|---|"
for scenario in "one 10 KB page|/one.html|" "mix of 1,000 pages|/|$work/mix.lua" "5 MB file|/big.bin|"; do
    IFS='|' read -r name path script <<<"$scenario"
    # warm both (page cache, hot cache, hashes)
    wrk -t1 -c4 -d1s ${script:+-s "$script"} "http://127.0.0.1:$tz_port$path" >/dev/null
    wrk -t1 -c4 -d1s ${script:+-s "$script"} "http://127.0.0.1:$sh_port$path" >/dev/null
    wrk -t1 -c4 -d1s ${script:+-s "$script"} "http://127.0.0.1:$ng_port$path" >/dev/null
    for srv in "tamizdat spawn_threads" "tamizdat run (shared rt)" nginx; do
        case "$srv" in
            nginx) port=$ng_port ;;
            *shared*) port=$sh_port ;;
            *) port=$tz_port ;;
        esac
        IFS='|' read -r rps p99 errs <<<"$(run "$srv" "$port" "$path" "$script")"
        echo "| $name | $srv | $rps | $p99 | $errs|"
    done
done
echo
echo "peak RSS: tamizdat-serve spawn_threads $(( $(rss_kb "$tz_pid") / 1024 )) MB, run $(( $(rss_kb "$sh_pid") / 1024 )) MB; nginx (master + workers) $(( $(rss_kb "$(cat "$work/nginx/nginx.pid")") / 1024 )) MB"
