import os, random, sys, time, urllib.request, glob, http.client
port, site, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
pages = sorted(glob.glob(f"{site}/20*/*/*/index.html"))
rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
conn = http.client.HTTPConnection("127.0.0.1", port)
lat = []
for i in range(n + 10):
    p = rng.choice(pages)
    rel = p[len(site):]
    body = (f"<html><body>edit {i} {time.time_ns()} " + "x" * rng.randint(4000, 20000) + "</body></html>").encode()
    tmp = os.path.join(os.path.dirname(p), f".tmp-index.html.{i}")
    with open(tmp, "wb") as f:
        f.write(body)
    t0 = time.perf_counter()
    os.rename(tmp, p)
    while True:
        conn.request("GET", rel)
        r = conn.getresponse(); b = r.read()
        if b == body:
            break
        time.sleep(0.0002)
    if i >= 10:
        lat.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.005)
lat.sort()
print(f"n={len(lat)} p50 {lat[len(lat)//2]:.2f} ms p90 {lat[int(len(lat)*0.9)]:.2f} p99 {lat[int(len(lat)*0.99)]:.2f}")
