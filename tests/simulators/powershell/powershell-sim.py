#!/usr/bin/env python3
"""A fake `powershell.exe` for timonel's Hyper-V driver tests.

Usage: powershell-sim.py -NoProfile -NonInteractive -Command <script...>

It does not interpret PowerShell. It recognises the module-qualified Hyper-V cmdlets of the
driver's scripts, reads their parameter values the way the scripts pass them (`$env:NAME`,
`'literal'`, `([int64]$env:NAME * 1MB)`, ...), and replays what Windows PowerShell 5.1 does:
`ConvertTo-Json` output (compressed, or the 5.1 layout), CRLF line ends, and on a cmdlet error an
empty stdout, the 5-line error record on stderr, exit 1.

State lives in the directory named by TIMONEL_PS_SIM_STATE:
  scenario.json  the scenario switches (see DEFAULTS), written by tests
  vms.json       the simulated VMs and virtual disks
  calls.log      one line per process (tests count PowerShell processes with it)
  INJECTED       written when a script runs code that is not the driver's (quoting broke)

The driver's disk and ISO paths are real files: New-VHD creates the differencing disk file,
Remove-VM leaves it in place (as Hyper-V does), Add-VMDvdDrive needs the ISO to exist.

With TIMONEL_HYPERV_SIM_QEMU=1 in the environment the VMs are real QEMU guests (qemu_backing.py
beside this file says how each cmdlet maps); the outputs stay the same.
"""

import json
import os
import re
import sys
import textwrap
import uuid

sys.dont_write_bytecode = True  # no __pycache__ beside the simulator in the source tree
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import vhd_convert  # noqa: E402  (Convert-VHD and Get-VHD of the base VHDX)
import qemu_backing as qemu  # noqa: E402  (real QEMU guests when TIMONEL_HYPERV_SIM_QEMU=1)

DEFAULT_SWITCH_ID = "c08cb7b8-9b3c-408e-8e30-5e16a3aeb444"

DEFAULTS = {
    # Rights: Administrator in an elevated console, member of Hyper-V Administrators.
    "admin": True,
    "hyperv_admin": False,
    # The Hyper-V PowerShell module is installed; the hypervisor runs; vmms status.
    "module": True,
    "hypervisor": True,
    "vmms": "Running",
    # Get-VMSwitch; SwitchType: 0 Private, 1 Internal, 2 External.
    "switches": [{"Id": DEFAULT_SWITCH_ID, "Name": "Default Switch", "SwitchType": 1}],
    # IP queries of a running VM print no address for the first K polls...
    "ip_after_polls": 0,
    # ...then only the IPv6 link-local address for N polls...
    "ipv6_only_polls": 0,
    # ...then both, IPv6 link-local first when true.
    "ipv6_first": False,
    "ipv4_prefix": "172.20.16.",
    # Stop-VM (graceful, as a job) leaves the VM running.
    "refuse_graceful_stop": False,
    # The guest hangs while shutting down: a graceful Stop-VM leaves the VM `Stopping` for good,
    # a `Stopping` VM never goes Off, and `Stop-VM -TurnOff` (also Remove-VM's) refuses it with
    # "'<vm>' failed to change state." / "The operation cannot be performed while the object is in
    # its current state." Without it, a VM that is `Stopping` (its guest shuts itself down) goes
    # Off while a script waits for it.
    "stuck_stopping": False,
    # Start-VM fails with PermissionDenied/AccessDenied.
    "deny_start": False,
    # Messages in "en" or "es" (Spanish Windows): same categories and ids.
    "locale": "en",
    # Wrap error messages at this console width (0: no wrapping).
    "wrap": 0,
    # What `ConvertTo-Json @()` prints for an empty array: "brackets" ("[]") or "empty" (nothing).
    "empty_array": "brackets",
    # Prefix stdout with a UTF-8 BOM.
    "bom": False,
    # The record of a user who may not manage Hyper-V: "unspecified" (NotSpecified /
    # `Unspecified,...`, "Contact the administrator of the authorization policy for the computer")
    # or "access_denied" (InvalidOperation / `AccessDenied,...`, "Contact the authorization
    # policy administrator for computer").
    "rights_record": "unspecified",
    # Records printed before the one that stops the script: ["not_found"] prints Get-VM's
    # not-found record first (what a user who may not see VMs also gets).
    "records_before": [],
    # How records are shown: "normal" (Windows PowerShell 5.1), "no_fqid" (no
    # FullyQualifiedErrorId line), "concise" (PowerShell 7: one `Cmdlet: message` line).
    "error_view": "normal",
    # No PowerShell answers: every run prints nothing at all and exits 0.
    "silent": False,
    "computer": "DESKTOP-1CILTF5",
}

HYPERV_CMDLETS = [
    "Get-VM", "New-VM", "Start-VM", "Stop-VM", "Remove-VM", "Resume-VM", "Suspend-VM", "Set-VM",
    "Get-VMSwitch", "Set-VMMemory", "Set-VMProcessor", "Set-VMFirmware", "Add-VMDvdDrive",
    "New-VHD", "Get-VHD", "Resize-VHD", "Get-VMNetworkAdapter", "Get-VMHardDiskDrive",
    "Get-VMDvdDrive", "Convert-VHD",
]
OTHER_COMMANDS = [
    "Get-Module", "Get-CimInstance", "Get-Service", "Where-Object", "ForEach-Object",
    "ConvertTo-Json", "Test-Path", "Remove-Item", "Wait-Job", "Stop-Job", "Remove-Job",
    "Get-Command", "Select-Object", "Start-Sleep",
]
KEYWORDS = ["if", "elseif", "else", "try", "catch", "finally", "foreach", "while", "throw", "return"]
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"

