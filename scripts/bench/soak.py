#!/usr/bin/env python3
"""Soak accounting (called by scripts/soak.sh).

Cycles of start / stop / start / delete of a 1-node and a 3-node profile, with the benchmark's
sandbox and mirror (bench.py, mirror.py). Counts what could leak before the first cycle (after a
warm-up that fills the cache and builds the node image) and after the last, and fails when
anything grew. The profiles keep their names across cycles, as a user's do.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Bench, Env  # noqa: E402
from mirror import Mirror, publish  # noqa: E402

LABEL = "dev.timonel.cluster"
VERSION = "v1.31.2+k3s1"
VERSION_TAG = VERSION.replace("+", "-")


def log(msg):
    print(f"soak: {msg}", file=sys.stderr, flush=True)

USER_KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: work
  cluster:
    server: https://work.example:6443
contexts:
- name: work
  context:
    cluster: work
    user: work
current-context: work
users:
- name: work
  user:
    token: not-a-real-token
"""


def docker_lines(*args):
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def labelled(kind, prefix):
    """Docker objects of `kind` whose cluster label starts with `prefix`."""
    fmt = "{{.Label \"%s\"}}" % LABEL if kind == "ps" else "{{.Labels}}"
    args = {"ps": ["ps", "-a"], "volume": ["volume", "ls"], "network": ["network", "ls"]}[kind]
    lines = docker_lines(*args, "--filter", f"label={LABEL}", "--format", fmt)
    if kind == "ps":
        return sum(1 for v in lines if v.startswith(prefix))
    return sum(1 for v in lines if f"{LABEL}={prefix}" in v)


def dockerd_fds():
    pids = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    if not pids:
        raise RuntimeError("no dockerd process to count the open files of")
    return len(os.listdir(f"/proc/{pids[0]}/fd"))


def files_under(root):
    return sum(len(files) for _, _, files in os.walk(root))


def account(env, prefix):
    home = env.env["TIMONEL_HOME"]
    kubeconfig = env.env["KUBECONFIG"]
    return {
        "containers": labelled("ps", prefix),
        "volumes": labelled("volume", prefix),
        "networks": labelled("network", prefix),
        # timonel's images for the soak's version or profiles (other tests on the machine may
        # build their own), and every dangling image (a rebuilt node image leaves one).
        "timonel_images": sum(1 for r in docker_lines("images", "--format", "{{.Repository}}:{{.Tag}}", "timonel/*")
                              if VERSION_TAG in r or prefix in r),
        "dangling_images": len(docker_lines("images", "-q", "--filter", "dangling=true")),
        "dockerd_open_files": dockerd_fds(),
        "home_files": files_under(home),
        "kubeconfig_bytes": os.path.getsize(kubeconfig),
    }


def cycle(bench, env, profile, nodes):
    """start / stop / start / delete; returns the wall times."""
    t = {}
    t["start"] = bench.start(env, profile, ["--nodes", str(nodes)])[0]
    t["stop"] = bench.run(env, ["stop", "-p", profile])[0]
    t["resume"] = bench.run(env, ["start", "-p", profile])[0]
    t["delete"] = bench.delete(env, profile)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timonel", required=True)
    ap.add_argument("--standin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cycles", type=int, default=25)
    ap.add_argument("--fd-slack", type=int, default=8)
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="soak-", dir=os.path.dirname(os.path.abspath(a.out)))
    bench = Bench(a.timonel, work, 1)
    prefix = f"soak{os.getpid() % 100000}-"
    report = {"cycles": a.cycles, "fd_slack": a.fd_slack, "profiles": prefix + "{1,3}"}
    mirror = None
    env = None
    try:
        root = os.path.join(work, "mirror")
        publish(root, VERSION, a.standin, 64)
        mirror = Mirror(root)
        env = Env(work, "home", mirror.url)
        with open(env.env["KUBECONFIG"], "w") as f:
            f.write(USER_KUBECONFIG)
        one, three = prefix + "1", prefix + "3"
        log("warm-up: cache, node image, and each profile once (not counted)")
        cycle(bench, env, one, 1)
        cycle(bench, env, three, 3)
        before = account(env, prefix)
        times = []
        t0 = time.perf_counter()
        for i in range(a.cycles):
            log(f"cycle {i + 1}/{a.cycles}")
            times.append({"1": cycle(bench, env, one, 1), "3": cycle(bench, env, three, 3)})
        report["wall_s"] = round(time.perf_counter() - t0, 1)
        after = account(env, prefix)
        report.update(before=before, after=after)
        grew = [k for k in before if after[k] > before[k] + (a.fd_slack if k == "dockerd_open_files" else 0)]
        report["grew"] = grew
        report["cycle_s"] = {
            n: {step: round(sorted(c[n][step] for c in times)[len(times) // 2], 3)
                for step in ("start", "stop", "resume", "delete")}
            for n in ("1", "3")
        } if times else {}
        report["mirror_requests"] = mirror.count()
    finally:
        if env is not None:
            bench.cleanup([env])
        if mirror is not None:
            mirror.close()
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    if report.get("grew"):
        log(f"grew: {', '.join(report['grew'])} (see {a.out})")
        return 3
    log(f"no growth over {a.cycles} cycles ({a.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
