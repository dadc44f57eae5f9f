#!/usr/bin/env python3
"""Test peers for the kernel tests: a sidecar stand-in, servers and clients that report what they saw.

Every line a tool prints on stdout is one JSON object, so tests can assert on what a peer observed.
"""
import argparse
import errno
import fcntl
import hashlib
import heapq
import json
import os
import select
import selectors
import socket
import struct
import sys
import termios
import threading
import time

SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
# Envoy's inbound passthrough clusters bind this source, which istio-iptables exempts from capture.
PASSTHROUGH_SOURCE = {socket.AF_INET: "127.0.0.6", socket.AF_INET6: "::6"}


def emit(**kv):
    sys.stdout.write(json.dumps(kv) + "\n")
    sys.stdout.flush()


def digest(chunks):
    """The sha256 (hex) and the byte count of a stream of chunks."""
    h = hashlib.sha256()
    n = 0
    for d in chunks:
        h.update(d)
        n += len(d)
    return h.hexdigest(), n


def listen_tcp(args, backlog):
    """A TCP listener on --bind/--port (AF_INET6 for an IPv6 address), announced on stdout."""
    ls = socket.socket(socket.AF_INET6 if ":" in args.bind else socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.bind, args.port))
    ls.listen(backlog)
    emit(event="listening", port=args.port)
    return ls


def addr_text(sa):
    """ip:port for either family; a v4-mapped IPv6 address shows as the IPv4 address it carries."""
    host = sa[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return "%s:%d" % (host, sa[1])


def parse_sockaddr(raw):
    fam = struct.unpack("=H", raw[:2])[0]
    port = struct.unpack("!H", raw[2:4])[0]
    if fam == socket.AF_INET:
        return "%s:%d" % (socket.inet_ntoa(raw[4:8]), port)
    return addr_text((socket.inet_ntop(socket.AF_INET6, raw[8:24]), port))


def original_dst(sock):
    """SO_ORIGINAL_DST at SOL_IP: (orig, error)."""
    try:
        return parse_sockaddr(sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)), None
    except OSError as e:
        return None, str(e)


def proxy_original_dst(sock):
    """SO_ORIGINAL_DST as Envoy asks for it: at SOL_IPV6 (IP6T_SO_ORIGINAL_DST) on an AF_INET6 socket,
    at SOL_IP on an AF_INET one. Returns (orig, error, level)."""
    if sock.family == socket.AF_INET6:
        try:
            return parse_sockaddr(sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)), None, "ipv6"
        except OSError as e:
            err6 = str(e)
        # A v4-mapped connection on a dual-stack socket is IPv4 on the wire: conntrack answers at SOL_IP.
        try:
            return parse_sockaddr(sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)), None, "ip"
        except OSError as e:
            return None, "SOL_IPV6: %s; SOL_IP: %s" % (err6, e), None
    try:
        return parse_sockaddr(sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)), None, "ip"
    except OSError as e:
        return None, str(e), None


def split_addr(text):
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


class Link:
    """One proxied connection. Side 0 is the accepted (downstream) socket, side 1 the upstream one;
    pending[i] holds bytes read from side i not yet written to the other side."""

    def __init__(self, kind, down, peer, orig, hops):
        self.kind = kind
        self.socks = [down, None]
        self.events = [0, 0]
        self.peer = peer
        self.orig = orig
        self.hops = hops
        self.pending = [bytearray(), bytearray()]
        self.eof = [False, False]
        self.shut = [False, False]
        self.moved = [0, 0]
        self.state = "waiting"  # waiting (paused) -> connecting -> open -> closed
        self.source = None