MESSAGES = {
    "en": {
        "position": "At line:1 char:{n}",
        "not_found": 'Hyper-V was unable to find a virtual machine with name "{name}".',
        "no_rights": "You do not have the required permission to complete this task. Contact the "
                     "administrator of the authorization policy for the computer '{computer}'.",
        "no_rights_2": "You do not have the required permission to complete this task. Contact the "
                       "authorization policy administrator for computer '{computer}'.",
        "object": "Hyper-V encountered an error trying to access an object on computer '{computer}' "
                  "because the object was not found. The object might have been deleted, or you "
                  "might not have permission to perform the task. Verify that the Virtual Machine "
                  "Management service on the computer is running. If the service is running, try to "
                  "perform the task again by using Run as Administrator.",
        "no_term": "The term '{cmd}' is not recognized as the name of a cmdlet, function, script "
                   "file, or operable program. Check the spelling of the name, or if a path was "
                   "included, verify that the path is correct and try again.",
        "memory": "Failed to modify device 'Memory'. Failed to modify device 'Memory'. ({name}) "
                  "The memory value assigned ('{mb}' MB) is not properly aligned. Try again with "
                  "a value that is a multiple of 2 MB.",
        "no_switch": 'Hyper-V was unable to find a virtual switch with name "{switch}".',
        "no_file": "The system cannot find the file specified. ({path})",
        "start_denied": "'{name}' failed to start. (Virtual machine ID {id})",
        "wrong_state": "'{name}' failed to change state.\nThe operation cannot be performed while "
                       "the object is in its current state.",
        "powercli": "You are not currently connected to any servers. Please connect first using a "
                    "Connect cmdlet.",
    },
    "es": {
        "position": "En l\u00ednea: 1 Car\u00e1cter: {n}",
        "not_found": 'Hyper-V no pudo encontrar una m\u00e1quina virtual con el nombre "{name}".',
        "no_rights": "No tiene el permiso necesario para completar esta tarea. P\u00f3ngase en "
                     "contacto con el administrador de la directiva de autorizaci\u00f3n del equipo "
                     "'{computer}'.",
        "no_rights_2": "No tiene el permiso necesario para completar esta tarea. P\u00f3ngase en "
                       "contacto con el administrador de la directiva de autorizaci\u00f3n del "
                       "equipo '{computer}'.",
        "object": "Hyper-V encontr\u00f3 un error al intentar obtener acceso a un objeto en el equipo "
                  "'{computer}' porque no se encontr\u00f3 el objeto.",
        "no_term": "El t\u00e9rmino '{cmd}' no se reconoce como nombre de un cmdlet, funci\u00f3n, "
                   "archivo de script o programa ejecutable.",
        "memory": "No se pudo modificar el dispositivo 'Memory'. ({name}) El valor de memoria "
                  "asignado ('{mb}' MB) no est\u00e1 alineado correctamente.",
        "no_switch": 'Hyper-V no pudo encontrar un conmutador virtual con el nombre "{switch}".',
        "no_file": "El sistema no puede encontrar el archivo especificado. ({path})",
        "start_denied": "No se pudo iniciar '{name}'. (Id. de m\u00e1quina virtual {id})",
        "wrong_state": "No se pudo cambiar el estado de '{name}'.\nNo se puede realizar la "
                       "operaci\u00f3n mientras el objeto se encuentra en su estado actual.",
        "powercli": "No est\u00e1 conectado a ning\u00fan servidor.",
    },
}


class PsError(Exception):
    """A terminating error: printed as an error record, exit 1."""

    def __init__(self, needle, message, category, target, activity, reason, fqid, prefix=True):
        super().__init__(message)
        self.needle = needle
        self.message = message
        self.category = category
        self.target = target
        self.activity = activity
        self.reason = reason
        self.fqid = fqid
        self.prefix = prefix
        self.before = []


class SimBug(Exception):
    """The script is not what the simulator understands: exit 2 with the reason."""


# ---------------------------------------------------------------------------------------------
# Script checks: quoting, injection, module qualification.


