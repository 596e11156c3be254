"""What the serving A/B scripts share (`ab-http-threads.py`, `cache-pollution.py`,
`sched-wait.py`, `edit-under-load.py`, `cpu-per-request.py`): a distributor over WORK/site with one mirror enrolled, nginx on the same
tree as the harness configures it, the harness's small page and 1,000-page mix, and wrk's
figures. Ports: distributor 7410 (admin 7411), mirror 7412, nginx 7413."""
import glob, json, os, random, re, signal, subprocess, time, urllib.request

ADMIN = "http://127.0.0.1:7411"
MIRROR_PORT, NGINX_PORT = 7412, 7413


class Procs:
    """Processes started for one script, each in its own session with its log in WORK;
    stopped (SIGTERM, then SIGKILL after 10 s) when the `with` block ends."""

    def __init__(self, work):
        self.work, self.live = work, []

    def __enter__(self):
        return self

    def __exit__(self, *_):
        for p in list(self.live):
            self.stop(p)

    def spawn(self, name, args, env=None):
        log = open(f"{self.work}/{name}.log", "w")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.live.append(p)
        return p

    def stop(self, p):
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        self.live.remove(p)


def get(url):
    return urllib.request.urlopen(url, timeout=5)


def wait_for(url, secs=120):
    """Until `url` answers 200."""
    for _ in range(int(secs / 0.1)):
        try:
            if get(url).status == 200:
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200 in {secs} s")


def start_distributor(procs, bindir, work):
    """A distributor over WORK/site with its state in WORK/dist-state, once its admin API
    answers; returns the state directory."""
    st = f"{work}/dist-state"
    procs.spawn("dist", [f"{bindir}/tamizdat-distributor", "serve", "--root", f"{work}/site", "--state", st,
                         "--listen", "127.0.0.1:7410", "--admin", "127.0.0.1:7411",
                         "--public-url", "ws://127.0.0.1:7410"])
    wait_for(f"{ADMIN}/v1/status")
    return st


def enroll(bindir, state, name):
    """A new mirror's join token."""
    return subprocess.check_output([f"{bindir}/tamizdat-distributor", "mirror", "add", name, "--state", state],
                                   text=True).split()[-1]


def synced(mirror, secs=600):
    """Until the distributor has indexed the tree and `mirror` has acked its head."""
    for _ in range(int(secs / 0.1)):
        try:
            s = json.load(get(f"{ADMIN}/v1/status"))
            m = [q for q in s["mirrors"] if q["name"] == mirror]
            if s["head_seq"] > 0 and m and m[0].get("acked_seq") == s["head_seq"]:
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{mirror} did not catch up in {secs} s")


def start_nginx(procs, work):
    """nginx as the harness runs it (2 workers, sendfile, no access log) over WORK/site."""
    os.makedirs(f"{work}/nginx", exist_ok=True)
    with open(f"{work}/nginx/nginx.conf", "w") as f:
        f.write(f"""worker_processes 2; daemon off; user root; pid {work}/nginx/nginx.pid;
error_log {work}/nginx/error.log; events {{ worker_connections 1024; }}
http {{ include /etc/nginx/mime.types; default_type application/octet-stream; sendfile on;
tcp_nopush on; access_log off; keepalive_requests 1000000; client_body_temp_path {work}/nginx;
proxy_temp_path {work}/nginx; fastcgi_temp_path {work}/nginx; uwsgi_temp_path {work}/nginx;
scgi_temp_path {work}/nginx; server {{ listen 127.0.0.1:{NGINX_PORT}; root {work}/site; }} }}
""")
    return procs.spawn("nginx", ["nginx", "-c", f"{work}/nginx/nginx.conf", "-e", f"{work}/nginx/error.log"])


def articles(work):
    """Every article page of WORK/site, as URL paths, sorted."""
    site = f"{work}/site"
    return [a[len(site):] for a in sorted(glob.glob(f"{site}/20*/*/*/index.html"))]


def small_page(work):
    """The article page nearest 10 KB (the harness's "one page")."""
    return min(articles(work), key=lambda a: abs(os.path.getsize(f"{work}/site{a}") - 10240))


def mix_script(work):
    """The harness's 1,000-page mix (seed 42) as a wrk Lua script in WORK/mix.lua; returns the
    script's path and the pages."""
    random.seed(42)
    pages = articles(work)
    mix = random.sample(pages, min(1000, len(pages)))
    lua = f"{work}/mix.lua"
    with open(lua, "w") as f:
        f.write("paths = {\n" + "".join(f'"{p}",\n' for p in mix) + "}\nmath.randomseed(42)\n"
                "request = function() return wrk.format(nil, paths[math.random(#paths)]) end\n")
    return lua, mix


def wrk_figures(out):
    """Requests per second and the p99 in ms from `wrk --latency`'s output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    v, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
    return rps, float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def median(v):
    """The middle value (the upper of the two middle ones for an even count)."""
    return sorted(v)[len(v) // 2]
