#!/usr/bin/env python3
"""Test peers for the kernel tests: a sidecar stand-in, servers and clients that report what they saw.

Every line a tool prints on stdout is one JSON object, so tests can assert on what a peer observed.
"""
import argparse
import fcntl
import hashlib
import json
import os
import select
import socket
import struct
import sys
import termios
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


def pump(a, b, pause=0):
    """Copies both directions until both sides closed; half-close is passed on. A pause first stands
    for a busy proxy: whatever the app sends meanwhile waits in the kernel."""
    time.sleep(pause)
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
            threading.Thread(target=pump, args=(c, up, args.pause_ms / 1000), daemon=True).start()

    for spec in args.listen:
        kind, port = spec.split("=")
        threading.Thread(target=serve, args=(int(port), kind), daemon=True).start()
    while True:
        time.sleep(3600)


def server(args):
    """Answers every connection with a JSON greeting naming who it saw, then echoes. An IPv6 --bind
    address makes it an AF_INET6 listener."""
    ls = socket.socket(socket.AF_INET6 if ":" in args.bind else socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.bind, args.port))
    ls.listen(512)
    emit(event="listening", port=args.port)

    def handle(c, peer):
        hello = json.dumps({"server": args.name, "peer": fmt_addr(peer),
                            "local": fmt_addr(c.getsockname())}) + "\n"
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


def original_dst6(sock):
    """SOL_IPV6 / IP6T_SO_ORIGINAL_DST, the form a proxy asks on an AF_INET6 socket."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
    except OSError as e:
        return None, str(e)
    port, = struct.unpack("!H", raw[2:4])
    return "[%s]:%d" % (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port), None


def fmt_addr(a):
    return ("[%s]:%d" if ":" in a[0] else "%s:%d") % (a[0], a[1])


def client(args):
    """Connects, reads the greeting, sends a payload and checks the echo. --family inet6 uses an
    AF_INET6 socket (an IPv4 target is then written ::ffff:a.b.c.d, as dual-stack clients do), --bind
    binds the source address first (as a proxy's inbound passthrough does with 127.0.0.6)."""
    host, port = args.target.rsplit(":", 1)
    host = host.strip("[]")
    fam = socket.AF_INET6 if args.family == "inet6" else socket.AF_INET
    try:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(args.timeout)
        if args.bind:
            s.bind((args.bind, 0))
        s.connect((host, int(port)))
        # Asked at once: after the peer's FIN and ours the kernel answers ENOTCONN.
        peer = fmt_addr(s.getpeername())
        extra = {}
        if args.ask_origdst:
            extra["origdst_ip"], extra["origdst_ip_error"] = original_dst(s)
            if fam == socket.AF_INET6:
                extra["origdst_ip6"], extra["origdst_ip6_error"] = original_dst6(s)
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
             received=len(got), local=fmt_addr(s.getsockname()), peer=peer, **extra)
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


def watchdog(seconds):
    """Ends the process with a result line if the test peer hangs, instead of hanging the test."""
    def fire():
        emit(ok=False, error="timed out after %ss" % seconds)
        os._exit(1)
    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def connect_app(target, timeout, bind_port=0):
    """Connects and consumes the echo server's greeting, so what follows is only the test's data."""
    host, port = target.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout,
                                 source_address=("0.0.0.0", bind_port) if bind_port else None)
    hello = read_line(s)
    return s, json.loads(hello) if hello else None


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            break
        buf += d
    return bytes(buf)


def pingpong(args):
    """Request/response rounds through the echo server; each round's echo must come back whole."""
    try:
        s, hello = connect_app(args.target, args.timeout, args.bind_port)
        local = "%s:%d" % s.getsockname()
        bad = 0
        start = time.monotonic()
        for i in range(args.rounds):
            msg = (b"%s%08d" % (args.tag.encode(), i)).ljust(args.size, b".")
            s.sendall(msg)
            if recv_exact(s, len(msg)) != msg:
                bad += 1
        elapsed = time.monotonic() - start
        s.close()
    except OSError as e:
        emit(ok=False, error=str(e))
        return
    emit(ok=bad == 0, rounds=args.rounds, bad=bad, hello=hello, local=local,
         elapsed_ms=round(elapsed * 1000, 1))


