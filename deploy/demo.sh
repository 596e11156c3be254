#!/usr/bin/env bash
# The demo network on this machine: builds tamizdat, starts a distributor over a small sample
# site, enrols two mirrors, prints their URLs, then edits a page and shows it arrive on both,
# then starts the producer and publishes an article through its hook, as a CMS would, and
# shows that arrive on both too.
#
#   ./deploy/demo.sh            run, then keep the network up until Ctrl-C
#   ./deploy/demo.sh --once     run, show the edit arriving, stop (used by CI-style checks)
#
# Needs only the Rust toolchain (cargo) and bash. Everything lives in a temp directory
# (DEMO_DIR to choose one) and every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

once=0
[ "${1:-}" = "--once" ] && once=1

# DEMO_BIN: a directory that already holds the three binaries (the tests use their debug
# build); without it, build them here.
if [ -n "${DEMO_BIN:-}" ]; then
  bin=$DEMO_BIN
else
  echo "==> building (release)"
  cargo build --release --locked -q -p tamizdat-distributor -p tamizdat-mirror -p tamizdat-producer
  bin=target/release
fi

dir=${DEMO_DIR:-$(mktemp -d -t tamizdat-demo.XXXXXX)}
mkdir -p "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Starts a program in the background, logging to $dir/NAME.log; waits for the stdout line
# starting with PREFIX and sets $started to the rest of it (the address it bound). Called
# directly, not in $(...): a subshell would keep the PID from cleanup.
start() {
  local name=$1 prefix=$2; shift 2
  "$@" >"$dir/$name.out" 2>"$dir/$name.log" &
  pids+=($!)
  for _ in $(seq 1 600); do
    local line
    line=$(grep -m1 "^$prefix" "$dir/$name.out" 2>/dev/null || true)
    if [ -n "$line" ]; then started=${line#"$prefix" }; return; fi
    sleep 0.05
  done
  echo "$name did not start; its log:" >&2; cat "$dir/$name.log" >&2; exit 1
}

# POST http://ADDR/PATH with a bearer TOKEN and an ASCII JSON BODY, with bash alone; prints
# the response's body.
post() {
  local host=${1%:*} port=${1##*:}
  exec 3<>"/dev/tcp/$host/$port" || return 1
  printf 'POST /%s HTTP/1.0\r\nHost: demo\r\nAuthorization: Bearer %s\r\n' "$2" "$3" >&3
  printf 'Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' "${#4}" "$4" >&3
  sed '1,/^\r$/d' <&3
  exec 3<&-
}

# GET http://ADDR/PATH with bash alone; prints the body.
get() {
  local host=${1%:*} port=${1##*:}
  exec 3<>"/dev/tcp/$host/$port" || return 1
  printf 'GET /%s HTTP/1.0\r\nHost: demo\r\n\r\n' "$2" >&3
  sed '1,/^\r$/d' <&3
  exec 3<&-
}

echo "==> writing a sample site in $dir/site"
site=$dir/site
mkdir -p "$site/2026/11/mirrors-hold" "$site/css"
cat >"$site/css/site.css" <<'CSS'
body{font-family:Georgia,serif;max-width:40em;margin:2em auto;line-height:1.5;padding:0 1em}
h1{font-family:sans-serif}
CSS
cat >"$site/2026/11/mirrors-hold/index.html" <<'HTML'
<!doctype html><html lang=en><meta charset=utf-8><link rel=stylesheet href=/css/site.css>
<title>Mirrors hold</title><h1>Mirrors hold</h1>
<p>Volunteers in three countries kept the site up while the origin was raided.</p>
HTML
cat >"$site/index.html" <<'HTML'
<!doctype html><html lang=en><meta charset=utf-8><link rel=stylesheet href=/css/site.css>
<title>Independent News</title><h1>Independent News</h1>
<p><a href=/2026/11/mirrors-hold/>Mirrors hold</a></p>
HTML

echo "==> starting the distributor"
start distributor "stream listening on" \
  $bin/tamizdat-distributor serve --root "$site" --state "$dir/dist-state" \
  --listen 127.0.0.1:0 --admin 127.0.0.1:0
stream=$started
admin=$(grep -m1 "^admin listening on" "$dir/distributor.out" | awk '{print $4}')
echo "    mirrors connect to ws://$stream, admin API on http://$admin"

urls=()
for m in mirror-a mirror-b; do
  token=$($bin/tamizdat-distributor mirror add "$m" --state "$dir/dist-state" 2>/dev/null)
  start "$m" "http listening on" \
    $bin/tamizdat-mirror run --join "$token" --root "$dir/$m-root" --state "$dir/$m-state" \
    --listen 127.0.0.1:0
  addr=$started
  urls+=("$addr")
  echo "==> $m enrolled and serving at http://$addr/"
done

wait_for() { # ADDR PATH TEXT: until the mirror serves a body containing TEXT (10 s at most)
  for _ in $(seq 1 2000); do
    if get "$1" "$2" 2>/dev/null | grep -q "$3"; then return 0; fi
    sleep 0.005
  done
  echo "timed out waiting for '$3' on $1/$2" >&2; return 1
}
for u in "${urls[@]}"; do wait_for "$u" "" "Independent News"; done
echo "==> both mirrors serve the site"

echo "==> editing the front page (temp file + rename, as a CMS does)"
t0=$(date +%s%N)
sed 's/<h1>Independent News<\/h1>/<h1>Independent News<\/h1><p><b>Correction published.<\/b><\/p>/' \
  "$site/index.html" >"$site/.tmp-index.html"
mv "$site/.tmp-index.html" "$site/index.html"
for u in "${urls[@]}"; do wait_for "$u" "" "Correction published"; done
t1=$(date +%s%N)
echo "    the edit is served by both mirrors $(( (t1 - t0) / 1000000 )) ms later (including this script's polling)"
echo

echo "==> starting the producer (the CMS's hook) over the same tree"
start producer "listening on" \
  $bin/tamizdat-producer serve --out "$site" --state "$dir/producer-state" \
  --listen 127.0.0.1:0 --site-url "http://${urls[0]}" --site-title "Independent News"
hook=${started#http://}
token=$(cat "$dir/producer-state/token")
echo "    POST http://$hook/v1/publish with the bearer token in $dir/producer-state/token"
echo "==> publishing an article through the hook"
t0=$(date +%s%N)
answer=$(post "$hook" v1/publish "$token" '{"slug": "volunteers-keep-the-mirrors-up",
  "title": "Volunteers keep the mirrors up", "tags": ["mirrors"],
  "published_at": "2026-12-03T09:00:00Z",
  "body": "Published through the **producer hook**: rendered to disk at save time, then carried to every mirror."}')
t1=$(date +%s%N)
case $answer in
  *'"written"'*) ;;
  *) echo "the hook refused the article: $answer" >&2; exit 1 ;;
esac
echo "    the hook answered in $(( (t1 - t0) / 1000000 )) ms: pages rendered, durable, variants made"
for u in "${urls[@]}"; do
  wait_for "$u" "2026/12/volunteers-keep-the-mirrors-up/" "Volunteers keep the mirrors up"
  wait_for "$u" "" "Volunteers keep the mirrors up"
done
t2=$(date +%s%N)
echo "    the article and the new front page are served by both mirrors $(( (t2 - t0) / 1000000 )) ms after the POST"
echo "    http://${urls[0]}/2026/12/volunteers-keep-the-mirrors-up/"
echo
$bin/tamizdat-distributor lag --admin "http://$admin"
echo
if [ $once = 1 ]; then exit 0; fi
echo "Try: edit files under $site and reload http://${urls[0]}/ or http://${urls[1]}/"
echo "     or publish: curl -H \"Authorization: Bearer \$(cat $dir/producer-state/token)\" \\"
echo "       -d '{\"slug\": \"hello\", \"title\": \"Hello\", \"body\": \"First post.\"}' http://$hook/v1/publish"
echo "     $bin/tamizdat-distributor lag --admin http://$admin"
echo "Ctrl-C stops the network."
wait
