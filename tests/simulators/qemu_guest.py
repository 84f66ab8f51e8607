"""What the simulators' QEMU backings share (tests/simulators/vboxmanage/qemu_backing.py for
VBoxManage, tests/simulators/powershell/qemu_backing.py for Hyper-V): QEMU processes known by a
pid file, QMP, taps on Linux bridges, dnsmasq as a bridge's DHCP server and its leases, the
FORWARD rule a bridge needs on a host with bridge-nf-call-iptables, and free subnets for bridges
whose addresses the backing picks.

Every function that can fail takes `fail`, a function that reports the message (as the calling
simulator's own error) and does not return.
"""

import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time

# Subnets the backings pick for bridges they address themselves: /24s of this range that no
# route of the host covers (Docker, Podman and libvirt networks live elsewhere by default).
POOL = ipaddress.ip_network("10.237.0.0/16")
# Held while a subnet is picked and put on a bridge, by every simulator process on the host.
POOL_LOCK = os.path.join(os.environ.get("TMPDIR", "/tmp"), "timonel-qemu-backing-subnets.lock")


def run(argv, fail):
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"(QEMU backing) `{' '.join(argv)}` failed: {r.stderr.strip()}")
    return r.stdout


def link_exists(name):
    return os.path.exists(f"/sys/class/net/{name}")


def colon_mac(mac):
    """`080027ABCDEF` or `08:00:27:ab:cd:ef` as `08:00:27:ab:cd:ef`."""
    hexes = mac.replace(":", "").replace("-", "")
    return ":".join(hexes[i:i + 2] for i in range(0, 12, 2)).lower()


# -- processes ----------------------------------------------------------------------------------

def pid_of(path):
    """The live process a pid file names, else None."""
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return pid if f.read() else None
    except (OSError, ValueError):
        return None


def wait_gone(pid, secs, kill=True):
    """Whether process `pid` ended within `secs`; past that it is killed when `kill`."""
    deadline = time.time() + secs
    while time.time() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.1)
    if kill:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return False


def kill(path, name_part):
    """Ends the process the pid file names (when its command line holds `name_part`) and
    removes the file."""
    pid = pid_of(path)
    if pid is not None:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if name_part.encode() in f.read():
                os.kill(pid, signal.SIGTERM)
                wait_gone(pid, 10)
    if os.path.exists(path):
        os.remove(path)