def bulk_echo(args):
    """Writes `bytes` in `chunk`-sized blocking writes from one thread while reading the echo with
    deliberately small, varying reads; both directions are checksummed. The reader stops at the
    expected length, so no shutdown happens while it waits."""
    s, hello = connect_app(args.target, args.timeout)
    # Blocking writes are the point (a large write must be taken whole); the watchdog bounds the run.
    s.settimeout(None)
    watchdog(args.timeout)
    data = hashlib.shake_256(b"bulk-echo").digest(args.bytes)
    writes = []

    def writer():
        off = 0
        while off < len(data):
            n = s.send(data[off:off + args.chunk])
            writes.append(n)
            off += n

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    sizes = [int(x) for x in args.reads.split(",")]
    h = hashlib.sha256()
    got = 0
    calls = 0
    eagain_at = []
    while got < len(data):
        try:
            d = s.recv(min(sizes[calls % len(sizes)], len(data) - got))
        except BlockingIOError:
            # A blocking socket must never say "try again"; note where and carry on, so one run
            # shows both whether it happens and whether the data still arrives intact.
            eagain_at.append(got)
            select.select([s], [], [], 1)
            continue
        calls += 1
        if not d:
            break
        h.update(d)
        got += len(d)
    t.join()
    s.close()
    emit(ok=h.hexdigest() == hashlib.sha256(data).hexdigest() and got == len(data), hello=hello,
         sent=sum(writes), received=got, writes=len(writes), largest_write=max(writes),
         recv_calls=calls, eagain=len(eagain_at), eagain_at=eagain_at[:10])


def read_to_eof(s):
    """Reads a blocking socket to EOF, counting the EAGAINs that the kernel's sockmap receive path can
    return on a wakeup without data (README: known limitations), and waiting them out."""
    buf = b""
    eagain = 0
    while True:
        try:
            d = s.recv(65536)
        except BlockingIOError:
            eagain += 1
            select.select([s], [], [], 1)
            continue
        if not d:
            return buf, eagain
        buf += d


def slow_sink(args):
    """Reads each client slowly (a chunk, then a pause) to EOF, then answers one JSON line with what it
    got: an upstream slower than the app, which is what makes a proxy fall behind its app."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.bind, args.port))
    ls.listen(64)
    emit(event="listening", port=args.port)

    def handle(c):
        h = hashlib.sha256()
        n = 0
        while True:
            d = c.recv(args.chunk)
            if not d:
                break
            h.update(d)
            n += len(d)
            time.sleep(args.delay_ms / 1000)
        c.sendall((json.dumps({"received": n, "sha256": h.hexdigest()}) + "\n").encode())
        c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def upload(args):
    """Writes `bytes` as fast as the socket takes them, half-closes, and checks the sink's digest."""
    host, port = args.target.rsplit(":", 1)
    watchdog(args.timeout)
    s = socket.create_connection((host, int(port)), timeout=args.timeout)
    s.settimeout(None)
    data = hashlib.shake_256(b"upload").digest(args.bytes)
    view = memoryview(data)
    off = 0
    while off < len(data):
        off += s.send(view[off:off + args.chunk])
    s.shutdown(socket.SHUT_WR)
    line, eagain = read_to_eof(s)
    s.close()
    reply = json.loads(line or b"null")
    ok = bool(reply) and reply["received"] == len(data) and \
        reply["sha256"] == hashlib.sha256(data).hexdigest()
    emit(ok=ok, sent=len(data), reply=reply, eagain=eagain)


def halfclose(args):
    """Sends, shuts down its write side, then reads what the server only sends after seeing EOF.
    With --concurrent the read (blocking, as a thread-per-direction program does it) is already
    waiting while another thread writes."""
    s, hello = connect_app(args.target, args.timeout)
    s.settimeout(None)
    watchdog(args.timeout)
    payload = os.urandom(args.bytes)

    def writer():
        if args.concurrent:
            time.sleep(0.05)  # so the reader is already blocked in recv
        for off in range(0, len(payload), args.chunk):
            s.sendall(payload[off:off + args.chunk])
        s.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=writer, daemon=True)
    if args.concurrent:
        t.start()
    else:
        writer()
    rest, eagain = read_to_eof(s)
    if args.concurrent:
        t.join()
    head, _, tail = rest.partition(b"\n")
    reply = json.loads(head) if head else {}
    ok = reply.get("sha256") == hashlib.sha256(payload).hexdigest() and len(tail) == reply.get("tail")
    emit(ok=ok, hello=hello, reply=reply, tail=len(tail), eagain=eagain)


