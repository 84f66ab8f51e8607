"""`Hyper-V\\Convert-VHD` and `Hyper-V\\Get-VHD` for powershell-sim.py: the base VHDX timonel has
Hyper-V make from a fixed VHD (drivers/hyperv/src/disk.rs).

The source is read like Hyper-V reads it: a VHD is known by its 512-byte footer (cookie
`conectix`, checksum, disk type) at the end of the file, and a footer that is missing or whose
checksum does not match is refused with the VHD errors of Windows (0xC03A0001, 0xC03A0002). The
VHDX written is a real one, made with `qemu-img` (so a QEMU-backed simulator can boot it); the
simulator needs qemu-img (qemu-utils) for this cmdlet and says so when it is missing.

Scenario switch `convert_vhd_error`: `"sparse"` refuses the source as Hyper-V refuses a sparse,
compressed or encrypted file (0xC03A001A: what a compressed cache folder on Windows gives).
"""

import os
import shutil
import struct
import subprocess

FQID = "OperationFailed,Microsoft.Vhd.PowerShell.Cmdlets.ConvertVhd"
NOT_FOUND_FQID = "ObjectNotFound,Microsoft.Vhd.PowerShell.Cmdlets.ConvertVhd"

ERRORS = {
    "missing": ("The virtual hard disk is corrupted. The virtual hard disk drive footer is "
                "missing. (0xC03A0001)."),
    "checksum": ("The virtual hard disk is corrupted. The virtual hard disk drive footer checksum "
                 "does not match the on-disk checksum. (0xC03A0002)."),
    "sparse": ("The requested operation could not be completed due to a virtual disk system "
               "limitation. Virtual hard disk files must be uncompressed and unencrypted and must "
               "not be sparse. (0xC03A001A)."),
    "exists": "The file exists. (0x80070050).",
}
DISK_TYPES = {2: "Fixed", 3: "Dynamic", 4: "Differencing"}


def read_footer(path):
    """(current size, disk type) from a VHD's footer, or the ERRORS key of why it is not one."""
    size = os.path.getsize(path)
    if size < 512:
        return "missing"
    with open(path, "rb") as f:
        f.seek(size - 512)
        footer = f.read(512)
    if footer[:8] != b"conectix":
        return "missing"
    stored = struct.unpack(">I", footer[64:68])[0]
    total = sum(footer[:64]) + sum(footer[68:])
    if stored != (~total & 0xFFFFFFFF):
        return "checksum"
    current = struct.unpack(">Q", footer[48:56])[0]
    kind = struct.unpack(">I", footer[60:64])[0]
    return current, DISK_TYPES.get(kind, "Unknown")


def op_convert(sim, param, error_cls, bug_cls):
    """Convert-VHD -Path SRC -DestinationPath DST -VHDType Dynamic, then Get-VHD -Path DST."""
    s = sim.script
    src = param(s, "Hyper-V\\Convert-VHD", "Path")
    dst = param(s, "Hyper-V\\Convert-VHD", "DestinationPath")
    vhd_type = param(s, "Hyper-V\\Convert-VHD", "VHDType", required=False)
    if vhd_type not in ("Dynamic", "Fixed"):
        raise bug_cls("Convert-VHD without -VHDType Dynamic|Fixed")
    if param(s, "Hyper-V\\Get-VHD", "Path") != dst:
        raise bug_cls("Get-VHD of another disk than Convert-VHD made")
    if "catch {" not in s or "Remove-Item -LiteralPath $env:" not in s:
        raise bug_cls("a Convert-VHD that leaves a half-written disk when it fails")

    def fail(key, fqid=FQID, category="NotSpecified"):
        message = ("Failed to convert the virtual disk.\n"
                   f"The system failed to convert '{src}'.\n" + ERRORS[key])
        return error_cls("Hyper-V\\Convert-VHD", message, category, ":", "Convert-VHD",
                         "VirtualizationException", fqid)

    if not os.path.isfile(src):
        raise error_cls("Hyper-V\\Convert-VHD", sim.fmt("no_file", path=src), "ObjectNotFound", ":",
                        "Convert-VHD", "VirtualizationException", NOT_FOUND_FQID)
    if os.path.exists(dst):
        raise fail("exists")
    footer = read_footer(src)
    if isinstance(footer, str):
        raise fail(footer)
    if sim.scenario.get("convert_vhd_error") == "sparse":
        raise fail("sparse")
    size, _ = footer
    fmt = "VHDX" if dst.lower().endswith(".vhdx") else "VHD"
    qemu = shutil.which("qemu-img")
    if qemu is None:
        raise bug_cls("Convert-VHD needs qemu-img (qemu-utils) to write a real disk")
    out_fmt = "vhdx" if fmt == "VHDX" else "vpc"
    subformat = "dynamic" if vhd_type == "Dynamic" else "fixed"
    done = subprocess.run([qemu, "convert", "-q", "-f", "vpc", "-O", out_fmt, "-o",
                           f"subformat={subformat}", src, dst], capture_output=True, text=True)
    if done.returncode != 0:
        raise bug_cls("qemu-img could not write the disk: " + done.stderr.strip())
    sim.state.setdefault("vhds", {})[dst] = {"Size": size, "Format": fmt, "Type": vhd_type}
    return sim.json_out({"VhdFormat": fmt, "VhdType": vhd_type, "Size": size})
