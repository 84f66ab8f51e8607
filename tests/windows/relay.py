#!/usr/bin/env python3
"""The Linux side of the Windows lane's forwarders (tests/win-forwarder).

Under Wine, timonel.exe cannot start Linux programs, so the `powershell.exe` and `VBoxManage.exe`
it runs are the forwarder, a Windows program that sends its run here over loopback: arguments
(as Windows parsed its command line), environment, working folder and stdin. This relay runs the
simulator the forwarder's config names and sends back its stdout, stderr and exit code unchanged.

Usage: relay.py PORT_FILE   (the secret comes from TIMONEL_RELAY_SECRET)
Listens on 127.0.0.1, an ephemeral port written to PORT_FILE once it accepts connections; runs
until killed. Targets:
  powershell   tests/simulators/powershell/powershell-sim.py
  vboxmanage   tests/simulators/vboxmanage/VBoxManage
  echo         prints the arguments and TIMONEL_* variables it got as JSON (quoting checks)
The simulators run through winpaths.py, which lets them reach the Windows paths they are given
(`C:\\...`) through the Wine prefix's drive letters. Each run is appended to
$TIMONEL_RELAY_LOG (when set) as one JSON line: target, arguments, exit code.
"""

import hmac
import json
import os
import socket
import socketserver
import struct
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.realpath(__file__))
SIMULATORS = os.path.join(HERE, "..", "simulators")
TARGETS = {
    "powershell": [os.path.join(SIMULATORS, "powershell", "powershell-sim.py")],
    "vboxmanage": [os.path.join(SIMULATORS, "vboxmanage", "VBoxManage")],
}
MAGIC = b"TFWD1\n"
# Windows variables that would mislead a Linux process; the relay's own values stay.
KEEP_OWN = {"PATH", "TEMP", "TMP", "HOME", "PWD", "PYTHONPATH", "PYTHONHOME", "WINEPREFIX"}
SECRET = os.environ.get("TIMONEL_RELAY_SECRET", "").encode()
LOG = os.environ.get("TIMONEL_RELAY_LOG")
LOG_LOCK = threading.Lock()


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the forwarder closed the connection")
        buf += chunk
    return buf


def read_str(sock):
    (n,) = struct.unpack(">I", read_exact(sock, 4))
    return read_exact(sock, n).decode("utf-8")


def read_request(sock):
    if read_exact(sock, len(MAGIC)) != MAGIC:
        raise ValueError("not a forwarder")
    secret, target, cwd = read_str(sock), read_str(sock), read_str(sock)
    (argc,) = struct.unpack(">I", read_exact(sock, 4))
    args = [read_str(sock) for _ in range(argc)]
    (envc,) = struct.unpack(">I", read_exact(sock, 4))
    env = [(read_str(sock), read_str(sock)) for _ in range(envc)]
    return secret, target, cwd, args, env


class Handler(socketserver.BaseRequestHandler):
    def send(self, kind, data):
        with self.send_lock:
            self.request.sendall(struct.pack(">BI", kind, len(data)) + data)

    def handle(self):
        self.send_lock = threading.Lock()
        try:
            secret, target, cwd, args, env = read_request(self.request)
        except (ValueError, EOFError, UnicodeDecodeError) as e:
            return self.send(4, f"bad request: {e}".encode())
        if not hmac.compare_digest(secret.encode(), SECRET):
            return self.send(4, b"wrong secret")
        if target == "echo":
            out = json.dumps({"args": args, "cwd": cwd,
                              "env": {k: v for k, v in env if k.startswith("TIMONEL_")}},
                             ensure_ascii=False)
            self.send(1, out.encode("utf-8"))
            # Read the forwarder's stdin to its end first: closing with its frames unread would
            # reset the connection, and the forwarder could lose the answer already sent.
            self.request.settimeout(10)  # a stdin that never ends (a console) is not waited on
            self.feed(None)
            self.request.settimeout(None)
            return self.finish_run(target, args, 0)
        if target not in TARGETS:
            return self.send(4, f"unknown target {target!r}".encode())
        child_env = dict(os.environ)
        child_env.pop("TIMONEL_RELAY_SECRET", None)
        for name, value in env:
            if name.upper() not in KEEP_OWN and name.upper() != "TIMONEL_RELAY_SECRET":
                child_env[name] = value
        cmd = [sys.executable, os.path.join(HERE, "winpaths.py")] + TARGETS[target] + args
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=child_env,
                                cwd=winpath_cwd(cwd, child_env))
        pumps = [threading.Thread(target=self.pump, args=(proc.stdout, 1)),
                 threading.Thread(target=self.pump, args=(proc.stderr, 2))]
        feeder = threading.Thread(target=self.feed, args=(proc.stdin,), daemon=True)
        for t in pumps + [feeder]:
            t.start()
        for t in pumps:
            t.join()
        code = proc.wait()
        self.finish_run(target, args, code)
        # As above: don't close with stdin frames unread (the feeder stops at the forwarder's
        # end of stdin, or when the forwarder closes after reading the exit code).
        feeder.join(timeout=10)

    def finish_run(self, target, args, code):
        if LOG:
            with LOG_LOCK, open(LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps({"target": target, "args": args, "code": code},
                                   ensure_ascii=False) + "\n")
        self.send(3, bytes([code & 0xFF]))

    def pump(self, stream, kind):
        while True:
            data = stream.read1(65536)
            if not data:
                return
            self.send(kind, data)

    def feed(self, stdin):
        """Copies the forwarder's stdin frames to `stdin` (None: reads and drops them) until
        its end-of-stdin frame."""
        try:
            while True:
                kind, n = struct.unpack(">BI", read_exact(self.request, 5))
                data = read_exact(self.request, n)
                if kind != 0 or not data:
                    break
                if stdin is not None:
                    stdin.write(data)
                    stdin.flush()
        except (EOFError, OSError, ValueError):
            pass
        if stdin is None:
            return
        try:
            stdin.close()
        except OSError:
            pass


def winpath_cwd(cwd, env):
    sys.path.insert(0, HERE)
    import winpaths  # noqa: E402
    path = winpaths.to_unix(cwd, env.get("WINEPREFIX"))
    return path if os.path.isdir(path) else None


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    if len(sys.argv) != 2 or not SECRET:
        sys.exit("usage: TIMONEL_RELAY_SECRET=... relay.py PORT_FILE")
    server = Server(("127.0.0.1", 0), Handler)
    port_file = sys.argv[1]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