class Sidecar:
    """A sidecar that behaves like Envoy on the socket level: one thread, an epoll loop, non-blocking
    sockets read with recvmsg into scattered buffers (readv), partial writes and half-close passed on.
    Outbound goes to the original destination with a source the kernel picks; inbound goes to the
    original destination too (the pod's own IP and port), from 127.0.0.6."""

    READ_SLICES = 2
    SLICE = 32768

    def __init__(self, args):
        self.sel = selectors.EpollSelector()
        self.pause = args.pause_ms / 1000
        self.max_hops = args.max_hops
        self.timers = []
        self.seq = 0
        # Upstream sockets by their local address: an accepted connection coming from one of them is
        # this sidecar's own hop coming back, which is how a capture loop shows itself.
        self.upstreams = {}
        self.buf = bytearray(self.READ_SLICES * self.SLICE)
        view = memoryview(self.buf)
        self.slices = [view[i * self.SLICE:(i + 1) * self.SLICE] for i in range(self.READ_SLICES)]
        for spec in args.listen:
            kind, port = spec.split("=")
            self.listen(kind, int(port), args.dual_stack)

    def listen(self, kind, port, dual_stack):
        if dual_stack:
            ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            addr = ("::", port)
        else:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            addr = ("0.0.0.0", port)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(addr)
        ls.listen(1024)
        ls.setblocking(False)
        self.sel.register(ls, selectors.EVENT_READ, ("listener", kind, port))
        emit(event="listening", kind=kind, port=port)

    def later(self, delay, fn):
        self.seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.seq, fn))

    def run(self):
        while True:
            timeout = None
            if self.timers:
                timeout = max(0, self.timers[0][0] - time.monotonic())
            for key, mask in self.sel.select(timeout):
                if key.data[0] == "listener":
                    self.accept(key.fileobj, key.data[1], key.data[2])
                else:
                    link, side = key.data[1], key.data[2]
                    self.ready(link, side, mask & key.events)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                heapq.heappop(self.timers)[2]()

    def accept(self, ls, kind, port):
        while True:
            try:
                c, peer = ls.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                emit(event="accept_error", kind=kind, error=str(e))
                return
            c.setblocking(False)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = addr_text(peer)
            orig, err, level = proxy_original_dst(c)
            emit(event="accepted", kind=kind, peer=peer, local=addr_text(c.getsockname()), orig=orig,
                 error=err, uid=os.getuid(), family=c.family.name, orig_level=level)
            if orig is None:
                c.close()
                continue
            parent = self.upstreams.get(peer)
            hops = parent.hops + 1 if parent else 1
            reason = None
            if split_addr(orig)[1] == port:
                reason = "the original destination is this listener's own port"
            elif parent and parent.kind == "inbound":
                reason = "this sidecar's own inbound upstream connection was captured again"
            elif hops > self.max_hops:
                reason = "more than %d hops through this sidecar" % self.max_hops
            if reason:
                # Envoy would forward it again and again; refusing at once keeps the loop visible
                # and bounded: the client fails instead of the sidecar spinning.
                emit(event="loop", kind=kind, peer=peer, orig=orig, hops=hops, reason=reason)
                c.close()
                continue
            link = Link(kind, c, peer, orig, hops)
            if self.pause:
                # A busy proxy: whatever the app sends meanwhile waits in the kernel.
                self.later(self.pause, lambda link=link: self.connect(link))
            else:
                self.connect(link)

    def connect(self, link):
        host, port = split_addr(link.orig)
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        up = socket.socket(fam, socket.SOCK_STREAM)
        up.setblocking(False)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.socks[1] = up
        try:
            if link.kind == "inbound":
                up.bind((PASSTHROUGH_SOURCE[fam], 0))
            rc = up.connect_ex((host, port))
        except OSError as e:
            rc = e.errno
        if rc not in (0, errno.EINPROGRESS):
            self.fail_upstream(link, os.strerror(rc))
            return
        link.source = addr_text(up.getsockname())
        self.upstreams[link.source] = link
        link.state = "connecting"
        self.later(5, lambda: link.state == "connecting" and self.fail_upstream(link, "timed out"))
        self.rearm(link)

    def fail_upstream(self, link, error):
        emit(event="upstream_error", kind=link.kind, target=link.orig, error=error)
        self.close(link)

    def want(self, link, side):
        if link.state == "connecting":
            return selectors.EVENT_WRITE if side == 1 else 0
        if link.state != "open":
            return 0
        ev = 0
        # One buffer per direction: read again only once the last read was passed on (backpressure).
        if not link.eof[side] and not link.pending[side]:
            ev |= selectors.EVENT_READ
        if link.pending[1 - side]:
            ev |= selectors.EVENT_WRITE
        return ev

    def rearm(self, link):
        for side in (0, 1):
            s = link.socks[side]
            if s is None:
                continue
            ev = self.want(link, side)
            if ev == link.events[side]:
                continue
            if link.events[side] == 0:
                self.sel.register(s, ev, ("end", link, side))
            elif ev == 0:
                self.sel.unregister(s)
            else:
                self.sel.modify(s, ev, ("end", link, side))
            link.events[side] = ev

    def ready(self, link, side, mask):
        if link.state == "closed":
            return
        if link.state == "connecting":
            err = link.socks[1].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail_upstream(link, os.strerror(err))
                return
            link.state = "open"
            emit(event="upstream", kind=link.kind, target=link.orig, source=link.source)
            self.rearm(link)
            return
        try:
            if mask & selectors.EVENT_WRITE:
                self.flush(link, 1 - side)
            if mask & selectors.EVENT_READ:
                self.pump(link, side)
        except OSError:
            # A reset on either side ends both, as a proxy does.
            self.close(link)
            return
        if all(link.eof) and all(link.shut):
            self.close(link)
            return
        self.rearm(link)

    def pump(self, link, side):
        try:
            n = link.socks[side].recvmsg_into(self.slices)[0]
        except (BlockingIOError, InterruptedError):
            return
        if n == 0:
            link.eof[side] = True
        else:
            link.pending[side] += self.buf[:n]
            link.moved[side] += n
        self.flush(link, side)

    def flush(self, link, frm):
        to = 1 - frm
        data = link.pending[frm]
        while data:
            try:
                n = link.socks[to].send(data)
            except (BlockingIOError, InterruptedError):
                return
            del data[:n]
        if link.eof[frm] and not link.shut[to]:
            link.socks[to].shutdown(socket.SHUT_WR)
            link.shut[to] = True

    def close(self, link):
        if link.state == "closed":
            return
        link.state = "closed"
        for side, s in enumerate(link.socks):
            if s is None:
                continue
            if link.events[side]:
                self.sel.unregister(s)
            s.close()
        if link.source and self.upstreams.get(link.source) is link:
            del self.upstreams[link.source]
        emit(event="closed", kind=link.kind, orig=link.orig, sent=link.moved[0], received=link.moved[1])


