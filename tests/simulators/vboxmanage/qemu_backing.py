"""Real guests behind the VBoxManage simulator: with TIMONEL_VBOX_SIM_QEMU=1 in its environment,
the simulator's VMs are QEMU processes (TCG), so a driver's commands boot, stop and remove real
machines. Off (the default), nothing here runs and the simulator stays a model of outputs.

What maps to what (docs/hypervisor-tools.md, "VBoxManage backed by QEMU"):
  clonemedium disk A B --format F   qemu-img convert -O f A B (QEMU reads VMDK, VDI, VHD)
  modifymedium --resize MiB         a fresh image of the new size, the old one copied into it
                                    (qemu-img cannot resize VDI in place)
  startvm --type headless           qemu-system-x86_64 -accel tcg, daemonized: the attached disk
                                    (virtio) and DVDs; NIC 1 NAT = QEMU user networking with one
                                    hostfwd per natpf1 rule; NIC 2 host-only = a tap on a Linux
                                    bridge standing for the host-only interface, with dnsmasq as
                                    its DHCP server (the `dhcpserver` range)
  controlvm acpipowerbutton         QMP system_powerdown (the guest powers off; QEMU exits)
  controlvm poweroff                QMP quit
  controlvm pause | resume          QMP stop | cont
  controlvm natpf1 (running VM)     HMP hostfwd_add / hostfwd_remove
  guestproperty .../Net/1/V4/IP     the dnsmasq lease of NIC 2's MAC granted since this start
  hostonlyif remove                 the bridge and its dnsmasq removed

A VM is running while its QEMU process lives; when the process is gone the VM is `poweroff`.
Bridges are named `tvb<8 hex>` and taps `tvt<8 hex>` (hashes of the state directory and the
interface or VM), so they belong to one state directory; `qemu/links.log` lists those made. Needs root (bridges, taps), qemu-img,
qemu-system-x86_64 and dnsmasq. Host-only networks (`hostonlynet`) are not backed.
"""

import hashlib
import json
import os
import signal
import socket
import shutil
import subprocess
import time

ENV = "TIMONEL_VBOX_SIM_QEMU"
LEASE_SECS = 3600


def enabled():
    return os.environ.get(ENV, "") not in ("", "0")


def _dir(sim):
    d = os.path.join(sim.dir, "qemu")
    os.makedirs(d, exist_ok=True)
    return d


