// The generic loader against the real kernel (root): load, map operations, pinned-map reuse, a
// cgroup connect4 link proven by where a real TCP connection lands, link pinning, XDP and TC on a
// veth inside a throwaway network namespace, and the verifier log of a rejected program.
//
// Safety: programs attach only to a child cgroup this test creates (holding only the clients it
// spawns) and to veths inside a namespace it creates; pins live under a per-process bpffs dir; all
// of it is removed in finally blocks.
import assert from "node:assert/strict";
import { captureLogs } from "../../src/log/logger.ts";
import { BpfError } from "../../src/ffi/errors.ts";
import { CLONE_NEWNET, closeFd, ifNameToIndex, O_RDONLY, openFd, setnsFd } from "../../src/ffi/libc.ts";
import { mapInfoByFd, progInfo } from "../../src/bpf/info.ts";
import { attachCgroup, attachXdp, BpfLink } from "../../src/bpf/link.ts";
import { BPF_EXIST, BPF_NOEXIST, numPossibleCpus, openPinnedMap } from "../../src/bpf/map_fd.ts";
import { BpfObject, PinMismatchError } from "../../src/bpf/object.ts";
import { isPinned, pinFd, removePinTree } from "../../src/bpf/pins.ts";
import { cgroupQuery } from "../../src/bpf/prog_attach.ts";
import { tcAttach, tcDestroyHook, tcDetach, tcQuery } from "../../src/bpf/tc.ts";
import { AttachType } from "../../src/bpf/types.ts";
import { xdpAttach, xdpDetach, xdpQuery, xdpQueryId } from "../../src/bpf/xdp.ts";
import { thrown } from "../unit/helpers.ts";

const BUILD = new URL("../../bpf/build/test/", import.meta.url).pathname;
const FIXTURE = `${BUILD}loader_test.bpf.o`;
const REJECTED = `${BUILD}loader_reject.bpf.o`;
const PIN_ROOT = `/sys/fs/bpf/merbridge-test-${Deno.pid}`;

// ---- small helpers -------------------------------------------------------------------------------

function u16(n: number): Uint8Array {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, n, true);
  return b;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

function readU16(b: Uint8Array | undefined): number | undefined {
  return b === undefined ? undefined : new DataView(b.buffer, b.byteOffset).getUint16(0, true);
}

