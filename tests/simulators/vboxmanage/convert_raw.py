"""`VBoxManage convertfromraw` (and its old name `convertdd`) for the VBoxManage simulator: the
base VDI timonel has VirtualBox make from a raw disk (drivers/virtualbox/src/disk.rs).

As VirtualBox does: `convertfromraw <src> <dst> [--format VDI|VMDK|VHD] [--variant ...]
[--uuid ...]`; the two progress lines (`Converting from raw image file="<src>" to
file="<dst>"...`, `Creating dynamic image with size <n> bytes (<MiB, rounded up>MB)...`) go to
stderr from 7.0 on and to stdout before; there is no percentage progress; the new disk is not
registered in the media registry. Errors: a missing source (`Cannot open file "<src>":
VERR_FILE_NOT_FOUND`), a size that is not whole 512-byte sectors (the VD lines, then `Cannot
create the disk image "<dst>": VERR_VD_INVALID_SIZE`), an existing destination (`Cannot create
the disk image "<dst>": VERR_ALREADY_EXISTS`); all exit 1, wrong arguments exit 2.

The disk written is a real one, made with qemu-img, whenever qemu-img is there (the QEMU
backing's guests boot the disks cloned from it, and it needs qemu-img anyway); without qemu-img
it is a copy of the raw bytes, like the simulator's clonemedium without the backing.
"""

import os
import shutil

import qemu_backing as qemu

FORMATS = ("VDI", "VMDK", "VHD")


def cmd_convertfromraw(sim, args):
    fmt, src, dst, rest = "VDI", None, None, list(args)
    while rest:
        w = rest.pop(0)
        if w in ("--format", "-format") and rest:
            fmt = rest.pop(0)
        elif w.startswith("--format="):
            fmt = w.split("=", 1)[1]
        elif w in ("--variant", "-variant", "--uuid", "-uuid") and rest:
            rest.pop(0)
        elif w in ("--static", "-static"):
            pass
        elif w.startswith("-"):
            sim.error(f"Unknown option: {w}", code=2)
        elif src is None:
            src = w
        elif dst is None:
            dst = w
        else:
            sim.error(f"Invalid parameter '{w}'", code=2)
    if src is None or dst is None:
        sim.error("Incorrect number of parameters", code=2)
    if src == "stdin":
        sim.error("the simulator does not read raw disks from stdin", code=2)
    say = sim.eprint if sim.v7 else sim.print
    say(f'Converting from raw image file="{src}" to file="{dst}"...')
    if not os.path.isfile(src):
        sim.error(f'Cannot open file "{src}": VERR_FILE_NOT_FOUND')
    size = os.path.getsize(src)
    say(f"Creating dynamic image with size {size} bytes ({(size + (1 << 20) - 1) >> 20}MB)...")
    if fmt.upper() not in FORMATS:
        sim.error(f'Cannot create the disk image "{dst}": VERR_NOT_SUPPORTED')
    if size % 512:
        sim.error(f"VD: The given disk size {size} is not aligned on a sector boundary (512 bytes)",
                  "Error code VERR_VD_INVALID_SIZE at /home/vbox/tinderbox/build-VBox-7.0/svn/src/"
                  "VBox/Storage/VD.cpp(6052) in function int VDCreateBase(PVDISK, const char*, "
                  "const char*, uint64_t, unsigned int, const char*, PCVDGEOMETRY, PCVDGEOMETRY, "
                  "PCRTUUID, unsigned int, PVDINTERFACE, PVDINTERFACE)",
                  f'Cannot create the disk image "{dst}": VERR_VD_INVALID_SIZE')
    if os.path.exists(dst):
        sim.error(f'Cannot create the disk image "{dst}": VERR_ALREADY_EXISTS')
    if qemu.enabled() or shutil.which("qemu-img"):
        out_fmt = {"VDI": "vdi", "VMDK": "vmdk", "VHD": "vpc"}[fmt.upper()]
        qemu._run(sim, ["qemu-img", "convert", "-q", "-f", "raw", "-O", out_fmt, src, dst])
    else:
        shutil.copyfile(src, dst)
