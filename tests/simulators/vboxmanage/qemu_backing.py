"""Real guests behind the VBoxManage simulator: with TIMONEL_VBOX_SIM_QEMU=1 in its environment,
the simulator's VMs are QEMU processes (TCG), so a driver's commands boot, stop and remove real
machines. Off (the default), nothing here runs and the simulator stays a model of outputs.

What maps to what (docs/hypervisor-tools.md, "VBoxManage backed by QEMU"):
  clonemedium disk A B --format F   qemu-img convert -O f A B (QEMU reads VMDK, VDI, VHD)
  modifymedium --resize MiB         a fresh image of the new size, the old one copied into it
                                    (qemu-img cannot resize VDI in place)
  startvm --type headless           qemu-system-x86_64 -machine accel=tcg, daemonized: the attached disk
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

import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), ".."))
import qemu_guest as g  # noqa: E402  (what both simulators' QEMU backings share)

ENV = "TIMONEL_VBOX_SIM_QEMU"
FORWARD_COMMENT = "timonel vbox sim"


def enabled():
    return g.env_on(ENV)


def _run(sim, argv):
    return g.run(argv, sim.error)


def bridge_name(sim, ifname):
    return g.link_name("tvb", sim.dir, ifname)


def tap_name(sim, vm):
    return g.link_name("tvt", sim.dir, vm["uuid"])


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

def _paths(sim, vm):
    return g.guest_paths(sim.dir, vm["uuid"])


def alive(sim, vm):
    return g.pid_of(_paths(sim, vm)[0]) is not None


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
    g.after_exit(sim.dir, vm["uuid"], tap_name(sim, vm))
    vm["qemu"] = False


# -- QMP ----------------------------------------------------------------------------------------

def qmp(sim, vm, command, arguments=None):
    return g.qmp(_paths(sim, vm)[1], command, sim.error, arguments)


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
    return g.dhcp_files(sim.dir, bridge)[1]


def leases_path(sim, bridge):
    return g.dhcp_files(sim.dir, bridge)[0]


def ensure_hostonly(sim, hif):
    """The bridge standing for host-only interface `hif` (with the host's address on it) and,
    when its DHCP server is enabled, dnsmasq serving that server's range. Its own traffic passes
    FORWARD, as VirtualBox's host-only switch does."""
    br = bridge_name(sim, hif["name"])
    cidr = f"{hif['ip']}/{_prefix(hif['mask'])}" if hif["ip"] != "0.0.0.0" else None
    g.ensure_bridge(br, cidr, sim.error, g.noter(sim.dir))
    g.allow_forward(br, FORWARD_COMMENT, sim.error)
    server = next((d for d in sim.w["dhcpservers"]
                   if d["netname"] == "HostInterfaceNetworking-" + hif["name"]), None)
    if server and server.get("enabled") and hif["ip"] != "0.0.0.0":
        g.start_dnsmasq(br, server["lower"], server["upper"], hif["mask"], g.LEASE_SECS,
                        leases_path(sim, br), _dnsmasq_pid(sim, br), sim.error)
    return br


def remove_hostonly(sim, ifname):
    br = bridge_name(sim, ifname)
    stop_dhcp(sim, ifname)
    g.disallow_forward(br, FORWARD_COMMENT)
    g.remove_link(br)


def stop_dhcp(sim, ifname):
    br = bridge_name(sim, ifname)
    g.kill(_dnsmasq_pid(sim, br), "dnsmasq")


def leased_ip(sim, vm):
    """NIC 2's address as the guest reports it: a lease dnsmasq granted (or renewed) to its MAC
    since this start."""
    n = vm["nics"].get("2")
    if not n or n.get("type") != "hostonly":
        return None
    path = leases_path(sim, bridge_name(sim, n.get("hostonlyadapter", "")))
    return g.leased_ip(path, n["mac"], vm.get("qemu_started", 0), g.LEASE_SECS)


# -- lifecycle ----------------------------------------------------------------------------------

def start(sim, name, vm):
    pidfile, qmp_path, console = _paths(sim, vm)
    argv = g.qemu_argv(name, vm["memory"], vm["cpus"], pidfile, qmp_path, console)
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
            g.ensure_tap(tap, br, sim.error, g.noter(sim.dir))
            argv += ["-netdev", f"tap,id=n{i},ifname={tap},script=no,downscript=no"]
        else:
            continue
        argv += ["-device", f"virtio-net-pci,netdev=n{i},mac={g.colon_mac(n['mac'])}"]
    vm["qemu_started"] = time.time()
    _run(sim, argv)
    vm["qemu"] = True


def power_off(sim, vm):
    """QMP quit, and the process waited for."""
    if vm.get("qemu"):
        g.power_off(sim.dir, vm["uuid"], tap_name(sim, vm), sim.error)
        vm["qemu"] = False