def tokenize_check(script):
    """Walks the script like PowerShell's tokenizer would, enough to refuse what the driver must
    never produce: double-quoted strings, `$(...)` subexpressions and backticks outside single
    quotes, and commands that are not the driver's (spliced data running as code)."""
    i, n = 0, len(script)
    heads = []
    expect_head = True
    while i < n:
        c = script[i]
        if c in SINGLE_QUOTES:
            j = i + 1
            while j < n:
                if script[j] in SINGLE_QUOTES:
                    if j + 1 < n and script[j + 1] in SINGLE_QUOTES:
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise SimBug("unterminated single-quoted string")
            i = j + 1
            expect_head = False
            continue
        if c == '"':
            raise SimBug("double-quoted string in script (expands `$` and backticks)")
        if c == "`":
            raise SimBug("backtick outside a single-quoted string")
        if c == "$" and i + 1 < n and script[i + 1] == "(":
            return ("subexpression", script[i:i + 40])
        if c == "#":
            raise SimBug("comment in a one-line script")
        if c in ";{}|\n":
            expect_head = True
            i += 1
            continue
        if c.isspace() or c in "()":
            i += 1
            continue
        if expect_head:
            m = re.match(r"[^\s;{}|()]+", script[i:])
            word = m.group(0) if m else c
            if not re.match(re.escape(word) + r"\s*=[^=]", script[i:]):
                heads.append(word)  # not a hashtable key (`Name = ...`)
            expect_head = False
            i += len(word)
            continue
        i += 1
    allowed = set(KEYWORDS) | set(OTHER_COMMANDS) | {"Hyper-V\\" + c for c in HYPERV_CMDLETS}
    for h in heads:
        if h.startswith(("$", "[", "@", "-")) or h.isdigit():
            continue
        if h in allowed or h.lower() in KEYWORDS:
            continue
        return ("command", h)
    return None


def unqualified_cmdlet(script):
    for c in HYPERV_CMDLETS:
        for m in re.finditer(r"(?<![\w\\-])" + re.escape(c) + r"(?![\w-])", script):
            return c, m.start()
    return None


# ---------------------------------------------------------------------------------------------
# Parameters as the driver's scripts pass them.


def split_value(text):
    """The first argument token of `text` and the rest."""
    text = text.lstrip()
    if not text:
        return "", ""
    c = text[0]
    if c in SINGLE_QUOTES:
        j = 1
        while j < len(text):
            if text[j] in SINGLE_QUOTES:
                if j + 1 < len(text) and text[j + 1] in SINGLE_QUOTES:
                    j += 2
                    continue
                break
            j += 1
        return text[:j + 1], text[j + 1:]
    if c == "(":
        depth = 0
        for j, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return text[:j + 1], text[j + 1:]
        return text, ""
    m = re.match(r"[^\s;|})]+", text)
    return m.group(0), text[m.end():]


def call_params(script, cmdlet, start=0):
    """The parameters of the first `cmdlet` call at or after `start`: {name: raw token or True}."""
    m = re.compile(re.escape(cmdlet) + r"(?![\w-])").search(script, start)
    if not m:
        return None
    rest = script[m.end():]
    params = {}
    while True:
        rest = rest.lstrip()
        if not rest or rest[0] in ";|})":
            break
        if rest[0] != "-":
            _, rest = split_value(rest)
            continue
        pm = re.match(r"-(\w+)(:?)", rest)
        name = pm.group(1)
        rest = rest[pm.end():]
        nxt = rest.lstrip()
        if pm.group(2) == ":" or (nxt and nxt[0] not in "-;|})"):
            value, rest = split_value(rest)
            params[name.lower()] = value
        else:
            params[name.lower()] = True
    return params


def all_calls(script, cmdlet):
    out, pos = [], 0
    pat = re.compile(re.escape(cmdlet) + r"(?![\w-])")
    while True:
        m = pat.search(script, pos)
        if not m:
            return out
        out.append((m.start(), call_params(script, cmdlet, m.start())))
        pos = m.end()


def resolve(script, token):
    """The value of an argument token."""
    if token is True or token is None:
        return token
    if token[0] in SINGLE_QUOTES:
        inner = token[1:-1]
        return re.sub("[" + SINGLE_QUOTES + "]{2}", lambda m: m.group(0)[0], inner)
    m = re.fullmatch(r"\$env:(\w+)", token)
    if m:
        return os.environ.get(m.group(1), "")
    m = re.fullmatch(r"\(?\s*\[(int64|int|long)\]\$env:(\w+)\s*(\*\s*1MB)?\s*\)?", token)
    if m:
        v = int(os.environ.get(m.group(2), "0") or "0")
        return v * (1024 * 1024 if m.group(3) else 1)
    m = re.fullmatch(r"\$(\w+)", token)
    if m and m.group(1).lower() in ("true", "false"):
        return m.group(1).lower() == "true"
    if m:
        assign = re.search(r"\$" + re.escape(m.group(1)) + r"\s*=\s*([^;]+)", script)
        if assign and "$env:" in assign.group(1):
            return resolve(script, assign.group(1).strip())
        return "$" + m.group(1)
    if re.fullmatch(r"\d+", token):
        return int(token)
    return token


def param(script, cmdlet, name, required=True, start=0):
    p = call_params(script, cmdlet, start)
    if p is None or name.lower() not in p:
        if required:
            raise SimBug(f"`{cmdlet}` without -{name}")
        return None
    return resolve(script, p[name.lower()])


# ---------------------------------------------------------------------------------------------
# Output.


def ps_json_escape(text):
    # Windows PowerShell 5.1 (JavaScriptSerializer) escapes these.
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("'", "\\u0027"), ("&", "\\u0026")):
        text = text.replace(ch, esc)
    return text