def halfclose_server(args):
    """Reads each client to EOF, then answers with the digest of what it got and a tail of bytes."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.bind, args.port))
    ls.listen(64)
    emit(event="listening", port=args.port)

    def handle(c, peer):
        c.sendall(b'{"server": "%s"}\n' % args.name.encode())
        h = hashlib.sha256()
        n = 0
        while True:
            d = c.recv(65536)
            if not d:
                break
            h.update(d)
            n += len(d)
        reply = {"sha256": h.hexdigest(), "received": n, "tail": args.tail}
        c.sendall(json.dumps(reply).encode() + b"\n")
        c.sendall(b"t" * args.tail)
        c.close()
        emit(event="served", peer="%s:%d" % peer, received=n)

    while True:
        c, peer = ls.accept()
        threading.Thread(target=handle, args=(c, peer), daemon=True).start()


def fionread(s):
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def readable(s, timeout_ms):
    p = select.poll()
    p.register(s, select.POLLIN)
    return bool(p.poll(timeout_ms))


def readiness(args):
    """What poll, select and FIONREAD report on the app's socket before and after the echo arrives,
    and after part of it was read."""
    s, hello = connect_app(args.target, args.timeout)
    before = {"poll": readable(s, 0), "fionread": fionread(s)}
    payload = os.urandom(args.bytes)
    t0 = time.monotonic()
    s.sendall(payload)
    polled = readable(s, 3000)
    poll_ms = (time.monotonic() - t0) * 1000
    # The echo may arrive in pieces: wait until FIONREAD stops growing or covers everything.
    seen = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        n = fionread(s)
        if not seen or seen[-1] != n:
            seen.append(n)
        if n >= len(payload):
            break
        time.sleep(0.01)
    sel = bool(select.select([s], [], [], 0)[0])
    half = len(payload) // 2
    first = recv_exact(s, half)
    after_half = fionread(s)
    second = recv_exact(s, len(payload) - half)
    after_all = {"poll": readable(s, 0), "fionread": fionread(s)}
    s.close()
    emit(ok=first + second == payload, hello=hello, bytes=len(payload), before=before,
         poll_readable=polled, poll_ms=round(poll_ms, 1), select_readable=sel, fionread_seen=seen,
         fionread=seen[-1] if seen else None, fionread_after_half=after_half, after_all=after_all)


def udp_server(args):
    """Answers every datagram with a JSON line naming itself, the sender it saw and the query."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((args.bind, args.port))
    emit(event="listening", port=args.port)
    while True:
        data, peer = s.recvfrom(65536)
        reply = {"server": args.name, "peer": "%s:%d" % peer, "query": data.decode(errors="replace")}
        s.sendto(json.dumps(reply).encode(), peer)
        emit(event="query", **reply)


