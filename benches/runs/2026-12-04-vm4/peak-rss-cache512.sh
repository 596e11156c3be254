cd /work/main
for r in 1 2; do for v in new c512; do
  W=/work/ab2-$v-$r
  echo "== $v round $r"
  bash benches/peak-rss.sh /work/bin-$v /work/site100k $W 2>&1 | tail -2
done; done
