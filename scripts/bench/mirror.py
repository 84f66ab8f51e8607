"""A counting k3s release mirror on 127.0.0.1 for scripts/bench.sh.

Serves <root>/<version>/<asset> at /download/<version>/<asset> (the release layout timonel's
binary mirror expects), honours `Range: bytes=N-`, and counts every request. Runs in a thread
of the benchmark process, so the count is read directly.
"""

import os
import shutil
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Mirror:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.lock = threading.Lock()
        self.requests = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = urllib.parse.unquote(self.path.split("?", 1)[0])
                with mirror.lock:
                    mirror.requests.append(path)
                rel = path.removeprefix("/download/")
                parts = rel.split("/")
                if not path.startswith("/download/") or any(p in ("", "..") for p in parts):
                    return self.empty(404)
                file = os.path.join(mirror.root, *parts)
                if not os.path.isfile(file):
                    return self.empty(404)
                size = os.path.getsize(file)
                start = 0
                rng = self.headers.get("Range", "")
                if rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1] or 0)
                    if start >= size:
                        return self.empty(416)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(size - start))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Connection", "close")
                self.end_headers()
                with open(file, "rb") as f:
                    f.seek(start)
                    try:
                        self.wfile.flush()
                        self.connection.sendfile(f, start, size - start)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                self.close_connection = True

            def empty(self, code):
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/download"

    def count(self):
        with self.lock:
            return len(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def publish(root, version, binary, airgap_size):
    """Writes a release: the binary (copied), an airgap tarball of random bytes, checksums."""
    import hashlib

    release = os.path.join(root, version)
    os.makedirs(release, exist_ok=True)
    shutil.copyfile(binary, os.path.join(release, "k3s"))
    airgap = os.path.join(release, "k3s-airgap-images-amd64.tar.zst")
    with open(airgap, "wb") as f:
        left = airgap_size
        while left > 0:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n
    lines = []
    for name in ("k3s-airgap-images-amd64.tar.zst", "k3s"):
        h = hashlib.sha256()
        with open(os.path.join(release, name), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        lines.append(f"{h.hexdigest()}  {name}\n")
    with open(os.path.join(release, "sha256sum-amd64.txt"), "w") as f:
        f.writelines(lines)
