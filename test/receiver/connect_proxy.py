#!/usr/bin/python3
"""connect_proxy.py: a minimal HTTP CONNECT proxy for the TAP tests.

    connect_proxy.py --listen 127.0.0.1:0 --port-file FILE --log FILE

Answers CONNECT host:port by opening a TCP connection there, answering
"200 Connection established" and relaying bytes both ways until either side
closes; the TLS session runs end to end through the tunnel, so the proxy sees
nothing of it.  Each CONNECT is logged as one line of --log ("CONNECT
host:port"), flushed at once; a target that cannot be reached is answered 502
and logged "FAILED host:port: reason"; any other method is answered 405 and
logged "REFUSED METHOD target".  Only loopback targets are allowed (a test
proxy must not become an open relay): others are refused with 403 and logged
"REFUSED CONNECT target".  No authentication.  SIGTERM stops it.

Standard library only.
"""
import argparse
import ipaddress
import os
import select
import signal
import socket
import sys
import threading

HEAD_MAX = 16384


class Log:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8")

    def write(self, line):
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def answer(conn, status, reason):
    body = ("%d %s\n" % (status, reason)).encode()
    conn.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body))


def relay(a, b):
    """Copy bytes both ways until one side closes, then close both."""
    socks = [a, b]
    try:
        while True:
            readable, _, _ = select.select(socks, [], [], 300)
            if not readable:
                return  # idle for 5 minutes
            for s in readable:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        return
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


def handle(conn, log):
    try:
        conn.settimeout(30)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                conn.close()
                return
            head += chunk
            if len(head) > HEAD_MAX:
                answer(conn, 431, "Request Header Fields Too Large")
                conn.close()
                return
        head, _, rest = head.partition(b"\r\n\r\n")
        first = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = first.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            log.write("REFUSED malformed request line %r" % first)
            answer(conn, 400, "Bad Request")
            conn.close()
            return
        method, target = parts[0], parts[1]
        if method != "CONNECT":
            log.write("REFUSED %s %s" % (method, target))
            answer(conn, 405, "Method Not Allowed")
            conn.close()
            return
        host, sep, port = target.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not port.isdigit() or not is_loopback(host):
            log.write("REFUSED CONNECT %s" % target)
            answer(conn, 403, "Forbidden")
            conn.close()
            return
        try:
            upstream = socket.create_connection((host, int(port)), timeout=10)
        except OSError as e:
            log.write("FAILED %s: %s" % (target, e))
            answer(conn, 502, "Bad Gateway")
            conn.close()
            return
        log.write("CONNECT %s" % target)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        conn.settimeout(None)
        upstream.settimeout(None)
        if rest:
            upstream.sendall(rest)
        relay(conn, upstream)
    except OSError:
        try:
            conn.close()
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()

    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(64)
    log = Log(args.log)

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.getsockname()[1])
    os.rename(tmp, args.port_file)
    print("connect_proxy: listening on %s:%d" % (host, srv.getsockname()[1]), flush=True)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn, log), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
