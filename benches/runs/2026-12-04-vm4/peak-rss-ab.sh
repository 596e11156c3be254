cd /work/main
for r in 1 2; do for v in old new; do
  W=/work/ab-$v-$r
  echo "== $v round $r" 
  bash benches/peak-rss.sh /work/bin-$v /work/site100k $W 2>&1 | tail -2
  grep -c . $W/m.rss >/dev/null
done; done
