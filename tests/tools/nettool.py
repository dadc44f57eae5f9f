#!/usr/bin/env python3
"""Test peers for the kernel tests: a sidecar stand-in, servers and clients that report what they saw.

Every line a tool prints on stdout is one JSON object, so tests can assert on what a peer observed.
"""
import argparse
import hashlib
import json
import os
import select
import socket
import struct
import sys
import threading
import time

SO_ORIGINAL_DST = 80


def emit(**kv):
    sys.stdout.write(json.dumps(kv) + "\n")
    sys.stdout.flush()


def original_dst(sock):
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError as e:
        return None, str(e)
    port, packed = struct.unpack("!2xH4s8x", raw)
    return "%s:%d" % (socket.inet_ntoa(packed), port), None


def pump(a, b):
    """Copies both directions until both sides closed; half-close is passed on."""
    socks = {a: b, b: a}
    open_dirs = 2
    while open_dirs:
        r, _, _ = select.select(list(socks), [], [], 30)
        if not r:
            break
        for s in r:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            peer = socks[s]
            if data:
                peer.sendall(data)
            else:
                try:
                    peer.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                del socks[s]
                open_dirs -= 1
    a.close()
    b.close()


def proxy(args):
    """A sidecar stand-in: outbound and inbound listeners; forwards to SO_ORIGINAL_DST."""
    def serve(port, kind):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", port))
        ls.listen(512)
        emit(event="listening", kind=kind, port=port)
        while True:
            c, peer = ls.accept()
            orig, err = original_dst(c)
            emit(event="accepted", kind=kind, peer="%s:%d" % peer, local="%s:%d" % c.getsockname(),
                 orig=orig, error=err, uid=os.getuid())
            if orig is None:
                c.close()
                continue
            host, port_s = orig.rsplit(":", 1)
            target = (host, int(port_s))
            if kind == "inbound":
                # The app behind an inbound proxy is reached over loopback, which is never captured.
                target = ("127.0.0.1", int(port_s))
            try:
                up = socket.create_connection(target, timeout=5)
            except OSError as e:
                emit(event="upstream_error", kind=kind, target=orig, error=str(e))
                c.close()
                continue
            up.settimeout(None)
            threading.Thread(target=pump, args=(c, up), daemon=True).start()

    for spec in args.listen:
        kind, port = spec.split("=")
        threading.Thread(target=serve, args=(int(port), kind), daemon=True).start()
    while True:
        time.sleep(3600)


def server(args):
    """Answers every connection with a JSON greeting naming who it saw, then echoes."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.bind, args.port))
    ls.listen(512)
    emit(event="listening", port=args.port)

    def handle(c, peer):
        hello = json.dumps({"server": args.name, "peer": "%s:%d" % peer,
                            "local": "%s:%d" % c.getsockname()}) + "\n"
        c.sendall(hello.encode())
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        c.close()

    while True:
        c, peer = ls.accept()
        threading.Thread(target=handle, args=(c, peer), daemon=True).start()


def read_line(s):
    buf = b""
    while not buf.endswith(b"\n"):
        d = s.recv(1)
        if not d:
            break
        buf += d
    return buf.decode()


def client(args):
    """Connects, reads the greeting, sends a payload and checks the echo."""
    host, port = args.target.rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), timeout=args.timeout)
        hello = read_line(s)
        payload = os.urandom(args.bytes)
        got = b""
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        emit(ok=got == payload, hello=json.loads(hello) if hello else None, sent=len(payload),
             received=len(got), local="%s:%d" % s.getsockname())
    except OSError as e:
        emit(ok=False, error=str(e))


def bulk_server(args):
    """Sends `bytes` pseudo-random bytes to each client then closes; prints the digest."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.bind, args.port))
    ls.listen(64)
    emit(event="listening", port=args.port)
    while True:
        c, peer = ls.accept()
        data = hashlib.shake_256(b"merbridge").digest(args.bytes)
        c.sendall(data)
        c.close()
        emit(event="sent", peer="%s:%d" % peer, sha256=hashlib.sha256(data).hexdigest())


def bulk_client(args):
    host, port = args.target.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=args.timeout)
    h = hashlib.sha256()
    n = 0
    while True:
        d = s.recv(1 << 16)
        if not d:
            break
        h.update(d)
        n += len(d)
    expected = hashlib.sha256(hashlib.shake_256(b"merbridge").digest(args.bytes)).hexdigest()
    emit(ok=h.hexdigest() == expected and n == args.bytes, received=n, sha256=h.hexdigest())


def origdst_probe(args):
    """Asks SO_ORIGINAL_DST and TCP_INFO on a plain connection: what does the kernel answer?"""
    host, port = args.target.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    orig, err = original_dst(s)
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    emit(orig=orig, error=err, tcp_info_len=len(info), tcp_info_ok=len(info) >= 104)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("proxy")
    a.add_argument("--listen", action="append", default=[], help="kind=port, kind is outbound|inbound")
    a = sub.add_parser("server")
    a.add_argument("--name", default="server")
    a.add_argument("--bind", default="0.0.0.0")
    a.add_argument("--port", type=int, required=True)
    a = sub.add_parser("client")
    a.add_argument("target")
    a.add_argument("--bytes", type=int, default=64)
    a.add_argument("--timeout", type=float, default=5)
    a = sub.add_parser("bulk-server")
    a.add_argument("--bind", default="0.0.0.0")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--bytes", type=int, required=True)
    a = sub.add_parser("bulk-client")
    a.add_argument("target")
    a.add_argument("--bytes", type=int, required=True)
    a.add_argument("--timeout", type=float, default=10)
    a = sub.add_parser("origdst-probe")
    a.add_argument("target")
    args = p.parse_args()
    {"proxy": proxy, "server": server, "client": client, "bulk-server": bulk_server,
     "bulk-client": bulk_client, "origdst-probe": origdst_probe}[args.cmd](args)


if __name__ == "__main__":
    main()
