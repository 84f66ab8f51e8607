#!/usr/bin/env python3
"""The numbers timonel claims, measured in one run (called by scripts/bench.sh).

Every figure is the median of several runs; every comparison is a ratio of two medians measured
side by side in this run. Nothing here is hard-coded but the goals. Prints a table and writes a
JSON report. Uses the real dockerd and the k3s stand-in (a test double of k3s, never k3s).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mirror import Mirror, publish  # noqa: E402

VERSION = "v1.31.2+k3s1"
# The figures before the current round of work, for the "previous" column when this machine has
# no earlier report of its own (a fresh clone). Replace it with a new report.json's goals when a
# round lands.
BASELINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baseline.json")
MB = 1 << 20


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else None


class Env:
    """A sandbox: its own TIMONEL_HOME and KUBECONFIG, a binary mirror."""

    def __init__(self, work, name, mirror_url):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.env = dict(os.environ)
        self.env.update(
            TIMONEL_HOME=os.path.join(self.dir, "home"),
            KUBECONFIG=os.path.join(self.dir, "kubeconfig"),
            TIMONEL_BINARY_MIRROR=mirror_url,
            TIMONEL_NO_PROGRESS="1",
            NO_COLOR="1",
        )
        for k in ("TIMONEL_PROFILE", "TIMONEL_DRIVER", "TIMONEL_LOG"):
            self.env.pop(k, None)


class Bench:
    def __init__(self, timonel, work, runs):
        self.timonel = timonel
        self.work = work
        self.runs = runs
        self.seq = 0
        self.created = set()

    def profile(self, tag):
        self.seq += 1
        return f"bench-{tag}-{os.getpid() % 10000}-{self.seq}"

    def run(self, env, args, check=True, prefix=()):
        """Runs timonel; returns (wall seconds, exit code, stderr lines with arrival times)."""
        cmd = [*prefix, self.timonel, *args]
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = []
        for raw in p.stderr:
            lines.append((time.perf_counter() - t0, raw.decode(errors="replace").rstrip("\n")))
        p.stdout.read()
        code = p.wait()
        wall = time.perf_counter() - t0
        if check and code != 0:
            text = "\n".join(line for _, line in lines)
            raise RuntimeError(f"timonel {' '.join(args)} exited {code}:\n{text}")
        return wall, code, lines

    def start(self, env, profile, extra=(), prefix=()):
        self.created.add((env.dir, profile))
        args = ["start", "-v", "-p", profile, "--driver", "docker",
                "--kubernetes-version", VERSION, *extra]
        return self.run(env, args, prefix=prefix)

    def delete(self, env, profile):
        wall, _, _ = self.run(env, ["delete", "-p", profile])
        self.created.discard((env.dir, profile))
        return wall

    def cleanup(self, envs):
        for env in envs:
            for d, profile in list(self.created):
                if d == env.dir:
                    self.run(env, ["delete", "-p", profile], check=False)
                    self.created.discard((d, profile))


STEP_NAMES = [
    ("sha256 verified", "artifacts (download+verify)"),
    ("Resolved k3s", "resolve version"),
    ("Node image", "node image"),
    ("more node(s) running", "other nodes"),
    ("running (", "first node (create+start)"),
    ("Fetched the admin credentials", "credentials"),
    ("Cluster ready", "readiness"),
    ("Context `", "kubeconfig merge"),
]


def phases(lines, wall):
    """Splits a `start -v` run at its step lines, timed by when each line arrived.

    `… X` opens a step, `✓ Y (1.2s)` closes it; the time before the first step is process start,
    lock, profile and driver probe; time between steps and after the last line is bookkeeping.
    Also keeps the durations timonel printed, as a cross-check.
    """
    out = {}
    printed = {}
    opened = None
    last = 0.0
    first = None
    sub = None  # (name, arrival) of the sub-step line in progress
    for ts, line in lines:
        if sub is not None:
            key = "  · " + sub[0]
            out[key] = out.get(key, 0.0) + (ts - sub[1])
            sub = None
        if line.startswith("  ") and line.strip():
            # A sub-step of the step in progress: "creating container …", "copying 2 file(s) …".
            sub = (" ".join(line.split()[:2]), ts)
        if line.startswith("… "):
            if first is None:
                first = ts
                out["startup+driver probe"] = ts
            else:
                out["between steps"] = out.get("between steps", 0.0) + (ts - last)
            opened = ts
            last = ts
        elif line.startswith("✓ "):
            name = next((n for k, n in STEP_NAMES if k in line), line[2:40])
            begin = opened if opened is not None else last
            out[name] = out.get(name, 0.0) + (ts - begin)
            m = re.search(r"\((\d+\.\d)s\)$", line)
            if m:
                printed[name] = float(m.group(1))
            opened = None
            last = ts
    out["exit"] = wall - last
    return out, printed


def hyperfine(commands, env, runs, out_json):
    args = ["hyperfine", "-N", "--style", "none", "--warmup", "3", "--runs", str(runs),
            "--export-json", out_json]
    for name, cmd in commands:
        args += ["-n", name, cmd]
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
    with open(out_json) as f:
        data = json.load(f)
    return {r["command"]: r["median"] for r in data["results"]}


def leftovers(profile):
    found = []
    for what in (["ps", "-aq"], ["volume", "ls", "-q"], ["network", "ls", "-q"]):
        out = subprocess.run(["docker", *what, "--filter", f"label=dev.timonel.cluster={profile}"],
                             capture_output=True, text=True).stdout.split()
        found += out
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timonel", required=True)
    ap.add_argument("--standin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--download-mb", type=int, default=300)
    ap.add_argument("--rss-mb", type=int, default=350)
    ap.add_argument("--process-counts", default="", help="JSON lines from the driver examples")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="work-", dir=os.path.dirname(os.path.abspath(a.out)))
    bench = Bench(a.timonel, work, a.runs)
    report = {"runs": a.runs, "version": VERSION, "host": os.uname().nodename,
              "cpus": os.cpu_count(), "figures": {}, "phases": {}, "goals": []}
    fig = report["figures"]
    envs = []
    mirrors = []
    try:
        log("publishing mirrors (small airgap; ~%d MB; ~%d MB)" % (a.download_mb, a.rss_mb))
        small_root = os.path.join(work, "mirror-small")
        publish(small_root, VERSION, a.standin, 64)
        big_root = os.path.join(work, "mirror-big")
        publish(big_root, VERSION, a.standin, a.download_mb * MB - os.path.getsize(a.standin))
        rss_root = os.path.join(work, "mirror-rss")
        publish(rss_root, VERSION, a.standin, a.rss_mb * MB - os.path.getsize(a.standin))
        small, big, rssm = Mirror(small_root), Mirror(big_root), Mirror(rss_root)
        mirrors = [small, big, rssm]

        # ---- warm cache, then start/stop/resume/delete, 1 vs 3 nodes, side by side ----
        warm = Env(work, "warm", small.url)
        envs.append(warm)
        log("filling the cache and the node image (not measured)")
        p = bench.profile("warmup")
        bench.start(warm, p)
        bench.delete(warm, p)
        before = small.count()
        one, three, stop, resume, delete1, delete3 = [], [], [], [], [], []
        phase_runs = []
        for i in range(a.runs):
            log(f"lifecycle run {i + 1}/{a.runs}")
            p = bench.profile("one")
            wall, _, lines = bench.start(warm, p)
            one.append(wall)
            phase_runs.append(phases(lines, wall))
            stop.append(bench.run(warm, ["stop", "-p", p])[0])
            resume.append(bench.run(warm, ["start", "-p", p])[0])
            delete1.append(bench.delete(warm, p))
            left = leftovers(p)
            if left:
                raise RuntimeError(f"delete left {left} for {p}")
            p = bench.profile("three")
            three.append(bench.start(warm, p, ["--nodes", "3"])[0])
            delete3.append(bench.delete(warm, p))
        cache_hit_requests = small.count() - before
        # The engine's own floor for 3 nodes / 1 node: the same container starts timonel asks
        # for, bare (no timonel), one alone and three at once.
        engine_one, engine_three = [], []
        for i in range(a.runs):
            engine_one.append(engine_starts(1, sock_path()))
            engine_three.append(engine_starts(3, sock_path()))
        fig["engine_start_1_s"] = median(engine_one)
        fig["engine_start_3_s"] = median(engine_three)
        fig["engine_start_3_vs_1_ratio"] = median(engine_three) / median(engine_one)
        fig["start_1_node_s"] = median(one)
        fig["start_3_nodes_s"] = median(three)
        fig["start_3_vs_1_ratio"] = median(three) / median(one)
        fig["stop_s"] = median(stop)
        fig["resume_s"] = median(resume)
        fig["delete_1_node_s"] = median(delete1)
        fig["delete_3_nodes_s"] = median(delete3)
        fig["cache_hit_requests"] = cache_hit_requests
        fig["start_1_node_samples_s"] = one
        fig["start_3_nodes_samples_s"] = three
        names = []
        for measured, _ in phase_runs:
            names += [n for n in measured if n not in names]
        report["phases"] = {
            n: {"measured_s": median([m.get(n, 0.0) for m, _ in phase_runs]),
                "printed_s": median([pr[n] for _, pr in phase_runs if n in pr]) if any(n in pr for _, pr in phase_runs) else None}
            for n in names
        }

        # ---- ip / status / version vs a raw Docker API inspect ----
        log("ip / status / version vs the Docker API (hyperfine)")
        p = bench.profile("query")
        bench.start(warm, p)
        sock = sock_path()
        q = 30 if a.runs >= 3 else 10
        medians = hyperfine([
            ("inspect", f"curl -sS -o /dev/null --unix-socket {sock} http://localhost/containers/timonel-{p}/json"),
            ("ip", f"{a.timonel} ip -p {p}"),
            ("status", f"{a.timonel} status -o json -p {p}"),
            ("version", f"{a.timonel} version"),
        ], warm.env, q, os.path.join(work, "hyperfine.json"))
        bench.delete(warm, p)
        fig["docker_api_inspect_s"] = medians["inspect"]
        fig["ip_s"] = medians["ip"]
        fig["status_s"] = medians["status"]
        fig["version_s"] = medians["version"]
        fig["ip_vs_inspect_ratio"] = medians["ip"] / medians["inspect"]
        fig["status_vs_inspect_ratio"] = medians["status"] / medians["inspect"]

        # ---- artifacts: download+verify vs curl + sha256sum, side by side ----
        log(f"artifacts: {a.download_mb} MB download+verify, timonel vs curl+sha256sum")
        tim_dl, curl_dl, curl_openssl, curl_only, cold_wall = [], [], [], [], []
        dl_runs = max(3, a.runs // 2 + 1) if a.runs >= 3 else a.runs
        for i in range(dl_runs):
            d = os.path.join(work, f"curl-{i}")
            os.makedirs(d)
            base = f"{big.url}/{VERSION.replace('+', '%2B')}"
            files = ["sha256sum-amd64.txt", "k3s", "k3s-airgap-images-amd64.tar.zst"]
            cmd = ["curl", "-fsS"]
            for n in files:
                cmd += ["-o", os.path.join(d, n), f"{base}/{n}"]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            t1 = time.perf_counter()
            curl_only.append(t1 - t0)
            subprocess.run(["sha256sum", "-c", "--quiet", "sha256sum-amd64.txt"], cwd=d, check=True)
            t2 = time.perf_counter()
            curl_dl.append(t2 - t0)
            if shutil.which("openssl"):
                # A faster hash than coreutils' (SHA extensions): the stronger baseline.
                subprocess.run(["openssl", "dgst", "-sha256", *files], cwd=d, check=True,
                               stdout=subprocess.DEVNULL)
                curl_openssl.append((t1 - t0) + (time.perf_counter() - t2))
            shutil.rmtree(d)

            env = Env(work, f"cold-{i}", big.url)
            p = bench.profile("cold")
            wall, _, lines = bench.start(env, p)
            measured, _ = phases(lines, wall)
            tim_dl.append(measured["artifacts (download+verify)"])
            cold_wall.append(wall)
            bench.delete(env, p)
            shutil.rmtree(env.dir)
        fig["download_verify_s"] = median(tim_dl)
        fig["curl_sha256sum_s"] = median(curl_dl)
        fig["download_vs_curl_ratio"] = median(tim_dl) / median(curl_dl)
        fig["curl_openssl_s"] = median(curl_openssl)
        fig["download_vs_curl_openssl_ratio"] = (
            median(tim_dl) / median(curl_openssl) if curl_openssl else None)
        fig["download_mb"] = a.download_mb
        # The first start on a machine: besides the empty cache, the engine has neither the
        # node image nor the security probe's image, and no verdict is remembered (a new home).
        # The image build (the 300 MB into the engine's store) follows the download; the probe
        # runs beside both.
        first = []
        for i in range(max(1, dl_runs - 1)):
            subprocess.run(["docker", "rmi", "-f", "timonel/k3s:" + VERSION.replace("+", "-"),
                            "timonel/probe:1"], capture_output=True)
            env = Env(work, f"first-{i}", big.url)
            p = bench.profile("first")
            first.append(bench.start(env, p)[0])
            bench.delete(env, p)
            shutil.rmtree(env.dir)
        fig["first_start_on_machine_s"] = median(first)
        fig["first_start_vs_curl_ratio"] = median(first) / median(curl_only)
        # A warm start whose cache holds the same big airgap tarball: what a real one costs
        # (the image carries the tarball; nodes link it, they do not copy it).
        env = Env(work, "warm-big", big.url)
        envs.append(env)
        p = bench.profile("bigwarm")
        bench.start(env, p)
        bench.delete(env, p)
        big_warm = []
        for i in range(a.runs):
            p = bench.profile("bigwarm")
            big_warm.append(bench.start(env, p)[0])
            bench.delete(env, p)
        fig["start_1_node_big_airgap_s"] = median(big_warm)
        # The whole cold start (empty cache) against only fetching the same files with curl:
        # whatever does not overlap with the download shows up here.
        fig["cold_start_s"] = median(cold_wall)
        fig["curl_download_s"] = median(curl_only)
        fig["cold_start_vs_curl_ratio"] = median(cold_wall) / median(curl_only)
        # What the cold start adds to the download alone, beside what a warm start takes: when
        # nothing waits that could overlap, the excess is at most a warm start.
        fig["cold_start_minus_curl_s"] = median(cold_wall) - median(curl_only)

        # ---- peak RSS of a start that streams ~350 MB of artifacts ----
        log(f"peak RSS of a cold start streaming {a.rss_mb} MB of artifacts")
        rss = []
        for i in range(min(3, max(1, a.runs))):
            env = Env(work, f"rss-{i}", rssm.url)
            p = bench.profile("rss")
            out = os.path.join(env.dir, "time.txt")
            bench.start(env, p, prefix=("/usr/bin/time", "-v", "-o", out))
            with open(out) as f:
                kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read()).group(1))
            rss.append(kb / 1024)
            bench.delete(env, p)
            shutil.rmtree(env.dir)
        fig["start_peak_rss_mb"] = median(rss)
        fig["start_peak_rss_samples_mb"] = rss
        fig["rss_artifacts_mb"] = a.rss_mb

        # ---- external processes per ip/status for the VM drivers (simulators) ----
        counts = {}
        for line in a.process_counts.splitlines():
            if line.strip().startswith("{"):
                c = json.loads(line)
                counts[c["driver"]] = c
        fig["vm_driver_processes"] = counts
    finally:
        bench.cleanup(envs)
        for m in mirrors:
            m.close()
        shutil.rmtree(work, ignore_errors=True)

    goals = report["goals"]
    previous = previous_goals(a.out) or previous_goals(BASELINE)

    def goal(name, value, limit, unit):
        met = value is not None and value <= limit
        goals.append({"figure": name, "value": value, "goal": limit, "unit": unit, "met": met,
                      "previous": previous.get(name)})

    goal("start, 1 node, warm cache (wall)", fig["start_1_node_s"], 0.5, "s")
    goal("start 3 nodes / 1 node", fig["start_3_vs_1_ratio"], 1.2, "x")
    goal("timonel version (process start)", fig["version_s"], 0.005, "s")
    goal("cold start / curl of the same files", fig["cold_start_vs_curl_ratio"], 1.1, "x")
    goal("ip / Docker API inspect", fig["ip_vs_inspect_ratio"], 1.5, "x")
    goal("status / Docker API inspect", fig["status_vs_inspect_ratio"], 1.5, "x")
    goal("download+verify / curl+sha256sum", fig["download_vs_curl_ratio"], 1.0, "x")
    goal("mirror requests on a cache hit", fig["cache_hit_requests"], 0, "requests")
    goal("peak RSS of start streaming artifacts", fig["start_peak_rss_mb"], 40, "MB")
    for drv, c in sorted(fig["vm_driver_processes"].items()):
        goal(f"{drv}: processes per ip", c["ip"], 1, "processes")
        goal(f"{drv}: processes per state (status, per node)", c["state"], 1, "processes")
    if not fig["vm_driver_processes"]:
        goals.append({"figure": "VM driver process counts", "value": None, "goal": 1,
                      "unit": "processes", "met": False, "note": "not measured"})

    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    print_table(report)
    return 0 if all(g["met"] for g in goals) else 3


def sock_path():
    """The Docker daemon's unix socket (DOCKER_HOST when it names one)."""
    host = os.environ.get("DOCKER_HOST", "")
    return host[len("unix://"):] if host.startswith("unix://") else "/var/run/docker.sock"