function readU64(b: Uint8Array | undefined): bigint | undefined {
  return b === undefined ? undefined : new DataView(b.buffer, b.byteOffset).getBigUint64(0, true);
}

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} exited ${out.code}: ${text.decode(out.stderr).trim()}`);
  }
  return text.decode(out.stdout);
}

/** The cgroup v2 mount point, from /proc/self/mountinfo (fields after " - " start with the fs type). */
function cgroup2Mount(): string {
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const [pre, post] = line.split(" - ");
    if (post?.split(" ")[0] === "cgroup2") {
      const mountPoint = pre?.split(" ")[4];
      if (mountPoint) return mountPoint.replace(/\\040/g, " ");
    }
  }
  throw new Error("no cgroup2 mount in /proc/self/mountinfo");
}

/** Removes a cgroup directory once the kernel has let go of its (exited) processes. */
async function removeCgroup(path: string): Promise<void> {
  for (let i = 0;; i++) {
    try {
      Deno.removeSync(path);
      return;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      if (i >= 50) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * Two listeners on 127.0.0.1 recording which one each client token reached: the observable effect
 * of a connect4 rewrite.
 */
class Landing implements AsyncDisposable {
  readonly ports: [number, number];
  readonly #listeners: Deno.TcpListener[];
  readonly #arrived = new Map<string, number>();
  readonly #loops: Promise<void>[];

  constructor() {
    this.#listeners = [0, 1].map(() => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
    this.ports = [this.#listeners[0]!.addr.port, this.#listeners[1]!.addr.port];
    this.#loops = this.#listeners.map((l) => this.#serve(l));
  }

  async #serve(listener: Deno.TcpListener): Promise<void> {
    try {
      for await (const conn of listener) {
        const buf = new Uint8Array(64);
        let token = "";
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) break;
          token += new TextDecoder().decode(buf.subarray(0, n));
        }
        conn.close();
        this.#arrived.set(token, listener.addr.port);
      }
    } catch (err) {
      if (!(err instanceof Deno.errors.BadResource)) throw err;
    }
  }

  /** Waits for `token` to reach one of the listeners; returns that listener's port. */
  async portFor(token: string): Promise<number> {
    for (let i = 0; i < 100; i++) {
      const port = this.#arrived.get(token);
      if (port !== undefined) return port;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`token ${token} reached no listener within 5 s`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const l of this.#listeners) l.close();
    await Promise.all(this.#loops);
  }
}

let tokens = 0;

/**
 * Runs a client inside `cgroup` that connects to 127.0.0.1:`port` and sends a token; returns the
 * port of the listener the token reached. The shell joins the cgroup before connecting, so the
 * connect runs under the cgroup's programs.
 */
async function connectFromCgroup(landing: Landing, cgroup: string, port: number): Promise<number> {
  const token = `t${Deno.pid}-${++tokens}`;
  const script = 'echo $$ > "$1/cgroup.procs" && exec 3<>"/dev/tcp/127.0.0.1/$2" && printf %s "$3" >&3';
  const out = await new Deno.Command("bash", {
    args: ["-c", script, "client", cgroup, String(port), token],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`client failed: ${new TextDecoder().decode(out.stderr)}`);
  return await landing.portFor(token);
}

/** Same, from this test process (which is not in the child cgroup). */
async function connectFromHere(landing: Landing, port: number): Promise<number> {
  const token = `h${Deno.pid}-${++tokens}`;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(token));
  conn.close();
  return await landing.portFor(token);
}

/** Runs `fn` with this thread in network namespace `name` (synchronous code only), then returns. */
function inNetns<T>(name: string, fn: () => T): T {
  const home = openFd("/proc/thread-self/ns/net", O_RDONLY);
  try {
    const target = openFd(`/run/netns/${name}`, O_RDONLY);
    try {
      setnsFd(target, CLONE_NEWNET);
    } finally {
      closeFd(target);
    }
    try {
      return fn();
    } finally {
      setnsFd(home, CLONE_NEWNET);
    }
  } finally {
    closeFd(home);
  }
}

// ---- tests -----------------------------------------------------------------------------------------

Deno.test("kernel: load the fixture and operate on its maps", async (t) => {
  using obj = BpfObject.open(FIXTURE);
  obj.load();
  assert.ok(obj.loaded);

  await t.step("programs have fds and the kernel knows them by name and type", () => {
    const prog = obj.program("rewrite_port");
    assert.ok(prog.fd > 0);
    const byFd = progInfo(prog);
    assert.equal(byFd.name, "rewrite_port");
    assert.equal(byFd.typeName, "cgroup_sock_addr");
    assert.match(byFd.tag, /^[0-9a-f]{16}$/);
    const byId = progInfo({ id: byFd.id });
    assert.deepEqual(byId, byFd);
  });

  await t.step("hash map: update, lookup, delete, with the usual flags", () => {
    const m = obj.map("port_rewrites");
    assert.equal(m.lookup(u16(8080)), undefined);
    m.update(u16(8080), u16(9090));
    assert.equal(readU16(m.lookup(u16(8080))), 9090);
    m.update(u16(8080), u16(9191), BPF_EXIST);
    assert.equal(readU16(m.lookup(u16(8080))), 9191);
    const exists = thrown(() => m.update(u16(8080), u16(1), BPF_NOEXIST));
    assert.ok(exists instanceof BpfError);
    assert.equal(exists.code, "EEXIST");
    assert.match(exists.message, /^bpf_map_update_elem\(port_rewrites\): /);
    const absent = thrown(() => m.update(u16(7070), u16(1), BPF_EXIST));
    assert.ok(absent instanceof BpfError);
    assert.equal(absent.code, "ENOENT");
    assert.equal(m.delete(u16(8080)), true);
    assert.equal(m.delete(u16(8080)), false);
    assert.equal(m.lookup(u16(8080)), undefined);
  });

  await t.step("hash map: keys() and entries() list exactly what is there, deletion while iterating", () => {
    const m = obj.map("port_rewrites");
    const want = new Map([[1000, 2000], [1001, 2001], [1002, 2002], [65535, 1]]);
    for (const [k, v] of want) m.update(u16(k), u16(v));
    const keys = [...m.keys()].map((k) => readU16(k)).sort((a, b) => a! - b!);
    assert.deepEqual(keys, [...want.keys()]);
    const entries = new Map([...m.entries()].map(([k, v]) => [readU16(k)!, readU16(v)!]));
    assert.deepEqual(entries, want);
    for (const k of m.keys()) m.delete(k);
    assert.deepEqual([...m.keys()], []);
  });

  await t.step("sizes are checked before the kernel sees a buffer", () => {
    const m = obj.map("port_rewrites");
    assert.throws(() => m.update(u32(1), u16(1)), /key is 4 bytes, the map's are 2/);
    assert.throws(() => m.update(u16(1), u32(1)), /value is 4 bytes, the map's are 2/);
    assert.throws(() => m.lookup(new Uint8Array(1)), RangeError);
  });

  await t.step("array map: every index exists and reads as zero", () => {
    const m = obj.map("stats");
    assert.deepEqual([...m.keys()].map((k) => new DataView(k.buffer).getUint32(0, true)), [0, 1, 2, 3]);
    assert.equal(readU64(m.lookup(u32(3))), 0n);
    assert.equal(m.lookup(u32(4)), undefined);
  });

  await t.step("per-CPU map: one value per possible CPU; the single-value calls refuse it", () => {
    const m = obj.map("cpu_hits");
    assert.throws(() => m.lookup(u32(0)), /percpu_array: use lookupPerCpu\(\)/);
    const cpus = numPossibleCpus();
    const values = Array.from({ length: cpus }, (_, i) => u32(100 + i));
    m.updatePerCpu(u32(0), values);
    const back = m.lookupPerCpu(u32(0));
    assert.equal(back?.length, cpus);
    assert.deepEqual(
      back?.map((b) => new DataView(b.buffer).getUint32(0, true)),
      values.map((_, i) => 100 + i),
    );
    assert.throws(() => m.updatePerCpu(u32(0), values.slice(1)), /per-CPU values given/);
    assert.throws(() => obj.map("stats").lookupPerCpu(u32(0)), /not a per-CPU map/);
  });
});

Deno.test("kernel: maps pinned in a directory are reused by the next load", async (t) => {
  const dir = `${PIN_ROOT}/maps`;
  const other = `${PIN_ROOT}/mismatch`;
  try {
    let firstId = 0;
    await t.step("first load creates and pins every declared map, and no internal one", () => {
      using obj = BpfObject.open(FIXTURE, { pinMapsDir: dir });
      obj.load();
      obj.map("port_rewrites").update(u16(8080), u16(15001));
      firstId = mapInfoByFd(obj.map("port_rewrites").fd).id;
      assert.equal(obj.map("port_rewrites").pinPath, `${dir}/port_rewrites`);
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
        "cpu_hits",
        "port_rewrites",
        "stats",
      ]);
    });

    await t.step("the pin outlives the object and opens with the kernel's description", () => {
      using pinned = openPinnedMap(`${dir}/port_rewrites`);
      assert.equal(pinned.info.id, firstId);
      assert.equal(pinned.info.name, "port_rewrites");
      assert.equal(pinned.info.typeName, "hash");
      assert.deepEqual([pinned.keySize, pinned.valueSize, pinned.maxEntries], [2, 2, 64]);
      assert.equal(readU16(pinned.lookup(u16(8080))), 15001);
    });

    await t.step("a second open reuses the pinned map: same map id, value intact", () => {
      using obj = BpfObject.open(FIXTURE, { pinMapsDir: dir });
      obj.load();
      const m = obj.map("port_rewrites");
      assert.equal(mapInfoByFd(m.fd).id, firstId);
      assert.equal(readU16(m.lookup(u16(8080))), 15001);
    });

    await t.step("an incompatible pin is reported with the map, the pin and the differences", () => {
      // Put the array map `stats` where the hash map `port_rewrites` will look for its pin.
      Deno.mkdirSync(other);
      using stats = openPinnedMap(`${dir}/stats`);
      pinFd(stats.fd, `${other}/port_rewrites`);
      using obj = BpfObject.open(FIXTURE, { pinMapsDir: other });
      const err = thrown(() => obj.load());
      assert.ok(err instanceof PinMismatchError, String(err));
      assert.equal(err.mapName, "port_rewrites");
      assert.equal(err.pinPath, `${other}/port_rewrites`);
      assert.ok(err.differences.includes("type: pinned array, object hash"), err.message);
      assert.ok(err.differences.includes("key size: pinned 4, object 2"), err.message);
      assert.equal(obj.loaded, false);
    });

    await t.step("removePinTree unpins everything and removes the directories", () => {
      assert.equal(removePinTree(PIN_ROOT), 4);
      assert.ok(!isPinned(`${dir}/port_rewrites`));
      assert.throws(() => Deno.statSync(PIN_ROOT), Deno.errors.NotFound);
    });
  } finally {
    removePinTree(PIN_ROOT);
  }
});

Deno.test("kernel: a cgroup connect4 link redirects only its cgroup, survives as a pin, detaches on unpin", async (t) => {
  const cgroup = `${cgroup2Mount()}/merbridge-test-${Deno.pid}`;
  const linkPin = `${PIN_ROOT}/links/connect4`;
  Deno.mkdirSync(cgroup);
  let link: BpfLink | undefined;
  let obj: BpfObject | undefined;
  try {
    await using landing = new Landing();
    const [p1, p2] = landing.ports;
    obj = BpfObject.open(FIXTURE);
    obj.load();
    const prog = obj.program("rewrite_port");
    const progId = progInfo(prog).id;
    obj.map("port_rewrites").update(u16(p1), u16(p2));

    await t.step("without the program, the client reaches the port it asked for", async () => {
      assert.equal(await connectFromCgroup(landing, cgroup, p1), p1);
    });

    link = attachCgroup(prog, cgroup);

    await t.step("attached: the client in the cgroup lands on the rewritten port", async () => {
      assert.equal(await connectFromCgroup(landing, cgroup, p1), p2);
      assert.equal(await connectFromCgroup(landing, cgroup, p2), p2);
      assert.equal(readU64(obj!.map("stats").lookup(u32(0))), 1n);
      const hits = obj!.map("cpu_hits").lookupPerCpu(u32(0)) ?? [];
      assert.equal(hits.reduce((s, b) => s + new DataView(b.buffer).getUint32(0, true), 0), 1);
    });

    await t.step("a process outside the cgroup is not affected", async () => {
      assert.equal(await connectFromHere(landing, p1), p1);
    });

    await t.step("the cgroup lists the program as attached through a link (multi-attach)", () => {
      const q = cgroupQuery(cgroup, AttachType.CGROUP_INET4_CONNECT);
      assert.deepEqual(q.progIds, [progId]);
      assert.equal(link!.info().progId, progId);
      const root = cgroupQuery(cgroup2Mount(), AttachType.CGROUP_INET4_CONNECT);
      assert.ok(!root.progIds.includes(progId), "never attached to the root cgroup");
    });

    await t.step("pinned, with every handle of ours closed, the program stays attached", async () => {
      link!.pin(linkPin);
      assert.ok(isPinned(linkPin));
      link!.close();
      link = undefined;
      obj!.close();
      obj = undefined;
      assert.equal(await connectFromCgroup(landing, cgroup, p1), p2);
      assert.deepEqual(cgroupQuery(cgroup, AttachType.CGROUP_INET4_CONNECT).progIds, [progId]);
    });

    await t.step("the pin reopens as a link; unpinning it with no fd left detaches", async () => {
      const reopened = BpfLink.openPinned(linkPin);
      assert.equal(reopened.info().progId, progId);
      reopened.unpin();
      reopened.close();
      assert.ok(!isPinned(linkPin));
      // The kernel frees the link after an RCU grace period: poll briefly.
      let landed = p2;
      for (let i = 0; i < 50 && landed !== p1; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, 100));
        landed = await connectFromCgroup(landing, cgroup, p1);
      }
      assert.equal(landed, p1);
      assert.deepEqual(cgroupQuery(cgroup, AttachType.CGROUP_INET4_CONNECT).progIds, []);
    });
  } finally {
    link?.close();
    obj?.close();
    removePinTree(PIN_ROOT);
    await removeCgroup(cgroup);
  }
});

Deno.test("kernel: XDP and TC on a veth inside a test network namespace", async (t) => {
  const ns = `mbt-loader-${Deno.pid}`;
  await run("ip", ["netns", "add", ns]);
  try {
    const inNs = (cmd: string, ...args: string[]) => run("nsenter", [`--net=/run/netns/${ns}`, cmd, ...args]);
    await inNs("ip", "link", "add", "mbt0", "type", "veth", "peer", "name", "mbt1");
    await inNs("ip", "link", "set", "mbt0", "up");
    await inNs("ip", "link", "set", "mbt1", "up");
    using obj = BpfObject.open(FIXTURE);
    obj.load();
    const xdp = obj.program("pass_xdp");
    const alt = obj.program("pass_xdp_alt");
    const tc = obj.program("pass_tc");
    const ids = { xdp: progInfo(xdp).id, alt: progInfo(alt).id, tc: progInfo(tc).id };

    await t.step("the interface exists only inside the namespace", () => {
      assert.throws(() => ifNameToIndex("mbt0"), /No such device/);
      assert.ok(inNetns(ns, () => ifNameToIndex("mbt0")) > 0);
    });

    await t.step(
      "XDP link, native and generic: attach pinned, query, update to another program, detach",
      () => {
        try {
          inNetns(ns, () => {
            const ifindex = ifNameToIndex("mbt0");
            for (const mode of ["native", "generic"] as const) {
              const pin = `${PIN_ROOT}/xdp/${mode}`;
              using link = attachXdp(xdp, ifindex, pin, mode);
              assert.equal(link.pinPath, pin);
              assert.equal(xdpQuery(ifindex).attachMode, mode === "native" ? "drv" : "skb", mode);
              assert.equal(xdpQueryId(ifindex), ids.xdp);
              const busy = thrown(() => xdpAttach(ifindex, alt));
              assert.ok(busy instanceof BpfError, "netlink cannot replace a link's program");
              link.update(alt);
              assert.equal(xdpQueryId(ifindex), ids.alt);
              link.unpin();
              link.detach();
              assert.equal(xdpQueryId(ifindex), undefined);
            }
          });
        } finally {
          removePinTree(PIN_ROOT);
        }
      },
    );

    await t.step("XDP over netlink: attach in driver mode, guarded replace, guarded detach", () => {
      inNetns(ns, () => {
        const ifindex = ifNameToIndex("mbt0");
        try {
          xdpAttach(ifindex, xdp, { mode: "drv" });
          assert.equal(xdpQueryId(ifindex, "drv"), ids.xdp);
          assert.deepEqual(xdpQuery(ifindex), {
            attachMode: "drv",
            progId: ids.xdp,
            drvProgId: ids.xdp,
            skbProgId: 0,
            hwProgId: 0,
          });
          const busy = thrown(() => xdpAttach(ifindex, alt, { mode: "drv", ifNoneAttached: true }));
          assert.ok(busy instanceof BpfError);
          assert.equal(busy.code, "EBUSY");
          const stale = thrown(() => xdpAttach(ifindex, alt, { mode: "drv", replace: alt }));
          assert.ok(stale instanceof BpfError);
          assert.equal(stale.code, "EEXIST");
          assert.equal(xdpQueryId(ifindex), ids.xdp, "a failed replace leaves the program in place");
          xdpAttach(ifindex, alt, { mode: "drv", replace: xdp });
          assert.equal(xdpQueryId(ifindex), ids.alt);
          const wrong = thrown(() => xdpDetach(ifindex, { mode: "drv", expected: xdp }));
          assert.ok(wrong instanceof BpfError);
          assert.equal(xdpQueryId(ifindex), ids.alt);
          xdpDetach(ifindex, { mode: "drv", expected: alt });
          assert.equal(xdpQueryId(ifindex), undefined);
          assert.equal(xdpQuery(ifindex).attachMode, "none");
        } finally {
          if (xdpQueryId(ifindex) !== undefined) xdpDetach(ifindex);
        }
      });
    });

    await t.step("TC: clsact filters per direction, replace, query, detach", () => {
      inNetns(ns, () => {
        const ifindex = ifNameToIndex("mbt0");
        try {
          assert.equal(tcQuery({ ifindex, direction: "ingress", handle: 1, priority: 1 }), undefined);
          const ingress = tcAttach({ ifindex, direction: "ingress", prog: tc, handle: 1, priority: 1 });
          assert.deepEqual(ingress, {
            ifindex,
            direction: "ingress",
            handle: 1,
            priority: 1,
            progId: ids.tc,
          });
          assert.equal(tcQuery(ingress), ids.tc);
          assert.equal(tcQuery({ ...ingress, direction: "egress" }), undefined);
          const dup = thrown(() =>
            tcAttach({ ifindex, direction: "ingress", prog: tc, handle: 1, priority: 1 })
          );
          assert.ok(dup instanceof BpfError);
          assert.equal(dup.code, "EEXIST");
          tcAttach({ ifindex, direction: "ingress", prog: tc, handle: 1, priority: 1, replace: true });
          const egress = tcAttach({ ifindex, direction: "egress", prog: tc });
          assert.ok(egress.handle > 0 && egress.priority > 0, "the kernel chose a handle and priority");
          assert.equal(tcQuery(egress), ids.tc);
          assert.equal(tcDetach(ingress), true);
          assert.equal(tcDetach(ingress), false);
          assert.equal(tcQuery(ingress), undefined);
          assert.equal(tcQuery(egress), ids.tc, "the other direction is untouched");
          assert.equal(tcDetach(egress), true);
        } finally {
          tcDestroyHook(ifindex);
        }
        assert.equal(tcQuery({ ifindex, direction: "egress", handle: 1, priority: 1 }), undefined);
      });
    });

    await t.step("the host's namespace saw none of it", async () => {
      assert.ok(!(await run("ip", ["-o", "link", "show"])).includes("mbt0"));
    });
  } finally {
    await run("ip", ["netns", "del", ns]);
  }
});

Deno.test("kernel: a program the verifier rejects fails load with the verifier log, logged as a warning", () => {
  using capture = captureLogs(["libbpf"], "warning");
  const records = capture.records;
  {
    using obj = BpfObject.open(REJECTED);
    const err = thrown(() => obj.load());
    assert.ok(err instanceof BpfError, String(err));
    assert.equal(err.code, "EACCES");
    assert.equal(err.op, `bpf_object__load(${REJECTED})`);
    assert.match(err.log ?? "", /invalid mem access 'map_value_or_null'/);
    assert.match(err.message, /invalid mem access/, "the message carries the tail of the log");
    assert.ok(
      records.some((r) =>
        r.level === "warning" && String(r.properties.message).includes("invalid mem access")
      ),
      "the verifier log reached the logger at warning level",
    );
    assert.throws(() => obj.load(), /already called/);
  }
});
