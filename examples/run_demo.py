"""``make run``: start hived with the demo config (or the one given), and print the demo banner
once it serves.

The banner (where to point a browser, the demo token) is printed only after hived says it is
ready (``READY=1`` on a ``NOTIFY_SOCKET`` of our own, as systemd would hear it), so a run that
fails (another hived holds ``.state/``, the port is taken) prints hived's reason and no
banner. The exit status is hived's own. Ctrl-C reaches hived directly (same process group);
this wrapper only waits for it, and passes a SIGTERM on.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

BANNER = """\
hived demo: dashboard http://127.0.0.1:7420/  WebSocket ws://127.0.0.1:7420/v1/ws
token (admin, demo only): hived-demo-admin-token
try:  HIVED_TOKEN=hived-demo-admin-token {bin}/hivectl status      (Ctrl-C stops hived)"""


def main(argv: list[str]) -> int:
    bin_dir = Path(sys.executable).parent
    config = argv[0] if argv else str(Path(__file__).resolve().parent / "hived.toml")
    with tempfile.TemporaryDirectory(prefix="hived-run-") as folder:
        path = os.path.join(folder, "notify.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(path)
        env = {**os.environ, "NOTIFY_SOCKET": path}
        hived = subprocess.Popen([str(bin_dir / "hived"), "--config", config], env=env)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # hived gets Ctrl-C itself, and stops
        signal.signal(signal.SIGTERM, lambda *_: hived.send_signal(signal.SIGTERM))

        def announce() -> None:
            while True:
                try:
                    message = listener.recv(4096).decode(errors="replace")
                except OSError:
                    return
                if "READY=1" in message.split("\n"):
                    rel = os.path.relpath(bin_dir)
                    print(BANNER.format(bin=rel), flush=True)
                    return

        threading.Thread(target=announce, daemon=True).start()
        code = hived.wait()
        listener.close()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