def engine_starts(n, sock):
    """Seconds for the engine to start `n` node-like containers at once (created beforehand:
    the node image, a published loopback port, a volume, tmpfs /run), asked over its API."""
    image = "timonel/k3s:" + VERSION.replace("+", "-")
    ids = []
    try:
        for _ in range(n):
            out = subprocess.run(
                ["docker", "create", "--cap-add", "SYS_ADMIN", "--tmpfs", "/run",
                 "-p", "127.0.0.1::6443", "-v", "/var/lib/rancher/k3s",
                 "--label", "dev.timonel.bench=engine", image, "--version"],
                check=True, capture_output=True, text=True)
            ids.append(out.stdout.strip())
        t0 = time.perf_counter()
        procs = [subprocess.Popen(
            ["curl", "-fsS", "-X", "POST", "--unix-socket", sock,
             f"http://localhost/containers/{cid}/start"]) for cid in ids]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - t0
        if any(codes):
            raise RuntimeError(f"starting bare containers failed: {codes}")
        return wall
    finally:
        if ids:
            subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True)


def previous_goals(path):
    """The goals' values of the report this run replaces, by figure name ({} when none)."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return {}
    return {g["figure"]: g.get("value") for g in old.get("goals", []) if "figure" in g}


def print_table(r):
    f = r["figures"]
    ms = lambda s: f"{s * 1000:8.1f} ms"  # noqa: E731
    print(f"\ntimonel benchmarks — median of {r['runs']} runs, {r['cpus']} CPUs, k3s stand-in {r['version']}")
    print("\n  start phases (1 node, warm cache; timed by when each -v step line arrived; printed in ()):")
    for name, v in r["phases"].items():
        printed = f"  ({v['printed_s']:.1f}s)" if v["printed_s"] is not None else ""
        print(f"    {name:34} {ms(v['measured_s'])}{printed}")
    rows = [
        ("start, 1 node (warm cache)", ms(f["start_1_node_s"])),
        ("start, 3 nodes", ms(f["start_3_nodes_s"])),
        ("stop", ms(f["stop_s"])),
        ("start (resume)", ms(f["resume_s"])),
        ("delete, 1 node / 3 nodes", f"{ms(f['delete_1_node_s'])} / {ms(f['delete_3_nodes_s']).strip()}"),
        ("Docker API inspect (curl, unix socket)", ms(f["docker_api_inspect_s"])),
        ("timonel ip", ms(f["ip_s"])),
        ("timonel status -o json", ms(f["status_s"])),
        ("timonel version (process start)", ms(f["version_s"])),
        (f"download+verify {f['download_mb']} MB (timonel)", ms(f["download_verify_s"])),
        (f"curl + sha256sum {f['download_mb']} MB", ms(f["curl_sha256sum_s"])),
        (f"cold start, {f['download_mb']} MB of artifacts", ms(f["cold_start_s"])),
        (f"curl of the same {f['download_mb']} MB", ms(f["curl_download_s"])),
        ("cold start minus the curl (info)", ms(f["cold_start_minus_curl_s"])),
        ("first start on a machine: no node image either (info)",
         f"{ms(f['first_start_on_machine_s'])}  ratio {f['first_start_vs_curl_ratio']:.2f}x"),
        (f"start, 1 node, {f['download_mb']} MB airgap cached (info)", ms(f["start_1_node_big_airgap_s"])),
        ("engine alone: start 1 / 3 containers (info)",
         f"{ms(f['engine_start_1_s'])} / {ms(f['engine_start_3_s']).strip()}  ratio {f['engine_start_3_vs_1_ratio']:.2f}x"),
    ]
    if f.get("curl_openssl_s"):
        rows.append((f"curl + openssl dgst {f['download_mb']} MB (info)",
                     f"{ms(f['curl_openssl_s'])}  ratio {f['download_vs_curl_openssl_ratio']:.2f}x"))
    rows.append(("peak RSS, start streaming %d MB" % f["rss_artifacts_mb"],
                 f"{f['start_peak_rss_mb']:8.1f} MB"))
    print("\n  figures:")
    for name, v in rows:
        print(f"    {name:44} {v}")
    print("\n  goals:")
    for g in r["goals"]:
        v = g["value"]
        shown = "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
        pv = g.get("previous")
        before = "" if pv is None else (f"  previous {pv:.3f}" if isinstance(pv, float) else f"  previous {pv}")
        print(f"    {'MET   ' if g['met'] else 'MISSED'} {g['figure']:44} {shown:>9} {g['unit']:10} (goal ≤ {g['goal']}){before}")
    print()


if __name__ == "__main__":
    sys.exit(main())