def _run(sim, argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        sim.error(f"(QEMU backing) `{' '.join(argv)}` failed: {r.stderr.strip()}")
    return r.stdout


def _hash(*parts):
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def bridge_name(sim, ifname):
    return "tvb" + _hash(os.path.realpath(sim.dir), ifname)


def tap_name(sim, vm):
    return "tvt" + _hash(os.path.realpath(sim.dir), vm["uuid"])


def _link_exists(name):
    return os.path.exists(f"/sys/class/net/{name}")


def _made(sim, link):
    """Notes a bridge or tap this state directory made, in `qemu/links.log` (so a test can check
    that none is left)."""
    with open(os.path.join(_dir(sim), "links.log"), "a") as f:
        f.write(link + "\n")


def _colon_mac(mac):
    return ":".join(mac[i:i + 2] for i in range(0, 12, 2)).lower()


# -- disks --------------------------------------------------------------------------------------

def clone_disk(sim, src, dst, fmt):
    _run(sim, ["qemu-img", "convert", "-O", fmt.lower(), src, dst])


def resize_disk(sim, path, mib):
    info = json.loads(_run(sim, ["qemu-img", "info", "--output=json", path]))
    if mib * 1024 * 1024 <= info["virtual-size"]:
        return
    fmt = info["format"]
    tmp = path + ".resizing"
    _run(sim, ["qemu-img", "create", "-q", "-f", fmt, tmp, f"{mib}M"])
    _run(sim, ["qemu-img", "convert", "-n", "-f", fmt, "-O", fmt, path, tmp])
    os.replace(tmp, path)


# -- processes ----------------------------------------------------------------------------------

def _pid(path):
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return pid if f.read() else None
    except (OSError, ValueError):
        return None


def _kill(path, name_part):
    pid = _pid(path)
    if pid is not None:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if name_part.encode() in f.read():
                os.kill(pid, signal.SIGTERM)
                _wait_gone(pid, 10)
    if os.path.exists(path):
        os.remove(path)


def _wait_gone(pid, secs):
    deadline = time.time() + secs
    while time.time() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return False


def _paths(sim, vm):
    d = _dir(sim)
    u = vm["uuid"]
    return (os.path.join(d, f"{u}.pid"), os.path.join(d, f"{u}.qmp"),
            os.path.join(d, f"{u}.console.log"))


def alive(sim, vm):
    return _pid(_paths(sim, vm)[0]) is not None


def refresh(sim):
    """A QEMU process that ended (the guest powered off, or it was killed) is a VM that is off."""
    changed = False
    for vm in sim.w["vms"].values():
        if vm.get("qemu") and vm["state"] in ("running", "paused", "stopping") \
                and not alive(sim, vm):
            _after_exit(sim, vm)
            vm["state"] = "poweroff"
            vm["shutdown"] = None
            changed = True
    if changed:
        sim.save()


def _after_exit(sim, vm):
    pidfile, qmp_path, _ = _paths(sim, vm)
    for p in (pidfile, qmp_path):
        if os.path.exists(p):
            os.remove(p)
    tap = tap_name(sim, vm)
    if _link_exists(tap):
        subprocess.run(["ip", "link", "del", tap], capture_output=True)
    vm["qemu"] = False


# -- QMP ----------------------------------------------------------------------------------------

def qmp(sim, vm, command, arguments=None):
    _, path, _ = _paths(sim, vm)
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
                    sim.error(f"(QEMU backing) QMP {command}: {reply['error'].get('desc')}")
                if "return" in reply:
                    break
        return reply["return"]
    except OSError as e:
        sim.error(f"(QEMU backing) QMP {command} on {path}: {e}")
    finally:
        s.close()


def _hostfwd(rule):
    """`name,tcp,hostip,hostport,guestip,guestport` as QEMU's hostfwd."""
    _, proto, hip, hport, gip, gport = rule.split(",")
    return f"{proto or 'tcp'}:{hip or ''}:{hport}-{gip or ''}:{gport}"


def natpf(sim, vm, rule=None, delete=None):
    """A NAT rule changed while the VM runs: the same change in QEMU's user network."""
    if not vm.get("qemu") or not alive(sim, vm):
        return
    if rule is not None:
        cmd = f"hostfwd_add n1 {_hostfwd(rule)}"
    else:
        _, proto, hip, hport, _, _ = delete.split(",")
        cmd = f"hostfwd_remove n1 {proto or 'tcp'}:{hip or ''}:{hport}"
    qmp(sim, vm, "human-monitor-command", {"command-line": cmd})


# -- host-only network: bridge + dnsmasq -----------------------------------------------------------

def _prefix(mask):
    return bin(int.from_bytes(socket.inet_aton(mask), "big")).count("1")


def _dnsmasq_pid(sim, bridge):
    return os.path.join(_dir(sim), f"{bridge}.dnsmasq.pid")


def leases_path(sim, bridge):
    return os.path.join(_dir(sim), f"{bridge}.leases")


def ensure_hostonly(sim, hif):
    """The bridge standing for host-only interface `hif` (with the host's address on it) and,
    when its DHCP server is enabled, dnsmasq serving that server's range."""
    br = bridge_name(sim, hif["name"])
    if not _link_exists(br):
        _made(sim, br)
        _run(sim, ["ip", "link", "add", br, "type", "bridge", "nf_call_iptables", "0",
                   "nf_call_ip6tables", "0"])
        if hif["ip"] != "0.0.0.0":
            _run(sim, ["ip", "addr", "add", f"{hif['ip']}/{_prefix(hif['mask'])}", "dev", br])
        _run(sim, ["ip", "link", "set", br, "up"])
    # Guests on one host-only network reach each other through the bridge. Where br_netfilter
    # is loaded with bridge-nf-call-iptables=1 (Docker loads it and sets FORWARD's policy to
    # DROP), the host sysctl overrides the bridge's own nf_call_iptables=0 and bridged frames
    # meet FORWARD: let this bridge's own traffic through, as VirtualBox's host-only switch does.
    if shutil.which("iptables") and subprocess.run(
            ["iptables", "-C", "FORWARD"] + _forward_rule(br), capture_output=True).returncode:
        _run(sim, ["iptables", "-I", "FORWARD"] + _forward_rule(br))
    server = next((d for d in sim.w["dhcpservers"]
                   if d["netname"] == "HostInterfaceNetworking-" + hif["name"]), None)
    pidfile = _dnsmasq_pid(sim, br)
    if server and server.get("enabled") and _pid(pidfile) is None and hif["ip"] != "0.0.0.0":
        _run(sim, ["dnsmasq", "--conf-file=/dev/null", "--port=0", f"--interface={br}",
                   "--bind-interfaces", "--except-interface=lo", "--user=root",
                   f"--dhcp-range={server['lower']},{server['upper']},{hif['mask']},"
                   f"{LEASE_SECS}s",
                   f"--dhcp-leasefile={leases_path(sim, br)}", f"--pid-file={pidfile}",
                   "--dhcp-option=3", "--dhcp-option=6", "--dhcp-authoritative"])
    return br


def _forward_rule(br):
    return ["-i", br, "-o", br, "-j", "ACCEPT", "-m", "comment", "--comment", "timonel vbox sim"]


def remove_hostonly(sim, ifname):
    br = bridge_name(sim, ifname)
    stop_dhcp(sim, ifname)
    if shutil.which("iptables"):
        while subprocess.run(["iptables", "-D", "FORWARD"] + _forward_rule(br),
                             capture_output=True).returncode == 0:
            pass
    if _link_exists(br):
        subprocess.run(["ip", "link", "del", br], capture_output=True)


def stop_dhcp(sim, ifname):
    br = bridge_name(sim, ifname)
    _kill(_dnsmasq_pid(sim, br), "dnsmasq")


def leased_ip(sim, vm):
    """NIC 2's address as the guest reports it: a lease dnsmasq granted (or renewed) to its MAC
    since this start."""
    n = vm["nics"].get("2")
    if not n or n.get("type") != "hostonly":
        return None
    path = leases_path(sim, bridge_name(sim, n.get("hostonlyadapter", "")))
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    mac = _colon_mac(n["mac"])
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[1].lower() == mac \
                and int(parts[0]) - LEASE_SECS >= vm.get("qemu_started", 0) - 1:
            return parts[2]
    return None


# -- lifecycle ----------------------------------------------------------------------------------

def start(sim, name, vm):
    pidfile, qmp_path, console = _paths(sim, vm)
    argv = ["qemu-system-x86_64", "-name", name, "-accel", "tcg", "-m", str(vm["memory"]),
            "-smp", str(vm["cpus"]), "-display", "none", "-daemonize", "-pidfile", pidfile,
            "-qmp", f"unix:{qmp_path},server=on,wait=off", "-serial", f"file:{console}"]
    for a in vm["attach"].values():
        if a["type"] == "hdd":
            argv += ["-drive", f"file={a['path']},if=virtio"]
        elif a["type"] == "dvddrive":
            argv += ["-drive", f"file={a['path']},media=cdrom,readonly=on"]
    for i in ("1", "2"):
        n = vm["nics"].get(i)
        if not n or n.get("cable", "on") != "on":
            continue
        if n["type"] == "nat":
            fwd = "".join(f",hostfwd={_hostfwd(r)}" for r in n.get("rules", []))
            argv += ["-netdev", f"user,id=n{i}{fwd}"]
        elif n["type"] == "hostonly":
            hif = next((h for h in sim.w["hostonlyifs"]
                        if h["name"] == n.get("hostonlyadapter")), None)
            if hif is None:
                sim.error(f"Nonexistent host networking interface, name '{n.get('hostonlyadapter')}'"
                          " (VERR_INTERNAL_ERROR)")
            br = ensure_hostonly(sim, hif)
            tap = tap_name(sim, vm)
            if not _link_exists(tap):
                _made(sim, tap)
                _run(sim, ["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
            _run(sim, ["ip", "link", "set", tap, "master", br, "up"])
            argv += ["-netdev", f"tap,id=n{i},ifname={tap},script=no,downscript=no"]
        else:
            continue
        argv += ["-device", f"virtio-net-pci,netdev=n{i},mac={_colon_mac(n['mac'])}"]
    vm["qemu_started"] = time.time()
    _run(sim, argv)
    vm["qemu"] = True


def power_off(sim, vm):
    """QMP quit, and the process waited for."""
    if not vm.get("qemu"):
        return
    pid = _pid(_paths(sim, vm)[0])
    if pid is not None:
        qmp(sim, vm, "quit")
        _wait_gone(pid, 20)
    _after_exit(sim, vm)