def udp_client(args):
    """Sends `count` queries to target, unconnected (sendto/recvfrom) or connected (connect/send)."""
    host, port = args.target.rsplit(":", 1)
    dst = (host.strip("[]"), int(port))
    s = socket.socket(socket.AF_INET6 if args.family == "inet6" else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(args.timeout)
    peer = None
    try:
        if args.connect:
            s.connect(dst)
            peer = fmt_addr(s.getpeername())
        replies = []
        for i in range(args.count):
            q = ("q%d" % i).encode()
            if args.connect:
                s.send(q)
            else:
                s.sendto(q, dst)
            data, src = s.recvfrom(65536)
            r = json.loads(data)
            replies.append({"from": fmt_addr(src), "server": r["server"], "query": r["query"],
                            "peer": r["peer"]})
        emit(ok=all(r["query"] == "q%d" % i for i, r in enumerate(replies)), replies=replies, peer=peer,
             local=fmt_addr(s.getsockname()))
    except OSError as e:
        emit(ok=False, error=str(e), peer=peer)


def servers(args):
    """The echo server of `server` on several ports at once (one process stands for a pod's app)."""
    ls_all = []
    for port in [int(x) for x in args.ports.split(",")]:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((args.bind, port))
        ls.listen(512)
        ls_all.append(ls)

    def handle(c, peer):
        hello = json.dumps({"server": args.name, "peer": "%s:%d" % peer[:2],
                            "local": "%s:%d" % c.getsockname()[:2]}) + "\n"
        try:
            c.sendall(hello.encode())
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        c.close()

    def serve(ls):
        while True:
            c, peer = ls.accept()
            threading.Thread(target=handle, args=(c, peer), daemon=True).start()

    for ls in ls_all:
        threading.Thread(target=serve, args=(ls,), daemon=True).start()
    emit(event="listening", ports=[ls.getsockname()[1] for ls in ls_all])
    while True:
        time.sleep(3600)


def unmap(addr):
    """An AF_INET6 socket's address of an IPv4 peer (::ffff:a.b.c.d) as the IPv4 wire sees it."""
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:"):
        host = host[len("::ffff:"):]
    return "%s:%d" % (host, port)


def probe(args):
    """Runs connection probes one after the other, as this process's uid and gid: each is a JSON
    object {id, target "host:port", family 4|6, bind (source address, optional)}. For each it prints
    what the client saw: the local address the kernel gave it (the key the sidecar's log is matched
    on), the greeting of the server that answered, and whether the echo came back whole."""
    for spec in json.loads(args.spec):
        host, port = spec["target"].rsplit(":", 1)
        fam = socket.AF_INET6 if spec.get("family") == 6 else socket.AF_INET
        if fam == socket.AF_INET6 and ":" not in host:
            host = "::ffff:" + host
        res = {"id": spec["id"]}
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.settimeout(args.timeout)
            if spec.get("bind"):
                b = spec["bind"]
                s.bind(("::ffff:" + b if fam == socket.AF_INET6 else b, 0))
            s.connect((host, int(port)))
            res["local"] = unmap(s.getsockname())
            hello = read_line(s)
            payload = os.urandom(args.bytes)
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
            res.update(ok=bool(hello) and got == payload, hello=json.loads(hello) if hello else None)
        except (OSError, ValueError) as e:
            res.update(ok=False, error=str(e))
            if "local" not in res:
                try:
                    res["local"] = unmap(s.getsockname())
                except OSError:
                    pass
        s.close()
        emit(**res)
    emit(event="done")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("proxy")
    a.add_argument("--listen", action="append", default=[], help="kind=port, kind is outbound|inbound")
    a.add_argument("--pause-ms", type=float, default=0, help="wait this long before forwarding each connection")
    a = sub.add_parser("server")
    a.add_argument("--name", default="server")
    a.add_argument("--bind", default="0.0.0.0")
    a.add_argument("--port", type=int, required=True)
    a = sub.add_parser("client")
    a.add_argument("target")
    a.add_argument("--bytes", type=int, default=64)
    a.add_argument("--timeout", type=float, default=5)
    a.add_argument("--family", choices=["inet", "inet6"], default="inet")
    a.add_argument("--bind", default="", help="source address to bind before connecting")
    a.add_argument("--ask-origdst", action="store_true", help="report SO_ORIGINAL_DST on the client socket")
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
    a = sub.add_parser("pingpong")
    a.add_argument("target")
    a.add_argument("--rounds", type=int, default=1000)
    a.add_argument("--size", type=int, default=64)
    a.add_argument("--tag", default="", help="prefix of every message, to tell clients apart")
    a.add_argument("--bind-port", type=int, default=0, help="fixed local port")
    a.add_argument("--timeout", type=float, default=5)
    a = sub.add_parser("bulk-echo")
    a.add_argument("target")
    a.add_argument("--bytes", type=int, required=True)
    a.add_argument("--chunk", type=int, default=65536, help="size of each blocking write")
    a.add_argument("--reads", default="65536", help="comma-separated recv sizes, used in turn")
    a.add_argument("--timeout", type=float, default=10)
    a = sub.add_parser("slow-sink")
    a.add_argument("--bind", default="0.0.0.0")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--chunk", type=int, default=65536)
    a.add_argument("--delay-ms", type=float, default=1)
    a = sub.add_parser("upload")
    a.add_argument("target")
    a.add_argument("--bytes", type=int, required=True)
    a.add_argument("--chunk", type=int, default=1 << 20)
    a.add_argument("--timeout", type=float, default=30)
    a = sub.add_parser("halfclose")
    a.add_argument("target")
    a.add_argument("--bytes", type=int, default=4096)
    a.add_argument("--chunk", type=int, default=65536)
    a.add_argument("--concurrent", action="store_true")
    a.add_argument("--timeout", type=float, default=5)
    a = sub.add_parser("halfclose-server")
    a.add_argument("--name", default="server")
    a.add_argument("--bind", default="0.0.0.0")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--tail", type=int, default=100000)
    a = sub.add_parser("readiness")
    a.add_argument("target")
    a.add_argument("--bytes", type=int, default=3000)
    a.add_argument("--timeout", type=float, default=5)
    a = sub.add_parser("udp-server")
    a.add_argument("--name", default="server")
    a.add_argument("--bind", default="0.0.0.0")
    a.add_argument("--port", type=int, required=True)
    a = sub.add_parser("udp-client")
    a.add_argument("target")
    a.add_argument("--family", choices=["inet", "inet6"], default="inet")
    a.add_argument("--connect", action="store_true")
    a.add_argument("--count", type=int, default=2)
    a.add_argument("--timeout", type=float, default=2)
    a = sub.add_parser("servers")
    a.add_argument("--name", default="server")
    a.add_argument("--bind", default="0.0.0.0")
    a.add_argument("--ports", required=True, help="comma-separated")
    a = sub.add_parser("probe")
    a.add_argument("spec", help="JSON list of {id, target, family, bind}")
    a.add_argument("--bytes", type=int, default=32)
    a.add_argument("--timeout", type=float, default=2)
    args = p.parse_args()
    {"proxy": proxy, "server": server, "client": client, "bulk-server": bulk_server,
     "bulk-client": bulk_client, "origdst-probe": origdst_probe, "pingpong": pingpong,
     "bulk-echo": bulk_echo, "slow-sink": slow_sink, "upload": upload, "halfclose": halfclose, "halfclose-server": halfclose_server,
     "readiness": readiness, "udp-server": udp_server, "udp-client": udp_client,
     "servers": servers, "probe": probe}[args.cmd](args)


if __name__ == "__main__":
    main()
