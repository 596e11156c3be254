# The loop behind "207 µs a pair" (BENCHMARKS.md, run 21): python3 mkdir-loop.py NEW_DIR
# (under perf record, its profile led with find_get_block_common and recently_deleted).
import os,time,sys
base=sys.argv[1]
t=time.time()
n=0
for y in range(2000,2010):
  for m in range(1,13):
    d=f"{base}/{y}/{m:02}"
    os.makedirs(d)
    for s in range(85):
      os.mkdir(f"{d}/slug-{s}")
      with open(f"{d}/slug-{s}/index.html","w") as f: f.write("x"*10000)
      n+=1
print(f"{n} dirs+files {(time.time()-t)/n*1e6:.1f} us each")