def to_json(obj, compress, empty_array):
    if isinstance(obj, list) and not obj and empty_array == "empty":
        return ""
    if compress:
        return ps_json_escape(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
    return ps_json_escape(pretty51(obj, 0))


def pretty51(obj, level):
    """ConvertTo-Json's 5.1 layout: 4-space indent, two spaces after the colon."""
    pad = "    " * level
    if isinstance(obj, dict):
        if not obj:
            return "{\n\n" + pad + "}"
        items = [pad + "    " + json.dumps(k) + ":  " + pretty51(v, level + 1) for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if not obj:
            return "[\n\n" + pad + "]"
        items = [pad + "    " + pretty51(v, level + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def render_errors(script, err, scenario):
    """Every record of a failed run: the ones printed before it, then the one that stopped it."""
    return "".join(render_error(script, e, scenario) for e in err.before + [err])


def render_error(script, err, scenario):
    loc = MESSAGES.get(scenario["locale"], MESSAGES["en"])
    pos = script.find(err.needle) if err.needle else -1
    pos = max(pos, 0)
    # The statement around the position, as PowerShell shows long lines: `+ ... part ...`.
    start = script.rfind("; ", 0, pos)
    start = 0 if start < 0 else start + 2
    end = script.find("; ", pos)
    end = len(script) if end < 0 else end
    shown = script[start:end]
    lead = "... " if start > 0 else ""
    trail = " ..." if end < len(script) else ""
    col = len(lead) + (pos - start)
    width = len(err.needle) if err.needle else len(shown)
    message = err.message
    if err.prefix and err.activity:
        message = f"Hyper-V\\{err.activity} : {message}" if err.activity in HYPERV_CMDLETS else f"{err.activity} : {message}"
    view = scenario.get("error_view", "normal")
    if view == "concise":
        # PowerShell 7's ConciseView: `Cmdlet: message`, no position, category or id.
        head = err.activity + ": " if err.prefix and err.activity else ""
        return head + err.message + "\n"
    if scenario.get("wrap"):
        message = "\n".join(textwrap.wrap(message, int(scenario["wrap"])))
    lines = [
        message,
        loc["position"].format(n=pos + 1),
        "+ " + lead + shown + trail,
        "+ " + " " * col + "~" * max(width, 1),
        f"    + CategoryInfo          : {err.category}: ({err.target}) [{err.activity}], {err.reason}",
        f"    + FullyQualifiedErrorId : {err.fqid}",
        " ",
        "",
    ]
    if view == "no_fqid":
        lines = [l for l in lines if "FullyQualifiedErrorId" not in l]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The simulated host.


class Sim:
    def __init__(self, state_dir, script):
        self.dir = state_dir
        self.script = script
        self.scenario = dict(DEFAULTS)
        path = os.path.join(state_dir, "scenario.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.scenario.update(json.load(f))
        self.msg = MESSAGES.get(self.scenario["locale"], MESSAGES["en"])
        self.state = {"vms": [], "vhds": {}}
        path = os.path.join(state_dir, "vms.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.state = json.load(f)
        self.lookup_kind = "-"
        if qemu.enabled():
            qemu.refresh(self)

    def fail(self, message):
        """The QEMU backing could not do what a cmdlet asked (the host lacks something)."""
        raise SimBug(message)

    def save(self):
        path = os.path.join(self.dir, "vms.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.state, f, indent=1, ensure_ascii=False)
        os.replace(tmp, path)

    def fmt(self, key, **kw):
        return self.msg[key].format(computer=self.scenario["computer"], **kw)

    def json_out(self, obj):
        compress = "-Compress" in self.script
        return to_json(obj, compress, self.scenario["empty_array"])

    # -- errors every Hyper-V cmdlet can raise ----------------------------------------------

    def check_host(self):
        first = None
        for c in HYPERV_CMDLETS:
            m = re.search(re.escape("Hyper-V\\" + c) + r"(?![\w-])", self.script)
            if m and (first is None or m.start() < first[1]):
                first = (c, m.start())
        if first is None:
            return
        cmdlet, _ = first
        qualified = "Hyper-V\\" + cmdlet
        if not self.scenario["module"]:
            raise PsError(qualified, qualified + " : " + self.fmt("no_term", cmd=qualified), "ObjectNotFound",
                          qualified + ":String", "", "CommandNotFoundException",
                          "CommandNotFoundException", prefix=False)
        cls = "Microsoft.HyperV.PowerShell.Commands." + cmdlet.replace("-", "")
        if not self.scenario["hypervisor"] or self.scenario["vmms"] != "Running":
            raise PsError(qualified, self.fmt("object"), "ObjectNotFound", ":", cmdlet,
                          "VirtualizationException", "ObjectNotFound," + cls)
        if not self.scenario["admin"] and not self.scenario["hyperv_admin"]:
            if self.scenario["rights_record"] == "access_denied":
                err = PsError(qualified, self.fmt("no_rights_2"), "InvalidOperation", ":", cmdlet,
                              "VirtualizationException", "AccessDenied," + cls)
            else:
                err = PsError(qualified, self.fmt("no_rights"), "NotSpecified", ":", cmdlet,
                              "VirtualizationException", "Unspecified," + cls)
            if "not_found" in self.scenario["records_before"]:
                name = os.environ.get("TIMONEL_VM_NAME", "") or "*"
                err.before.append(PsError(
                    "Hyper-V\\Get-VM", self.fmt("not_found", name=name), "InvalidArgument",
                    f"{name}:String", "Get-VM", "VirtualizationException",
                    "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM"))
            raise err

    def throw(self, fqid):
        return PsError(f"throw '{fqid}'", fqid, "OperationStopped", fqid + ":String", "",
                       "RuntimeException", fqid, prefix=False)

    # -- VMs ---------------------------------------------------------------------------------

    def find_vm(self):
        """The VM the script's lookup statements select."""
        m = re.search(r"\$_\.VMId\.ToString\(\) -eq \$env:(\w+)", self.script)
        if m:
            self.lookup_kind = "id"
            vm_id = os.environ.get(m.group(1), "")
            found = [v for v in self.state["vms"] if v["VMId"].lower() == vm_id.lower() and vm_id]
            if len(found) != 1:
                raise self.throw("timonel:vm-not-found")
            return found[0]
        name = param(self.script, "Hyper-V\\Get-VM", "Name", required=False)
        if name is None:
            raise SimBug("no VM lookup (`Get-VM -Name` or a VMId filter) in the script")
        self.lookup_kind = "name"
        found = [v for v in self.state["vms"] if v["Name"].lower() == str(name).lower()]
        if not found:
            raise PsError("Hyper-V\\Get-VM", self.fmt("not_found", name=name), "InvalidArgument",
                          f"{name}:String", "Get-VM", "VirtualizationException",
                          "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM")
        if "'timonel:machine='" not in self.script:
            if len(found) > 1:
                raise SimBug("a name lookup that does not handle duplicate names")
            return found[0]
        token = "timonel:machine=" + str(name)
        mine = [v for v in found if token in (v.get("Notes") or "").split()]
        if not mine:
            raise self.throw("timonel:foreign-vm")
        if len(mine) > 1:
            raise self.throw("timonel:duplicate-vm")
        return mine[0]

    @staticmethod
    def vm_view(vm):
        return {"VMId": vm["VMId"], "Name": vm["Name"], "State": vm["State"]}

    # -- operations ----------------------------------------------------------------------------

    def op_probe(self):
        s = self.scenario
        return self.json_out({
            "Module": bool(s["module"]),
            "ModuleVersion": "2.0.0.0" if s["module"] else "",
            "Hypervisor": bool(s["hypervisor"]),
            "Admin": bool(s["admin"]),
            "HyperVAdmin": bool(s["hyperv_admin"]),
            "Vmms": s["vmms"] or "",
            "Windows": "10.0.19045.0",
        })

    def op_inspect(self):
        m = re.search(r"\$_\.Name -eq \$env:(\w+)", self.script)
        if not m:
            raise SimBug("inspect without a `$_.Name -eq $env:...` filter")
        name = os.environ.get(m.group(1), "")
        vms = [dict(self.vm_view(v), Notes=v.get("Notes") or "")
               for v in self.state["vms"] if v["Name"].lower() == str(name).lower()]
        switches = [{"Id": s["Id"], "Name": s["Name"], "SwitchType": s["SwitchType"],
                     "AllowManagementOS": bool(s.get("AllowManagementOS", s["SwitchType"] != 0))}
                    for s in self.scenario["switches"]]
        return self.json_out({"Switches": switches, "VMs": vms})

    def op_create(self):
        s = self.script
        vhd = param(s, "Test-Path", "LiteralPath", required=False)
        if vhd and os.path.exists(vhd):
            os.remove(vhd)
        path = param(s, "Hyper-V\\New-VHD", "Path")
        parent = param(s, "Hyper-V\\New-VHD", "ParentPath")
        if call_params(s, "Hyper-V\\New-VHD").get("differencing") is not True:
            raise SimBug("New-VHD without -Differencing")
        if not os.path.isfile(parent):
            raise PsError("Hyper-V\\New-VHD", self.fmt("no_file", path=parent), "ObjectNotFound",
                          ":", "New-VHD", "VirtualizationException",
                          "ObjectNotFound,Microsoft.Vhd.PowerShell.Cmdlets.NewVhd")
        vm = None
        try:
            if qemu.enabled():
                qemu.make_differencing(self, path, parent)
                parent_size = qemu.disk_size(self, parent)
            else:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(json.dumps({"differencing": True, "parent": parent}))
                parent_size = self.state["vhds"].get(parent, {}).get("Size", os.path.getsize(parent))
            self.state["vhds"][path] = {"Parent": parent, "Size": parent_size}
            if call_params(s, "Hyper-V\\Resize-VHD") is not None:
                size = param(s, "Hyper-V\\Resize-VHD", "SizeBytes")
                if param(s, "Hyper-V\\Resize-VHD", "Path") != path:
                    raise SimBug("Resize-VHD on another disk than New-VHD made")
                if int(size) > parent_size:
                    self.state["vhds"][path]["Size"] = int(size)
                    if qemu.enabled():
                        qemu.resize(self, path, int(size))
            name = param(s, "Hyper-V\\New-VM", "Name")
            mem = int(param(s, "Hyper-V\\New-VM", "MemoryStartupBytes"))
            gen = int(param(s, "Hyper-V\\New-VM", "Generation", required=False) or 1)
            switch = param(s, "Hyper-V\\New-VM", "SwitchName", required=False)
            vhd_path = param(s, "Hyper-V\\New-VM", "VHDPath", required=False)
            if mem % (2 * 1024 * 1024):
                mb = mem // (1024 * 1024)
                raise PsError("Hyper-V\\New-VM", self.fmt("memory", name=name, mb=mb),
                              "InvalidArgument", ":", "New-VM", "VirtualizationException",
                              "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.NewVM")
            if switch is not None and switch not in [x["Name"] for x in self.scenario["switches"]]:
                raise PsError("Hyper-V\\New-VM", self.fmt("no_switch", switch=switch),
                              "InvalidArgument", f"{switch}:String", "New-VM",
                              "VirtualizationException",
                              "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.NewVM")
            vm = {
                "VMId": str(uuid.uuid4()), "Name": name, "State": "Off", "Generation": gen,
                "MemoryStartupBytes": mem, "DynamicMemoryEnabled": True, "ProcessorCount": 1,
                "SecureBoot": gen == 2, "SwitchName": switch, "Path": param(s, "Hyper-V\\New-VM", "Path", required=False),
                "BootDevice": param(s, "Hyper-V\\New-VM", "BootDevice", required=False),
                "Notes": "", "HardDisks": [vhd_path] if vhd_path else [], "Dvds": [],
                "AutomaticCheckpointsEnabled": True, "ip_polls": 0,
            }
            self.state["vms"].append(vm)  # New-VM happily creates a second VM of the same name
            for _, p in all_calls(s, "Hyper-V\\Set-VM"):
                if "notes" in p:
                    vm["Notes"] = resolve(s, p["notes"])
                if "automaticcheckpointsenabled" in p:
                    vm["AutomaticCheckpointsEnabled"] = resolve(s, p["automaticcheckpointsenabled"])
            if call_params(s, "Hyper-V\\Set-VMMemory") is not None:
                vm["DynamicMemoryEnabled"] = param(s, "Hyper-V\\Set-VMMemory", "DynamicMemoryEnabled")
            if call_params(s, "Hyper-V\\Set-VMProcessor") is not None:
                vm["ProcessorCount"] = int(param(s, "Hyper-V\\Set-VMProcessor", "Count"))
            if call_params(s, "Hyper-V\\Set-VMFirmware") is not None:
                if param(s, "Hyper-V\\Set-VMFirmware", "EnableSecureBoot", required=False) == "Off":
                    vm["SecureBoot"] = False
                template = param(s, "Hyper-V\\Set-VMFirmware", "SecureBootTemplate", required=False)
                if template:
                    vm["SecureBootTemplate"] = template
            if call_params(s, "Hyper-V\\Add-VMDvdDrive") is not None:
                iso = param(s, "Hyper-V\\Add-VMDvdDrive", "Path")
                if not os.path.isfile(iso):
                    raise PsError("Hyper-V\\Add-VMDvdDrive", self.fmt("no_file", path=iso),
                                  "ObjectNotFound", ":", "Add-VMDvdDrive", "VirtualizationException",
                                  "ObjectNotFound,Microsoft.HyperV.PowerShell.Commands.AddVMDvdDrive")
                vm["Dvds"].append(iso)
        except PsError:
            # The script's catch block: remove the half-made VM and disk, rethrow.
            if "catch {" in s:
                if vm is not None:
                    self.state["vms"].remove(vm)
                if os.path.exists(path):
                    os.remove(path)
                self.state["vhds"].pop(path, None)
            raise
        return self.json_out(self.vm_view(vm))

    def op_state(self):
        return self.json_out(self.vm_view(self.find_vm()))

    def op_ip(self):
        vm = self.find_vm()
        ips = []
        if vm["State"] == "Running":
            vm["ip_polls"] = vm.get("ip_polls", 0) + 1
            k = int(self.scenario["ip_after_polls"])
            n = int(self.scenario["ipv6_only_polls"])
            index = self.state["vms"].index(vm) + 10
            v6 = "fe80::215:5dff:fe45:%x" % index
            v4 = self.scenario["ipv4_prefix"] + str(index)
            if vm["ip_polls"] <= k:
                ips = []
            elif vm.get("qemu"):
                # The guest's own addresses: none until it is up, its lease once it has one.
                v4, v6 = qemu.addresses(self, vm)
                if v4 and v6:
                    ips = [v6, v4] if self.scenario["ipv6_first"] else [v4, v6]
                else:
                    ips = [a for a in (v4, v6) if a]
            elif vm["ip_polls"] <= k + n or not self.switch_has_dhcp(vm.get("SwitchName")):
                # Without a DHCP server on its switch the guest only ever has its link-local
                # IPv6 address, which KVP reports like any other.
                ips = [v6]
            else:
                ips = [v6, v4] if self.scenario["ipv6_first"] else [v4, v6]
        out = {"VMId": vm["VMId"], "State": vm["State"], "IPAddresses": ips}
        if "SwitchName" in self.script:
            out["SwitchName"] = vm.get("SwitchName") or ""
        return self.json_out(out)

    def switch_has_dhcp(self, name):
        """Whether guests on switch `name` get a DHCP lease: a switch's `Dhcp` key, else true for
        the Default Switch (Windows' NAT and DHCP) and External switches (the LAN's DHCP, assumed),
        false for other Internal and Private switches."""
        sw = next((x for x in self.scenario["switches"] if x["Name"] == name), None)
        if sw is None:
            return False
        if "Dhcp" in sw:
            return bool(sw["Dhcp"])
        return sw["Id"] == DEFAULT_SWITCH_ID or sw["SwitchType"] == 2

    def op_start(self):
        vm = self.find_vm()
        self.wait_stopping(vm)
        if vm["State"] == "Stopping":
            raise self.wrong_state(vm, "Start-VM", "Hyper-V\\Start-VM -VM $vm")
        if vm["State"] == "Paused":
            if vm.get("qemu"):
                qemu.qmp(self, vm, "cont")
            vm["State"] = "Running"
        elif vm["State"] != "Running":
            if self.scenario["deny_start"]:
                raise PsError("Hyper-V\\Start-VM", self.fmt("start_denied", name=vm["Name"], id=vm["VMId"].upper()),
                              "PermissionDenied", ":", "Start-VM", "VirtualizationException",
                              "AccessDenied,Microsoft.HyperV.PowerShell.Commands.StartVM")
            if qemu.enabled():
                qemu.start(self, vm)
            vm["State"] = "Running"
            vm["ip_polls"] = 0
        return self.json_out(self.vm_view(vm))

    def wrong_state(self, vm, cmdlet="Stop-VM", needle="Hyper-V\\Stop-VM -VM $vm -TurnOff"):
        """A state change Hyper-V refuses to a VM that is `Stopping` (by default
        `Stop-VM -TurnOff` of one that hangs while stopping). The state stays as it is."""
        self.save()
        return PsError(needle, self.fmt("wrong_state", name=vm["Name"]), "InvalidOperation",
                       ":", cmdlet, "VirtualizationException",
                       "InvalidState,Microsoft.HyperV.PowerShell.Commands." + cmdlet.replace("-", ""))

    def wait_stopping(self, vm):
        """A script that waits while the VM is `Stopping` sees its guest's shutdown end (unless
        `stuck_stopping`)."""
        waits = "-eq 'Stopping'" in self.script and "Start-Sleep" in self.script
        if vm["State"] == "Stopping" and waits and not self.scenario["stuck_stopping"]:
            vm["State"] = "Off"

    def op_stop(self):
        vm = self.find_vm()
        forced = False
        stuck = self.scenario["stuck_stopping"]
        if vm["State"] == "Paused" and "-eq 'Paused') { Hyper-V\\Resume-VM" in self.script:
            if vm.get("qemu"):
                qemu.qmp(self, vm, "cont")
            vm["State"] = "Running"
        graceful = call_params(self.script, "Hyper-V\\Stop-VM -VM $vm -Force -AsJob") is not None
        if graceful and vm["State"] == "Running":
            if "Wait-Job" not in self.script:
                raise SimBug("a graceful stop job that nobody waits for")
            if stuck:
                vm["State"] = "Stopping"
            elif vm.get("qemu") and not self.scenario["refuse_graceful_stop"]:
                # The guest shuts down within the job's wait, or is still Running after it.
                secs = int(os.environ.get("TIMONEL_STOP_SECONDS", "0") or "0")
                if qemu.shutdown(self, vm, secs):
                    vm["State"] = "Off"
            elif not self.scenario["refuse_graceful_stop"]:
                vm["State"] = "Off"
        self.wait_stopping(vm)
        if "-TurnOff" in self.script and vm["State"] not in ("Off", "Saved", "FastSaved"):
            if vm["State"] == "Stopping" and stuck:
                raise self.wrong_state(vm)
            qemu.turn_off(self, vm)
            vm["State"] = "Off"
            forced = True
        return self.json_out({"VMId": vm["VMId"], "State": vm["State"], "Forced": forced})

    def op_pause(self):
        """Suspend-VM pauses a running VM (state `Paused`)."""
        return self.pause_or_resume("Suspend-VM", "Running", "Paused")

    def op_unpause(self):
        """Resume-VM lets a paused VM run on (`Running`)."""
        return self.pause_or_resume("Resume-VM", "Paused", "Running")

    def pause_or_resume(self, cmdlet, before, after):
        """The driver's script only calls `cmdlet` on a VM in state `before`; the cmdlet's refusal
        of other states is not modelled, so a script without that guard is a simulator bug."""
        if f"-eq '{before}') {{ Hyper-V\\{cmdlet}" not in self.script:
            raise SimBug(f"{cmdlet} without looking at the state first")
        vm = self.find_vm()
        if vm["State"] == before:
            if vm.get("qemu"):
                qemu.qmp(self, vm, "stop" if after == "Paused" else "cont")
            vm["State"] = after
        return self.json_out(self.vm_view(vm))

    def remove(self, vm):
        files = [f for f in vm["HardDisks"] + vm["Dvds"] if f]
        if vm["State"] == "Stopping" and self.scenario["stuck_stopping"]:
            raise self.wrong_state(vm)
        vm["State"] = "Off"
        self.state["vms"].remove(vm)  # the disk files stay, as with Hyper-V
        if qemu.enabled():
            qemu.removed(self, vm)
        return {"VMId": vm["VMId"], "Name": vm["Name"], "Files": files}

    def op_delete(self):
        return self.json_out([self.remove(self.find_vm())])

    def op_delete_cluster(self):
        m = re.search(r"'timonel:cluster=' \+ \$env:(\w+)", self.script)
        if not m:
            raise SimBug("delete by cluster without the `timonel:cluster=` filter")
        token = "timonel:cluster=" + os.environ.get(m.group(1), "")
        vms = [v for v in self.state["vms"] if token in (v.get("Notes") or "").split()]
        return self.json_out([self.remove(v) for v in vms])

    def operation(self):
        s = self.script
        if "Get-Module -ListAvailable" in s:
            return "probe", self.op_probe
        if "Hyper-V\\Convert-VHD" in s:
            return "convert-vhd", lambda: vhd_convert.op_convert(self, param, PsError, SimBug)
        if "Hyper-V\\New-VM" in s:
            return "create", self.op_create
        if "Hyper-V\\Remove-VM" in s:
            if "'timonel:cluster='" in s:
                return "delete-cluster", self.op_delete_cluster
            return "delete", self.op_delete
        if "Hyper-V\\Stop-VM" in s:
            return "stop", self.op_stop
        if "Hyper-V\\Start-VM" in s:
            return "start", self.op_start
        if "Hyper-V\\Suspend-VM" in s:
            return "pause", self.op_pause
        if "Hyper-V\\Resume-VM" in s:
            return "unpause", self.op_unpause
        if "Hyper-V\\Get-VMNetworkAdapter" in s:
            return "ip", self.op_ip
        if "Hyper-V\\Get-VMSwitch" in s:
            return "inspect", self.op_inspect
        if "Hyper-V\\Get-VM" in s:
            return "state", self.op_state
        raise SimBug("no Hyper-V operation the simulator knows")


def parse_argv(argv):
    flags, i = [], 0
    while i < len(argv) and argv[i].startswith("-") and argv[i].lower() != "-command":
        flags.append(argv[i].lower())
        i += 1
    if i >= len(argv) or argv[i].lower() != "-command":
        raise SimBug("expected -Command <script>")
    missing = [f for f in ("-noprofile", "-noninteractive") if f not in flags]
    if missing:
        raise SimBug("missing " + " ".join(missing))
    # powershell.exe joins the remaining words with spaces.
    return " ".join(argv[i + 1:])


def write(stream, text, bom=False):
    data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    stream.buffer.write((b"\xef\xbb\xbf" if bom and data else b"") + data)
    stream.flush()


def main():
    state_dir = os.environ.get("TIMONEL_PS_SIM_STATE")
    if not state_dir:
        write(sys.stderr, "powershell-sim: set TIMONEL_PS_SIM_STATE to a state directory\n")
        return 2
    os.makedirs(state_dir, exist_ok=True)
    lock = open(os.path.join(state_dir, ".lock"), "w")
    try:
        import fcntl
        fcntl.flock(lock, fcntl.LOCK_EX)
    except ImportError:
        pass
    script = ""
    op = "?"
    try:
        script = parse_argv(sys.argv[1:])
        sim = Sim(state_dir, script)
        if sim.scenario.get("silent"):
            # A PowerShell that answers nothing at all: no output on either stream, exit 0.
            with open(os.path.join(state_dir, "calls.log"), "a", encoding="utf-8") as f:
                f.write("silent lookup=-\n")
            return 0
        if "[Console]::OutputEncoding" not in script or "$ErrorActionPreference = 'Stop'" not in script:
            raise SimBug("the script must pin [Console]::OutputEncoding and set $ErrorActionPreference = 'Stop'")
        unq = unqualified_cmdlet(script)
        if unq:
            # A host with VMware PowerCLI: its Get-VM shadows Hyper-V's.
            raise PsError(unq[0], unq[0] + " : " + sim.msg["powercli"], "ResourceUnavailable", ":", unq[0],
                          "ViError", "Core_BaseCmdlet_NotConnectedError,VMware.VimAutomation.ViCore.Cmdlets.Commands.GetVM",
                          prefix=False)
        bad = tokenize_check(script)
        if bad:
            with open(os.path.join(state_dir, "INJECTED"), "a", encoding="utf-8") as f:
                f.write(f"{bad[0]}: {bad[1]}\n")
            raise PsError(bad[1], bad[1] + " : " + sim.fmt("no_term", cmd=bad[1]), "ObjectNotFound",
                          bad[1] + ":String", "", "CommandNotFoundException",
                          "CommandNotFoundException", prefix=False)
        op, run = sim.operation()
        if op != "probe":
            sim.check_host()
        out = run()
        sim.save()
        code = 0
    except PsError as e:
        out = ""
        write(sys.stderr, render_errors(script, e, sim.scenario))
        code = 1
    except SimBug as e:
        out = ""
        write(sys.stderr, f"powershell-sim: {e}\nscript: {script}\n")
        code = 2
    finally:
        with open(os.path.join(state_dir, "calls.log"), "a", encoding="utf-8") as f:
            kind = getattr(locals().get("sim"), "lookup_kind", "-")
            f.write(f"{op} lookup={kind}\n")
    if out:
        write(sys.stdout, out + "\n", bom=sim.scenario.get("bom", False))
    return code


if __name__ == "__main__":
    sys.exit(main())
