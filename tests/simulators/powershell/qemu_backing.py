"""Real guests behind the PowerShell (Hyper-V) simulator: with TIMONEL_HYPERV_SIM_QEMU=1 in its
environment, the simulator's VMs are QEMU processes (TCG), so the Hyper-V driver's scripts
create, boot, stop and remove real machines. Off (the default), nothing here runs and the
simulator stays a model of outputs.

What maps to what (README.md beside this file, "Backed by QEMU"):
  New-VHD -Differencing            qemu-img create -f qcow2 -b <parent> -F <its format>: a
                                   child of the parent VHDX (QEMU reads VHDX but cannot write a
                                   VHDX differencing disk), so the parent is never written
  Get-VHD .Size / Resize-VHD       qemu-img info's virtual size / qemu-img resize
  Start-VM                         qemu-system-x86_64 -machine accel=tcg, daemonized: the VM's
                                   disk (virtio), its DVD drive (the seed ISO), one NIC with
                                   the VM's 00:15:5D MAC on a tap of the switch's bridge
  Stop-VM -AsJob (Wait-Job -Timeout N)  QMP system_powerdown, then up to N seconds for QEMU to
                                   end (the guest's shutdown); still running, the VM stays Running
  Stop-VM -TurnOff, Remove-VM      QMP quit
  Suspend-VM / Resume-VM           QMP stop / cont
  Get-VMNetworkAdapter .IPAddresses  the dnsmasq lease of the VM's MAC granted since this start,
                                   and the guest's link-local IPv6 (EUI-64 of the MAC) once the
                                   guest has sent a frame; nothing before
  a virtual switch                 a Linux bridge with the host at .1 of a free /24 (the host's
                                   vEthernet adapter), dnsmasq as its DHCP server when the
                                   switch hands out addresses (the simulator's `Dhcp` rule), made
                                   when a VM on it first starts and removed with the last VM on it

A VM is Running while its QEMU process lives; when the process is gone the VM is Off. Bridges are
named `thb<8 hex>`, taps `tht<8 hex>` (hashes of the state directory and the switch or VM), and
`qemu/links.log` lists those made. Needs root (bridges, taps), qemu-img, qemu-system-x86_64 and
dnsmasq.
"""

import hashlib
import ipaddress
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), ".."))
import qemu_guest as g  # noqa: E402  (what both simulators' QEMU backings share)

ENV = "TIMONEL_HYPERV_SIM_QEMU"
FORWARD_COMMENT = "timonel hyperv sim"


def enabled():
    return g.env_on(ENV)


def bridge_name(sim, switch):
    return g.link_name("thb", sim.dir, switch)


def tap_name(sim, vm):
    return g.link_name("tht", sim.dir, vm["VMId"])


def mac(vm):
    """The VM's dynamic MAC, in Hyper-V's range (00-15-5D-…)."""
    return "00155d" + hashlib.sha256(vm["VMId"].encode()).hexdigest()[:6]


def _paths(sim, vm):
    return g.guest_paths(sim.dir, vm["VMId"])


# -- disks --------------------------------------------------------------------------------------

def _info(sim, path):
    return json.loads(g.run(["qemu-img", "info", "--output=json", path], sim.fail))


def disk_size(sim, path):
    """Get-VHD's Size: the disk's virtual size."""
    return _info(sim, path)["virtual-size"]


def make_differencing(sim, path, parent):
    fmt = _info(sim, parent)["format"]
    g.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", parent, "-F", fmt, path], sim.fail)


def resize(sim, path, size):
    g.run(["qemu-img", "resize", "-q", "-f", "qcow2", path, str(size)], sim.fail)


# -- lifecycle ----------------------------------------------------------------------------------

def alive(sim, vm):
    return g.pid_of(_paths(sim, vm)[0]) is not None


def refresh(sim):
    """A QEMU process that ended (the guest powered off, or it was killed) is a VM that is Off."""
    for vm in sim.state["vms"]:
        if vm.get("qemu") and vm["State"] != "Off" and not alive(sim, vm):
            _after_exit(sim, vm)
            vm["State"] = "Off"


def _after_exit(sim, vm):
    g.after_exit(sim.dir, vm["VMId"], tap_name(sim, vm))
    vm["qemu"] = False


