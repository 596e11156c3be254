#!/bin/bash
cd /work/main
for r in 1 2; do
 for v in old new nocache; do
  case $v in old) cp /work/bin-old/tamizdat-mirror target/release/;; *) cp /work/bin-new/tamizdat-mirror target/release/;; esac
  E=""; [ $v = nocache ] && E="TAMIZDAT_HOT_CACHE_MB=0"
  sync
  env $E target/release/tamizdat-bench --no-build --sizes 10000 --mirrors 1 --skip lsyncd,serving,producer --out /work/rss-$v-$r.md --runs /work/rss-$v-$r-runs > /work/rss-$v-$r.log 2>&1
 done
done
cp /work/bin-new/tamizdat-mirror target/release/
echo done > /work/rss-ab.done