def proxy(args):
    Sidecar(args).run()


def server(args):
    """Answers every connection with a JSON greeting naming who it saw, then echoes. An IPv6 --bind
    address makes it an AF_INET6 listener."""
    ls = listen_tcp(args, 512)

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
        if args.sport:
            # Another socket may hold the same source port towards another destination.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if args.bind or args.sport:
            s.bind((args.bind or ("::" if fam == socket.AF_INET6 else "0.0.0.0"), args.sport))
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
        emit(ok=False, error=str(e), errno=e.errno)


def http_server(args):
    """HTTP/1.1 with keep-alive: GET /bytes/N answers N bytes (their sha256 in X-Sha256), POST
    answers the length and sha256 of the body it got. One JSON line per request, with the peer."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def reply(self, code, body, ctype, extra=()):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            parts = self.path.split("/")
            if len(parts) != 3 or parts[1] != "bytes" or not parts[2].isdigit():
                self.reply(404, b"not found\n", "text/plain")
                return
            data = hashlib.shake_256(b"http-server").digest(int(parts[2]))
            sha = hashlib.sha256(data).hexdigest()
            self.reply(200, data, "application/octet-stream", [("X-Sha256", sha)])
            emit(event="request", method="GET", path=self.path, peer=addr_text(self.client_address),
                 sent=len(data), sha256=sha)

        def body_chunks(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return
                    left = size
                    while left:
                        d = self.rfile.read(min(left, 65536))
                        if not d:
                            return
                        left -= len(d)
                        yield d
                    self.rfile.readline()
            else:
                left = int(self.headers.get("Content-Length", "0"))
                while left:
                    d = self.rfile.read(min(left, 65536))
                    if not d:
                        return
                    left -= len(d)
                    yield d

        def do_POST(self):
            sha, n = digest(self.body_chunks())
            peer = addr_text(self.client_address)
            body = json.dumps({"received": n, "sha256": sha, "peer": peer}).encode()
            self.reply(200, body, "application/json")
            emit(event="request", method="POST", path=self.path, peer=peer, received=n, sha256=sha)

    ThreadingHTTPServer.daemon_threads = True
    if ":" in args.bind:
        ThreadingHTTPServer.address_family = socket.AF_INET6
    srv = ThreadingHTTPServer((args.bind, args.port), Handler)
    emit(event="listening", port=args.port)
    srv.serve_forever()


def http_client(args):
    """Python's urllib, blocking (no timeout: the socket blocks in recv), as a plain script uses it:
    GET /bytes/N, then POST N random bytes."""
    import urllib.request
    watchdog(args.timeout)
    out = {"client": "urllib"}
    try:
        with urllib.request.urlopen("%s/bytes/%d" % (args.base, args.bytes)) as r:
            sha, got = digest(iter(lambda: r.read(65536), b""))
            out["get"] = {"status": r.status, "received": got, "sha256": sha,
                          "expected": r.headers.get("X-Sha256")}
        body = os.urandom(args.bytes)
        req = urllib.request.Request(args.base + "/sha256", data=body, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req) as r:
            out["post"] = {"status": r.status, "sent": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                           "reply": json.loads(r.read())}
    except Exception as e:  # the test reports whatever went wrong, with its type
        out["error"] = "%s: %s" % (type(e).__name__, e)
    emit(**out)


def bulk_server(args):
    """Sends `bytes` pseudo-random bytes to each client then closes; prints the digest. An IPv6 bind
    address makes it an AF_INET6 listener."""
    ls = listen_tcp(args, 64)
    while True:
        c, peer = ls.accept()
        data = hashlib.shake_256(b"merbridge").digest(args.bytes)
        c.sendall(data)
        c.close()
        emit(event="sent", peer=fmt_addr(peer), sha256=hashlib.sha256(data).hexdigest())


def bulk_client(args):
    host, port = args.target.rsplit(":", 1)
    if args.ipv6_dstopts:
        # A destination options header (one PadN option filling its 8 bytes) on every packet, SYN
        # included: what a program parsing IPv6 must step over to reach TCP.
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.settimeout(args.timeout)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
        s.connect((host.strip("[]"), int(port)))
    else:
        s = socket.create_connection((host.strip("[]"), int(port)), timeout=args.timeout)
    sha, n = digest(iter(lambda: s.recv(1 << 16), b""))
    expected = hashlib.sha256(hashlib.shake_256(b"merbridge").digest(args.bytes)).hexdigest()
    emit(ok=sha == expected and n == args.bytes, received=n, sha256=sha)


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
    ls = listen_tcp(args, 64)

    def handle(c):
        def slowly():
            for d in iter(lambda: c.recv(args.chunk), b""):
                yield d
                time.sleep(args.delay_ms / 1000)
        sha, n = digest(slowly())
        c.sendall((json.dumps({"received": n, "sha256": sha}) + "\n").encode())
        c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def upload(args):
    """Writes `bytes` as fast as the socket takes them, half-closes, and checks the sink's digest."""
    host, port = args.target.rsplit(":", 1)
    watchdog(args.timeout)
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=args.timeout)
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
    ls = listen_tcp(args, 64)

    def handle(c, peer):
        c.sendall(b'{"server": "%s"}\n' % args.name.encode())
        sha, n = digest(iter(lambda: c.recv(65536), b""))
        reply = {"sha256": sha, "received": n, "tail": args.tail}
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
    s = socket.socket(socket.AF_INET6 if ":" in args.bind else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((args.bind, args.port))
    emit(event="listening", port=args.port)
    while True:
        data, peer = s.recvfrom(65536)
        reply = {"server": args.name, "peer": fmt_addr(peer), "query": data.decode(errors="replace")}
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
        if ":" in args.bind:
            # "::" serves both families, as a dual-stack pod's app does.
            ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        else:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((args.bind, port))
        ls.listen(512)
        ls_all.append(ls)

    def handle(c, peer):
        hello = json.dumps({"server": args.name, "peer": addr_text(peer),
                            "local": addr_text(c.getsockname())}) + "\n"
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


def connect_loop(args):
    """Opens and closes `count` connections one after another, each reading the server's greeting:
    the short connections that churn a node's connection tables."""
    host, port = args.target.rsplit(":", 1)
    ok = 0
    errors = {}
    for _ in range(args.count):
        try:
            s = socket.create_connection((host, int(port)), timeout=args.timeout)
            if read_line(s):
                ok += 1
            else:
                errors["no greeting"] = errors.get("no greeting", 0) + 1
            s.close()
        except OSError as e:
            errors[str(e)] = errors.get(str(e), 0) + 1
    emit(ok=ok == args.count, connected=ok, errors=errors)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff


def syn_flood(args):
    """Sends `count` bare SYNs from --src (an address nobody answers for, so no handshake ever
    completes and no RST comes back) to the target, from varying source ports."""
    host, port = args.target.rsplit(":", 1)
    src, dst = socket.inet_aton(args.src), socket.inet_aton(host)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    sent = 0
    for i in range(args.count):
        sport = 1024 + (i * 7919) % 64000
        tcp = struct.pack("!HHIIBBHHH", sport, int(port), i, 0, 5 << 4, 0x02, 64240, 0, 0)
        pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i & 0xffff, 0, 64, socket.IPPROTO_TCP, 0,
                         src, dst)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        s.sendto(ip + tcp, (host, 0))
        sent += 1
    emit(ok=True, sent=sent)