def _switch_net(sim, name):
    """The bridge standing for switch `name`, made when missing, with dnsmasq when the switch
    hands out addresses."""
    nets = sim.state.setdefault("qemu_switches", {})
    br = bridge_name(sim, name)
    entry = nets.get(name)
    if entry is None or not g.link_exists(br):
        net = g.claim_subnet(br, sim.fail, g.noter(sim.dir))
        entry = nets[name] = {"bridge": br, "net": str(net)}
        sim.save()
    g.allow_forward(br, FORWARD_COMMENT, sim.fail)
    net = ipaddress.ip_network(entry["net"])
    if sim.switch_has_dhcp(name):
        leases, pidfile = g.dhcp_files(sim.dir, br)
        g.start_dnsmasq(br, net[10], net[250], net.netmask, g.LEASE_SECS, leases, pidfile,
                        sim.fail, router=net[1])
    return br


def start(sim, vm):
    pidfile, qmp_path, console = _paths(sim, vm)
    argv = g.qemu_argv(vm["Name"], vm["MemoryStartupBytes"] // (1024 * 1024),
                       vm["ProcessorCount"], pidfile, qmp_path, console)
    argv += ["-boot", "order=c"]
    for disk in vm["HardDisks"]:
        argv += ["-drive", f"file={disk},format=qcow2,if=virtio"]
    for iso in vm["Dvds"]:
        argv += ["-drive", f"file={iso},format=raw,media=cdrom,readonly=on"]
    if vm.get("SwitchName"):
        br = _switch_net(sim, vm["SwitchName"])
        tap = tap_name(sim, vm)
        g.ensure_tap(tap, br, sim.fail, g.noter(sim.dir))
        argv += ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
                 "-device", f"virtio-net-pci,netdev=n0,mac={g.colon_mac(mac(vm))}"]
    else:
        argv += ["-nic", "none"]
    vm["qemu_started"] = time.time()
    g.run(argv, sim.fail)
    vm["qemu"] = True


def qmp(sim, vm, command):
    return g.qmp(_paths(sim, vm)[1], command, sim.fail)


def shutdown(sim, vm, secs):
    """The Shutdown integration service's request: ACPI power button, then up to `secs` for the
    guest to power off. Whether it did."""
    pid = g.pid_of(_paths(sim, vm)[0])
    if pid is None:
        _after_exit(sim, vm)
        return True
    qmp(sim, vm, "system_powerdown")
    if g.wait_gone(pid, secs, kill=False):
        _after_exit(sim, vm)
        return True
    return False


def turn_off(sim, vm):
    """QMP quit, and the process waited for."""
    if vm.get("qemu"):
        g.power_off(sim.dir, vm["VMId"], tap_name(sim, vm), sim.fail)
        vm["qemu"] = False


def removed(sim, vm):
    """After Remove-VM: the VM's guest is gone, and so is its switch's bridge when no VM is on
    that switch any more."""
    turn_off(sim, vm)
    switch = vm.get("SwitchName")
    if switch and not any(v.get("SwitchName") == switch for v in sim.state["vms"]):
        remove_switch(sim, switch)


def remove_switch(sim, switch):
    br = bridge_name(sim, switch)
    g.kill(g.dhcp_files(sim.dir, br)[1], "dnsmasq")
    g.disallow_forward(br, FORWARD_COMMENT)
    g.remove_link(br)
    sim.state.setdefault("qemu_switches", {}).pop(switch, None)


# -- addresses ----------------------------------------------------------------------------------

def _link_local(mac_hex):
    b = bytearray(bytes.fromhex(mac_hex))
    b[0] ^= 0x02
    eui = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + eui))


def _guest_sent(sim, vm):
    try:
        with open(f"/sys/class/net/{tap_name(sim, vm)}/statistics/rx_packets") as f:
            return int(f.read()) > 0
    except (OSError, ValueError):
        return False


def addresses(sim, vm):
    """(IPv4 or None, link-local IPv6 or None) as the guest would report them through KVP."""
    if not vm.get("qemu") or not vm.get("SwitchName") or not _guest_sent(sim, vm):
        return None, None
    leases = g.dhcp_files(sim.dir, bridge_name(sim, vm["SwitchName"]))[0]
    v4 = g.leased_ip(leases, mac(vm), vm.get("qemu_started", 0), g.LEASE_SECS)
    return v4, _link_local(mac(vm))
