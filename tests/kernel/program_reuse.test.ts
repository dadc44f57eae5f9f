// A restart of the same build reopens the programs the previous load pinned instead of verifying them
// again; anything that makes them the wrong programs (other table sizes, a map pin replaced or
// removed, a set a crash left half pinned) makes the next load verify its own. Real traffic goes
// through the reopened programs.
import assert from "node:assert/strict";
import { BpfLink } from "../../src/bpf/link.ts";
import { progInfo } from "../../src/bpf/info.ts";
import { PinnedProgram, pinProgram } from "../../src/bpf/pinned_program.ts";
import { PinnedMap } from "../../src/bpf/map_fd.ts";
import { CGROUP_PROGRAMS } from "../../src/datapath/catalog.ts";
import { connAdmitLimit, Datapath, DEFAULT_TABLE_SIZE, pinnedLinks } from "../../src/datapath/datapath.ts";
import { currentNetnsCookie } from "../../src/netns/cookie.ts";
import { createWorld, type Scope, Scope as TestScope, type World } from "../../testbed/mod.ts";

function progsDirs(pinPath: string): string[] {
  return [...Deno.readDirSync(`${pinPath}/progs`)].map((e) => e.name).sort();
}

/** Program id each pinned cgroup link runs, by hook. */
function linkProgIds(pinPath: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of pinnedLinks(pinPath)) {
    using link = BpfLink.openPinned(l.path);
    out[l.hook] = link.info().progId;
  }
  return out;
}

/** The world's datapath loaded again, as the next daemon would: same pins, same cgroup. */
function reload(scope: Scope, w: World, connTableSize?: number): Datapath {
  const dp = Datapath.load({
    pinPath: w.pinPath,
    cgroupPath: w.cgroup,
    dnsCapture: false,
    connTableSize,
    replaceIncompatiblePins: true,
  });
  scope.defer(() => dp.close());
  const size = connTableSize ?? DEFAULT_TABLE_SIZE;
  dp.maps.setMeshConfig(w.mesh, {
    dnsCapture: false,
    cniMode: false,
    sockmap: true,
    hostNetns: currentNetnsCookie(),
    connAdmit: connAdmitLimit(size),
  });
  return dp;
}

async function redirected(w: World, label: string): Promise<void> {
  const from = w.sidecars.a!.lines.length;
  const res = await w.client("a", `${w.pods.r!.ip}:8080`);
  assert.equal(res.ok, true, `${label}: ${JSON.stringify(res)}`);
  const acc = w.accepted("a", from);
  assert.equal(acc.length, 1, `${label}: the sidecar accepted ${JSON.stringify(acc)}`);
  assert.equal(acc[0]!.orig, `${w.pods.r!.ip}:8080`, label);
}

Deno.test("kernel: a reload of the same build reopens the pinned programs; other sizes, replaced maps and half-pinned sets load afresh", async (t) => {
  await using scope = new TestScope();
  const w = await createWorld(scope);
  assert.equal(w.dp.reusedPrograms, false, "the first load verifies");
  const [first] = progsDirs(w.pinPath);
  assert.ok(first, "the first load pinned its programs");
  const before = linkProgIds(w.pinPath);
  const hooks = CGROUP_PROGRAMS.filter((p) => !p.feature).map((p) => p.hook).sort();
  assert.deepEqual(Object.keys(before).sort(), hooks);
  w.dp.close();
  await redirected(w, "no daemon: the pinned links keep working");

  await t.step("a pin opened as another kind is refused, naming what it is", () => {
    const prog = `${w.pinPath}/progs/${first}/mb_connect4`;
    const map = `${w.pinPath}/maps/local_pods`;
    const link = pinnedLinks(w.pinPath)[0]!.path;
    assert.throws(() => PinnedMap.open(prog), /the pin is a BPF prog, not a map/);
    assert.throws(() => PinnedProgram.open(map), /the pin is a BPF map, not a program/);
    assert.throws(() => PinnedProgram.open(link), /the pin is a BPF link, not a program/);
    assert.throws(() => BpfLink.openPinned(prog), /the pin is a BPF prog, not a link/);
    using ok = PinnedProgram.open(prog);
    assert.equal(ok.info.id, before.connect4);
  });

  await t.step("same build, same sizes: reopened, and the links keep the programs they run", async () => {
    const dp = reload(scope, w);
    assert.equal(dp.reusedPrograms, true);
    const r = dp.attach();
    assert.deepEqual(r.kept.sort(), hooks);
    assert.deepEqual(r.updated, []);
    assert.deepEqual(linkProgIds(w.pinPath), before);
    assert.equal(progInfo(dp.program("connect", "mb_connect4")).id, before.connect4);
    await redirected(w, "reopened programs");
    dp.close();
  });

  await t.step("other table sizes: loaded afresh, swapped into the links, the old set unpinned", async () => {
    const dp = reload(scope, w, 32768);
    assert.equal(dp.reusedPrograms, false);
    const r = dp.attach();
    assert.deepEqual(r.updated.sort(), hooks);
    const now = linkProgIds(w.pinPath);
    for (const h of hooks) assert.notEqual(now[h], before[h], `${h} runs the new program`);
    const dirs = progsDirs(w.pinPath);
    assert.equal(dirs.length, 1);
    assert.notEqual(dirs[0], first);
    await redirected(w, "programs loaded for the new sizes");
    dp.close();
  });

  await t.step("a map pin replaced since: the programs that write the old map are not reused", async () => {
    // The default sizes again (a fresh load), then counters unpinned: a new, empty one is made.
    reload(scope, w).close();
    Deno.removeSync(`${w.pinPath}/maps/counters`);
    const dp = reload(scope, w);
    assert.equal(dp.reusedPrograms, false);
    dp.attach();
    await redirected(w, "after the counters pin was replaced");
    assert.ok(dp.maps.counters().connect_redirect >= 1n, "the programs count into the map pinned now");
    dp.close();
  });

  await t.step("a set a crash left behind (half pinned, or another build's) is removed", async () => {
    const [key] = progsDirs(w.pinPath);
    const prog = reload(scope, w);
    assert.equal(prog.reusedPrograms, true);
    // What a load killed between its pins and the rename would leave, and a set of an older build.
    pinProgram(prog.program("connect", "mb_connect4"), `${w.pinPath}/progs/tmp-${key}/mb_connect4`);
    pinProgram(prog.program("connect", "mb_connect4"), `${w.pinPath}/progs/0123456789abcdef/mb_connect4`);
    prog.close();
    const dp = reload(scope, w);
    assert.equal(dp.reusedPrograms, true);
    assert.deepEqual(progsDirs(w.pinPath), [key]);
    dp.close();
    // One program missing from the set: nothing of it is used, and the next load pins a whole set.
    Deno.removeSync(`${w.pinPath}/progs/${key}/mb_tc_egress`);
    const again = reload(scope, w);
    assert.equal(again.reusedPrograms, false);
    again.attach();
    assert.ok([...Deno.readDirSync(`${w.pinPath}/progs/${key}`)].some((e) => e.name === "mb_tc_egress"));
    await redirected(w, "after a half set was replaced");
    again.close();
  });
});