def hold(args):
    """Opens connections and keeps them open until killed: up to `count`, stopping at the first that
    fails (whose error is the point when a table is full)."""
    host, port = args.target.rsplit(":", 1)
    held = []
    error = None
    for _ in range(args.count):
        try:
            s = socket.create_connection((host, int(port)), timeout=args.timeout)
            read_line(s)
            held.append(s)
        except OSError as e:
            error = "%s (errno %s)" % (e, e.errno)
            break
    emit(event="held", n=len(held), error=error)
    while True:
        time.sleep(3600)


def idle_echo(args):
    """Opens a connection, then idles until the file --go exists, then checks one echo on it: a long
    pooled connection that must survive whatever happened to the node meanwhile."""
    host, port = args.target.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(args.timeout)
    if args.sport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", args.sport))
    s.connect((host, int(port)))
    hello = read_line(s)
    emit(event="open", hello=json.loads(hello) if hello else None, local="%s:%d" % s.getsockname())
    while not os.path.exists(args.go):
        time.sleep(0.05)
    payload = os.urandom(args.bytes)
    try:
        s.sendall(payload)
        got = recv_exact(s, len(payload))
        emit(ok=got == payload, received=len(got))
    except OSError as e:
        emit(ok=False, error=str(e))


def probe(args):
    """Runs connection probes one after the other, as this process's uid and gid: each is a JSON
    object {id, target "host:port", family 4|6, bind (source address, optional)}. For each it prints
    what the client saw: the local address the kernel gave it (the key the sidecar's log is matched
    on), the greeting of the server that answered, and whether the echo came back whole."""
    for spec in json.loads(args.spec):
        host, port = spec["target"].rsplit(":", 1)
        host = host.strip("[]")
        fam = socket.AF_INET6 if spec.get("family") == 6 else socket.AF_INET
        if fam == socket.AF_INET6 and ":" not in host:
            host = "::ffff:" + host
        res = {"id": spec["id"]}
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.settimeout(args.timeout)
            if spec.get("bind"):
                b = spec["bind"]
                s.bind(("::ffff:" + b if fam == socket.AF_INET6 and ":" not in b else b, 0))
            s.connect((host, int(port)))
            res["local"] = addr_text(s.getsockname())
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
                    res["local"] = addr_text(s.getsockname())
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
    a.add_argument("--max-hops", type=int, default=3,
                   help="a connection chain through this sidecar longer than this is a loop")
    a.add_argument("--dual-stack", action="store_true", help="listen on [::] (IPV6_V6ONLY off), as a dual-stack proxy")
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
    a.add_argument("--sport", type=int, default=0, help="fixed source port (SO_REUSEADDR)")
    a = sub.add_parser("http-server")
    a.add_argument("--bind", default="0.0.0.0")
    a.add_argument("--port", type=int, required=True)
    a = sub.add_parser("http-client")
    a.add_argument("base", help="http://ip:port")
    a.add_argument("--bytes", type=int, required=True)
    a.add_argument("--timeout", type=float, default=30)
    a = sub.add_parser("bulk-server")
    a.add_argument("--bind", default="0.0.0.0")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--bytes", type=int, required=True)
    a = sub.add_parser("bulk-client")
    a.add_argument("target")
    a.add_argument("--bytes", type=int, required=True)
    a.add_argument("--timeout", type=float, default=10)
    a.add_argument("--ipv6-dstopts", action="store_true", help="send a destination options header")
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
    a = sub.add_parser("connect-loop")
    a.add_argument("target")
    a.add_argument("--count", type=int, required=True)
    a.add_argument("--timeout", type=float, default=5)
    a = sub.add_parser("syn-flood")
    a.add_argument("target")
    a.add_argument("--count", type=int, required=True)
    a.add_argument("--src", required=True)
    a = sub.add_parser("hold")
    a.add_argument("target")
    a.add_argument("--count", type=int, required=True)
    a.add_argument("--timeout", type=float, default=5)
    a = sub.add_parser("idle-echo")
    a.add_argument("target")
    a.add_argument("--go", required=True, help="file whose existence ends the idle time")
    a.add_argument("--sport", type=int, default=0, help="fixed source port (SO_REUSEADDR)")
    a.add_argument("--bytes", type=int, default=1000)
    a.add_argument("--timeout", type=float, default=10)
    args = p.parse_args()
    {"proxy": proxy, "server": server, "client": client, "bulk-server": bulk_server,
     "bulk-client": bulk_client, "http-server": http_server, "http-client": http_client, "origdst-probe": origdst_probe, "pingpong": pingpong,
     "bulk-echo": bulk_echo, "slow-sink": slow_sink, "upload": upload, "halfclose": halfclose, "halfclose-server": halfclose_server,
     "readiness": readiness, "udp-server": udp_server, "udp-client": udp_client,
     "servers": servers, "probe": probe,
     "connect-loop": connect_loop, "syn-flood": syn_flood, "hold": hold, "idle-echo": idle_echo}[args.cmd](args)


if __name__ == "__main__":
    main()
