#!/bin/bash
# One page, wrk -t2 -c64 p99 with the mirror's http-0 thread at nice 0, then at nice -5 (root), two rounds.
W=${1:?usage: ab-serving-nice.sh WORK (WORK/site a tree, e.g. tamizdat-bench gen WORK/site --articles 10000)}; B=${BIN:-target/release}
$B/tamizdat-distributor serve --root $W/site --state $W/dist-state --listen 127.0.0.1:7410 --admin 127.0.0.1:7411 --public-url ws://127.0.0.1:7410 >$W/nice-dist.log 2>&1 &
D=$!
sleep 1
TOK=$($B/tamizdat-distributor mirror add n$(date +%s%N) --state $W/dist-state | tail -1 | awk '{print $NF}')
$B/tamizdat-mirror run --join $TOK --root $W/root --state $W/state --listen 127.0.0.1:7412 >$W/nice-mirror.log 2>&1 &
M=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:7412/.well-known/tamizdat/health >/dev/null && break; sleep 0.2; done
sleep 2
P=$(python3 -c "
import glob,os
a=sorted(glob.glob('$W/site/20*/*/*/index.html'))
print(min(a,key=lambda x:abs(os.path.getsize(x)-10240))[len('$W/site'):])")
T=$(grep -l "^Name:.*http-0" /proc/$M/task/*/status | head -1 | cut -d/ -f5)
wrk -t2 -c64 -d1s http://127.0.0.1:7412$P >/dev/null
for r in 1 2; do
  renice -n 0 -p $T >/dev/null; echo "nice 0: $(wrk -t2 -c64 -d5s --latency http://127.0.0.1:7412$P | grep -E '^\s+(50|99)%|Requests/sec' | tr -s ' ' | tr '\n' ' ')"
  renice -n -5 -p $T >/dev/null; echo "nice -5: $(wrk -t2 -c64 -d5s --latency http://127.0.0.1:7412$P | grep -E '^\s+(50|99)%|Requests/sec' | tr -s ' ' | tr '\n' ' ')"
done
kill $M $D; wait