def qmp(path, command, fail, arguments=None):
    """One QMP command on the socket at `path`; its `return`, or None when QEMU quit while
    answering."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    try:
        s.connect(path)
        f = s.makefile("rw")
        f.readline()  # the greeting
        for msg in ({"execute": "qmp_capabilities"},
                    {"execute": command, **({"arguments": arguments} if arguments else {})}):
            f.write(json.dumps(msg) + "\n")
            f.flush()
            while True:
                line = f.readline()
                if not line:
                    return None  # QEMU quit while answering
                reply = json.loads(line)
                if "error" in reply:
                    fail(f"(QEMU backing) QMP {command}: {reply['error'].get('desc')}")
                if "return" in reply:
                    break
        return reply["return"]
    except OSError as e:
        fail(f"(QEMU backing) QMP {command} on {path}: {e}")
    finally:
        s.close()


def qemu_argv(name, memory_mib, cpus, pidfile, qmp_path, console):
    """qemu-system-x86_64 under TCG, daemonized, with a pid file, QMP and the serial console in
    a file; the caller adds disks and NICs."""
    return ["qemu-system-x86_64", "-name", name, "-machine", "accel=tcg", "-m", str(memory_mib),
            "-smp", str(cpus), "-display", "none", "-daemonize", "-pidfile", pidfile,
            "-qmp", f"unix:{qmp_path},server=on,wait=off", "-serial", f"file:{console}"]


# -- bridges, taps and the firewall ---------------------------------------------------------------

def ensure_bridge(br, cidr, fail, made):
    """Bridge `br` (up, with the host's address `cidr` when given); `made(br)` notes a new one.
    Its frames skip iptables where the host lets a bridge choose (nf_call_iptables=0)."""
    if link_exists(br):
        return
    made(br)
    run(["ip", "link", "add", br, "type", "bridge", "nf_call_iptables", "0",
         "nf_call_ip6tables", "0"], fail)
    if cidr:
        run(["ip", "addr", "add", cidr, "dev", br], fail)
    run(["ip", "link", "set", br, "up"], fail)


def ensure_tap(tap, br, fail, made):
    if not link_exists(tap):
        made(tap)
        run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], fail)
    run(["ip", "link", "set", tap, "master", br, "up"], fail)


def remove_link(name):
    if link_exists(name):
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def _forward_rule(br, comment):
    return ["-i", br, "-o", br, "-j", "ACCEPT", "-m", "comment", "--comment", comment]


def allow_forward(br, comment, fail):
    """Guests on one bridge reach each other through it. Where br_netfilter is loaded with
    bridge-nf-call-iptables=1 (Docker loads it and sets FORWARD's policy to DROP), the host
    sysctl overrides the bridge's own nf_call_iptables=0 and bridged frames meet FORWARD: let
    this bridge's own traffic through."""
    if shutil.which("iptables") and subprocess.run(
            ["iptables", "-C", "FORWARD"] + _forward_rule(br, comment),
            capture_output=True).returncode:
        run(["iptables", "-I", "FORWARD"] + _forward_rule(br, comment), fail)


def disallow_forward(br, comment):
    if shutil.which("iptables"):
        while subprocess.run(["iptables", "-D", "FORWARD"] + _forward_rule(br, comment),
                             capture_output=True).returncode == 0:
            pass


# -- DHCP -----------------------------------------------------------------------------------------

def start_dnsmasq(br, lower, upper, mask, lease_secs, leases, pidfile, fail, router=None):
    """dnsmasq as the DHCP server of bridge `br` (no DNS; a router only when given)."""
    if pid_of(pidfile) is not None:
        return
    run(["dnsmasq", "--conf-file=/dev/null", "--port=0", f"--interface={br}",
         "--bind-interfaces", "--except-interface=lo", "--user=root",
         f"--dhcp-range={lower},{upper},{mask},{lease_secs}s",
         f"--dhcp-leasefile={leases}", f"--pid-file={pidfile}",
         "--dhcp-option=3" + (f",{router}" if router else ""), "--dhcp-option=6",
         "--dhcp-authoritative"], fail)


def leased_ip(leases, mac, since, lease_secs):
    """The address dnsmasq granted (or renewed) to `mac` at or after time `since`."""
    try:
        with open(leases) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    mac = colon_mac(mac)
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[1].lower() == mac \
                and int(parts[0]) - lease_secs >= since - 1:
            return parts[2]
    return None


# -- subnets ----------------------------------------------------------------------------------------

def _used_networks():
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                         text=True).stdout
    nets = []
    for line in out.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unreachable", "prohibit", "blackhole"):
            word = line.split()[1]
        if word == "default":
            continue
        try:
            nets.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    return nets


def claim_subnet(br, fail, made):
    """A /24 of POOL that no route of the host covers, put on a new bridge `br` (the host at
    .1) under a host-wide lock, so simulators running at once never pick the same one.
    Returns the network."""
    with open(POOL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = _used_networks()
        for net in POOL.subnets(new_prefix=24):
            if any(net.overlaps(u) for u in used):
                continue
            ensure_bridge(br, f"{net[1]}/{net.prefixlen}", fail, made)
            return net
    fail(f"(QEMU backing) no free /24 left in {POOL}")


# -- one simulator's world ------------------------------------------------------------------------

LEASE_SECS = 3600


def env_on(name):
    return os.environ.get(name, "") not in ("", "0")


def world_dir(sim_dir):
    """`<state>/qemu`: pid files, QMP sockets, consoles, leases and `links.log`."""
    d = os.path.join(sim_dir, "qemu")
    os.makedirs(d, exist_ok=True)
    return d


def link_name(prefix, sim_dir, key):
    """A bridge or tap name of this world: `prefix` and 8 hex of the state folder and `key`."""
    digest = hashlib.sha256(f"{os.path.realpath(sim_dir)}\0{key}".encode()).hexdigest()
    return prefix + digest[:8]


def noter(sim_dir):
    """Notes a bridge or tap this world made in `links.log` (so a test can check none is
    left)."""
    def note(link):
        with open(os.path.join(world_dir(sim_dir), "links.log"), "a") as f:
            f.write(link + "\n")
    return note


def guest_paths(sim_dir, key):
    """A guest's pid file, QMP socket and console log."""
    d = world_dir(sim_dir)
    return (os.path.join(d, f"{key}.pid"), os.path.join(d, f"{key}.qmp"),
            os.path.join(d, f"{key}.console.log"))


def after_exit(sim_dir, key, tap):
    """What an ended guest leaves: its pid file, QMP socket and tap go."""
    pidfile, qmp_path, _ = guest_paths(sim_dir, key)
    for p in (pidfile, qmp_path):
        if os.path.exists(p):
            os.remove(p)
    remove_link(tap)


def power_off(sim_dir, key, tap, fail):
    """QMP quit, the process waited for, and what it leaves removed."""
    pidfile, qmp_path, _ = guest_paths(sim_dir, key)
    pid = pid_of(pidfile)
    if pid is not None:
        qmp(qmp_path, "quit", fail)
        wait_gone(pid, 20)
    after_exit(sim_dir, key, tap)


def dhcp_files(sim_dir, br):
    """The leases and pid file of bridge `br`'s dnsmasq."""
    d = world_dir(sim_dir)
    return os.path.join(d, f"{br}.leases"), os.path.join(d, f"{br}.dnsmasq.pid")
