// The daemon <-> plugin socket protocol: client error kinds, server validation and isolation.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  callDaemon,
  DaemonAnsweredError,
  DaemonProtocolError,
  type DaemonRequest,
  DaemonUnreachableError,
  parseDaemonRequest,
} from "../../cni/protocol.ts";
import { serveDaemonSocket } from "../../src/daemon/socket_server.ts";

const ADD: DaemonRequest = {
  op: "add",
  containerId: "c0ffee",
  netns: "/var/run/netns/cni-9",
  ifName: "eth0",
  podNamespace: "default",
  podName: "web-0",
  cniVersion: "1.0.0",
};

/** Sends raw bytes and returns everything the server answers before closing. */
async function rawExchange(path: string, bytes: string, closeWrite = true): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  const data = new TextEncoder().encode(bytes);
  for (let off = 0; off < data.length;) {
    try {
      off += await conn.write(data.subarray(off));
    } catch {
      // The server stops reading an oversized request and answers right away.
      break;
    }
  }
  if (closeWrite) await conn.closeWrite();
  const chunks: string[] = [];
  const buf = new Uint8Array(4096);
  const dec = new TextDecoder();
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(dec.decode(buf.subarray(0, n)));
  }
  conn.close();
  return chunks.join("");
}

Deno.test("CNI daemon protocol", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "merbridge-cni-proto-" });
  const path = join(dir, "run", "cni.sock");
  try {
    await t.step("request validation names the offending field", () => {
      assert.throws(() => parseDaemonRequest({ ...ADD, op: "frob" }), /"op"/);
      assert.throws(() => parseDaemonRequest({ ...ADD, containerId: "" }), /"containerId"/);
      assert.throws(() => parseDaemonRequest({ ...ADD, netns: 5 }), /"netns"/);
      assert.throws(() => parseDaemonRequest({ op: "gc", cniVersion: "1.1.0" }), /validAttachments/);
      assert.throws(
        () => parseDaemonRequest({ op: "gc", cniVersion: "1.1.0", validAttachments: [{ containerId: 1 }] }),
        /validAttachments\[0\]/,
      );
      // DEL may come after the namespace is gone.
      assert.equal(parseDaemonRequest({ ...ADD, op: "del", netns: undefined }).netns, "");
      assert.deepEqual(parseDaemonRequest({ op: "status", cniVersion: "1.1.0" }).containerId, "");
    });

    await t.step("callDaemon tells an absent daemon from a stale socket", async () => {
      await assert.rejects(
        callDaemon(path, ADD, 500),
        (e) => e instanceof DaemonUnreachableError && e.reason === "no-socket",
      );
      // A socket file whose listener is gone (a daemon killed without cleanup).
      await Deno.mkdir(join(dir, "stale"));
      const stale = join(dir, "stale", "cni.sock");
      const l = Deno.listen({ transport: "unix", path: stale });
      const ino = Deno.lstatSync(stale).ino;
      // Keep the file while dropping the listener: move it aside and back.
      Deno.renameSync(stale, stale + ".keep");
      l.close();
      Deno.renameSync(stale + ".keep", stale);
      assert.equal(Deno.lstatSync(stale).ino, ino);
      await assert.rejects(
        callDaemon(stale, ADD, 500),
        (e) => e instanceof DaemonUnreachableError && e.reason === "refused",
      );
    });

    await t.step("the server replaces a stale socket and restricts permissions", async () => {
      await Deno.mkdir(join(dir, "run"), { mode: 0o755 });
      await Deno.writeFile(path, new Uint8Array());
      assert.throws(() => serveDaemonSocket(path, () => Promise.resolve({ ok: true })), /non-socket/);
      await Deno.remove(path);
      const first = serveDaemonSocket(path, () => Promise.resolve({ ok: true }));
      // Simulate a crash: the file stays, the listener is gone.
      Deno.renameSync(path, path + ".keep");
      await first.close();
      Deno.renameSync(path + ".keep", path);
      const server = serveDaemonSocket(
        path,
        () => Promise.resolve({ ok: true, inMesh: true, podIp: "10.1.1.1" }),
      );
      try {
        assert.equal(Deno.statSync(join(dir, "run")).mode! & 0o777, 0o700);
        assert.equal(Deno.lstatSync(path).mode! & 0o777, 0o600);
        assert.deepEqual(await callDaemon(path, ADD, 1_000), { ok: true, inMesh: true, podIp: "10.1.1.1" });
      } finally {
        await server.close();
      }
      assert.throws(() => Deno.lstatSync(path), Deno.errors.NotFound);
    });

    await t.step("a daemon error answer is a DaemonAnsweredError with its code", async () => {
      const server = serveDaemonSocket(
        path,
        () => Promise.resolve({ ok: false, code: 3, msg: "unknown container", details: "c0ffee" }),
      );
      try {
        await assert.rejects(callDaemon(path, ADD, 1_000), (e) => {
          assert.ok(e instanceof DaemonAnsweredError);
          assert.equal(e.code, 3);
          assert.equal(e.msg, "unknown container");
          assert.equal(e.details, "c0ffee");
          return true;
        });
      } finally {
        await server.close();
      }
    });

    await t.step("a handler that throws becomes a 'try again later' answer", async () => {
      const server = serveDaemonSocket(path, () => Promise.reject(new Error("bpf map full")));
      try {
        await assert.rejects(
          callDaemon(path, ADD, 1_000),
          (e) => e instanceof DaemonAnsweredError && e.code === 11 && e.details === "bpf map full",
        );
      } finally {
        await server.close();
      }
    });

    await t.step("an invalid answer is a DaemonProtocolError", async () => {
      await Deno.mkdir(join(dir, "bad"));
      const badPath = join(dir, "bad", "cni.sock");
      const l = Deno.listen({ transport: "unix", path: badPath });
      const serving = (async () => {
        for (const answer of ["hello\n", `{"ok": "yes"}\n`]) {
          const c = await l.accept();
          await c.read(new Uint8Array(4096));
          await c.write(new TextEncoder().encode(answer));
          c.close();
        }
      })();
      await assert.rejects(
        callDaemon(badPath, ADD, 1_000),
        (e) => e instanceof DaemonProtocolError && /not JSON/.test(e.message),
      );
      await assert.rejects(
        callDaemon(badPath, ADD, 1_000),
        (e) => e instanceof DaemonProtocolError && /"ok"/.test(e.message),
      );
      await serving;
      l.close();
    });

    await t.step("malformed requests get a clear answer and do not disturb other clients", async () => {
      const seen: string[] = [];
      const server = serveDaemonSocket(path, (req) => {
        seen.push(req.containerId);
        return Promise.resolve({ ok: true, inMesh: false });
      });
      try {
        // A client that connects and never sends anything holds only its own connection.
        const stalled = await Deno.connect({ transport: "unix", path });
        const notJson = JSON.parse(await rawExchange(path, "garbage\n"));
        assert.equal(notJson.ok, false);
        assert.equal(notJson.code, 6);
        assert.match(notJson.msg, /not JSON/);
        const badField = JSON.parse(await rawExchange(path, JSON.stringify({ ...ADD, ifName: 7 }) + "\n"));
        assert.equal(badField.code, 6);
        assert.match(badField.msg, /"ifName"/);
        const huge = JSON.parse(await rawExchange(path, "x".repeat(300 * 1024)));
        assert.match(huge.msg, /longer than/);
        // The good client still gets served, concurrently with the stalled one.
        const answers = await Promise.all(
          [1, 2, 3].map((i) => callDaemon(path, { ...ADD, containerId: `c${i}` }, 1_000)),
        );
        assert.ok(answers.every((a) => a.ok && a.inMesh === false));
        assert.deepEqual(seen.sort(), ["c1", "c2", "c3"]);
        stalled.close();
      } finally {
        await server.close();
      }
    });

    await t.step("a slow handler makes the client time out as unreachable", async () => {
      const server = serveDaemonSocket(
        path,
        () => new Promise((r) => setTimeout(() => r({ ok: true }), 800)),
      );
      try {
        const started = Date.now();
        await assert.rejects(
          callDaemon(path, ADD, 150),
          (e) => e instanceof DaemonUnreachableError && e.reason === "timeout",
        );
        assert.ok(Date.now() - started < 700);
      } finally {
        await server.close();
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("local API: the pod table travels over the socket, larger than any request may be", async () => {
  const dir = await Deno.makeTempDir({ prefix: "merbridge-localapi-" });
  const path = join(dir, "cni.sock");
  const pods = Array.from(
    { length: 6000 },
    (_, i) => ({ namespace: "default", name: `pod-${i}`, ip: `10.1.${i >> 8}.${i & 255}` }),
  );
  const server = serveDaemonSocket(
    path,
    (req) => Promise.resolve(req.op === "pods" ? { ok: true, pods } : { ok: false, code: 4, msg: "no" }),
  );
  try {
    const req: DaemonRequest = {
      op: "pods",
      containerId: "",
      netns: "",
      ifName: "",
      podNamespace: "",
      podName: "",
      cniVersion: "1.0.0",
    };
    assert.deepEqual(parseDaemonRequest(req), req, "pods needs no container fields");
    const res = await callDaemon(path, req, 5_000);
    assert.ok(JSON.stringify(res).length > 256 * 1024, "the answer is larger than the request limit");
    assert.deepEqual(res.pods, pods);
    assert.equal(Deno.statSync(path).mode! & 0o777, 0o600, "root only");
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
