#!/usr/bin/env python3
"""What sendfile(2) from a memfd saves over copying, for 1 MiB responses.

Not outpost: a minimal keep-alive HTTP/1.1 server that answers every request
with the same 1 MiB body, either copied into the socket (`send`) or handed
over by reference from a memfd (`sendfile`, as outpost does with
`server.sendfile`); `sendfile-more` sends the head with MSG_MORE first, and
a mode with `-cubic` (`send-cubic`, `sendfile-cubic`) uses CUBIC
congestion control on the server's sockets instead of the machine's default,
and one with `-lowatN` (`sendfile-lowat16`) sets TCP_NOTSENT_LOWAT to N KiB,
so that the server queues little unsent data and transmits it itself.
Each mode runs pinned to CPU 0 with wrk on CPU 1 (64 connections, 5 s). The
server's CPU time per response, user and kernel, is read from /proc, and
wrk's from its rusage. The server's kernel column is the one that compares
to a proxy (the user-space cost here is Python's); on loopback the client's
column shows what the server's kernel leaves to the client's.

    python3 benches/probes/sendfile.py [mode ...]   (needs wrk and taskset)
"""

import os
import socket
import subprocess
import sys
import threading
import time

PORT = 9711
BODY = bytes(i % 251 for i in range(1 << 20))
HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BODY)


def serve(mode):
    memfd = os.memfd_create("body")
    os.write(memfd, BODY)

    def connection(sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if "-cubic" in mode:
            # This socket only: the machine's default may be BBR, which paces.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
        for part in mode.split("-"):
            if part.startswith("lowat"):
                # TCP_NOTSENT_LOWAT (25): at most this many KiB queued unsent.
                sock.setsockopt(socket.IPPROTO_TCP, 25, int(part[5:]) * 1024)
        pending = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                pending += data
                while b"\r\n\r\n" in pending:
                    _, pending = pending.split(b"\r\n\r\n", 1)
                    if not mode.startswith("sendfile"):
                        sock.sendall(HEAD)
                        sock.sendall(BODY)
                    else:
                        if mode.startswith("sendfile-more"):
                            sock.sendall(HEAD, socket.MSG_MORE)
                        else:
                            sock.sendall(HEAD)
                        offset = 0
                        while offset < len(BODY):
                            offset += os.sendfile(sock.fileno(), memfd, offset, len(BODY) - offset)
        except OSError:
            return  # wrk closes its connections mid-response when it stops

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", PORT))
    listener.listen(1024)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=connection, args=(sock,), daemon=True).start()


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime


def measure(mode):
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, __file__, "--serve", mode])
    try:
        time.sleep(1)
        (u0, s0) = cpu_ticks(server.pid)
        before = os.times()
        out = subprocess.run(
            ["taskset", "-c", "1", "wrk", "-t1", "-c64", "-d5s", f"http://127.0.0.1:{PORT}/"],
            capture_output=True, text=True, check=True,
        ).stdout
        after = os.times()
        (u1, s1) = cpu_ticks(server.pid)
    finally:
        server.kill()
        server.wait()
    requests = int(next(l for l in out.splitlines() if "requests in" in l).split()[0])
    hz = os.sysconf("SC_CLK_TCK")
    user, kernel = (u1 - u0) / hz, (s1 - s0) / hz
    client = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    print(
        f"| {mode} | {requests / 5:,.0f} | {requests / (user + kernel):,.0f} | {user * 1e6 / requests:.1f} µs "
        f"| {kernel * 1e6 / requests:.1f} µs | {client * 1e6 / requests:.0f} µs |"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        print("| mode | responses/s | per server CPU-second | server user | server kernel | client (wrk) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for _ in range(2):
            for mode in sys.argv[1:] or ("send", "sendfile"):
                measure(mode)
