#!/usr/bin/env python3
"""Runs a simulator so that the Windows paths it is given reach the files Wine has there.

Usage: winpaths.py SCRIPT ARGS...

timonel.exe under Wine passes Windows paths (`C:\\users\\...\\seed.iso`, `Z:\\tmp\\...`) to
`powershell.exe` and `VBoxManage.exe`; the simulators behind the forwarders are Linux programs that
check and create those files. A drive letter is a folder of the Wine prefix
($WINEPREFIX/dosdevices/c: and z:, which Wine links to drive_c and /), so this maps
`X:\\rest` there for the file operations the simulators use, and makes os.path treat such paths
the Windows way (ntpath: `\\` separators, drive letters). Paths that are not Windows paths are
untouched, and the simulators' output keeps the Windows paths they were given.
"""

import builtins
import ntpath
import os
import re
import runpy
import shutil
import sys

_WIN = re.compile(r"^(?:\\\\\?\\)?([A-Za-z]):(?:[\\/](.*))?$", re.S)


def is_win(path):
    return isinstance(path, str) and _WIN.match(path) is not None


def to_unix(path, prefix=None):
    """`X:\\a\\b` → `$WINEPREFIX/dosdevices/x:/a/b`; anything else unchanged."""
    m = _WIN.match(path) if isinstance(path, str) else None
    if not m:
        return path
    prefix = prefix or os.environ.get("WINEPREFIX") or os.path.expanduser("~/.wine")
    rest = (m.group(2) or "").replace("\\", "/")
    return os.path.join(prefix, "dosdevices", m.group(1).lower() + ":", rest)


def _mapped(fn, nargs=1):
    def wrapper(*args, **kwargs):
        args = [to_unix(a) if i < nargs else a for i, a in enumerate(args)]
        return fn(*args, **kwargs)
    return wrapper


def _windows_style(fn, nt_fn):
    def wrapper(path, *rest):
        return nt_fn(path, *rest) if is_win(path) else fn(path, *rest)
    return wrapper


def install():
    builtins.open = _mapped(builtins.open)
    for name in ("exists", "isfile", "isdir", "getsize"):
        setattr(os.path, name, _mapped(getattr(os.path, name)))
    for name in ("remove", "unlink", "makedirs", "listdir", "stat", "rmdir"):
        setattr(os, name, _mapped(getattr(os, name)))
    for name in ("replace", "rename"):
        setattr(os, name, _mapped(getattr(os, name), nargs=2))
    shutil.copyfile = _mapped(shutil.copyfile, nargs=2)
    shutil.rmtree = _mapped(shutil.rmtree)
    os.path.join = _windows_style(os.path.join, ntpath.join)
    os.path.dirname = _windows_style(os.path.dirname, ntpath.dirname)
    os.path.basename = _windows_style(os.path.basename, ntpath.basename)
    os.path.abspath = _windows_style(os.path.abspath, ntpath.normpath)
    os.path.isabs = _windows_style(os.path.isabs, ntpath.isabs)


if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    install()
    runpy.run_path(script, run_name="__main__")
