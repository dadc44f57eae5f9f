// Chaining into configuration text: additions are exact inverses of removals, and nothing that
// is not ours changes.
import assert from "node:assert/strict";
import {
  CniConfigFileError,
  parseConfFile,
  pluginEntry,
  withOurEntry,
  withoutOurEntries,
  wrapConf,
} from "../../src/installer/conflist.ts";
import { arrayElements, documentSpan, objectMembers, prettyJson } from "../../cni/json_text.ts";

const enc = new TextEncoder();
const entry = pluginEntry({ socketPath: "/run/m/cni.sock", timeoutMs: 2000 });
const list = (text: string) => parseConfFile("/etc/cni/net.d/10-x.conflist", enc.encode(text));

Deno.test("CNI conflist editing", async (t) => {
  await t.step("spans follow strings with brackets, escapes and nesting", () => {
    const text = `{"a": "x}]\\"y", "b": [1, {"c": [2, 3]}, "]"], "d": -1.5e-3}`;
    const members = objectMembers(text, documentSpan(text));
    assert.deepEqual(members.map((m) => m.key), ["a", "b", "d"]);
    const b = members[1]!;
    const els = arrayElements(text, b.value).map((s) => text.slice(s.start, s.end));
    assert.deepEqual(els, ["1", `{"c": [2, 3]}`, `"]"`]);
    assert.equal(text.slice(members[2]!.value.start, members[2]!.value.end), "-1.5e-3");
  });

  await t.step("prettyJson keeps every token as written", () => {
    const text = `{"n":1.50,"big":12345678901234567890123,"s":"a\\u0041","e":{},"l":[]}`;
    const pretty = prettyJson(text, "  ");
    assert.equal(
      pretty,
      `{\n  "n": 1.50,\n  "big": 12345678901234567890123,\n  "s": "a\\u0041",\n  "e": {},\n  "l": []\n}`,
    );
  });

  await t.step("a compact list gets a compact entry, removed exactly", () => {
    const text = `{"cniVersion":"1.0.0","name":"kindnet","plugins":[{"type":"ptp"},{"type":"portmap"}]}`;
    const added = withOurEntry(list(text), entry);
    assert.equal(
      added,
      `{"cniVersion":"1.0.0","name":"kindnet","plugins":[{"type":"ptp"},{"type":"portmap"},` +
        `{"type":"merbridge-cni","socketPath":"/run/m/cni.sock","timeoutMs":2000}]}`,
    );
    assert.equal(withoutOurEntries(added), text);
    assert.equal(withOurEntry(list(added), entry), added, "already there: same text");
  });

  await t.step("an indented list gets an entry indented like its neighbours", () => {
    const text =
      `{\n    "cniVersion": "0.4.0",\n    "name": "n",\n    "plugins": [\n        {"type": "flannel"}\n    ]\n}\n`;
    const added = withOurEntry(list(text), entry);
    assert.ok(
      added.includes(`        {"type": "flannel"},\n        {\n            "type": "merbridge-cni",`),
      added,
    );
    assert.equal(withoutOurEntries(added), text);
  });

  await t.step("a stale, duplicated or misplaced entry becomes one current entry at the end", () => {
    const text =
      `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"merbridge-cni","timeoutMs":1},{"type":"ptp"},{"type":"merbridge-cni"}]}`;
    const fixed = withOurEntry(list(text), entry);
    const plugins = JSON.parse(fixed).plugins;
    assert.deepEqual(plugins, [{ type: "ptp" }, entry]);
    assert.equal(withoutOurEntries(fixed), `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}]}`);
    const first = `{"cniVersion":"1.0.0","name":"n","plugins":[${JSON.stringify(entry)},{"type":"ptp"}]}`;
    assert.deepEqual(JSON.parse(withOurEntry(list(first), entry)).plugins, [{ type: "ptp" }, entry]);
  });

  await t.step("wrapping a .conf keeps every member and hoists only cniVersion and name", () => {
    const conf =
      `{"type":"bridge","cniVersion":"0.3.1","mtu":1.0,"name":"br","2":"numeric key","ipam":{"type":"host-local"}}`;
    const wrapped = wrapConf(parseConfFile("/x/br.conf", enc.encode(conf)), entry);
    const doc = JSON.parse(wrapped);
    assert.equal(doc.cniVersion, "0.3.1");
    assert.equal(doc.name, "br");
    assert.deepEqual(doc.plugins[1], entry);
    assert.deepEqual(Object.keys(doc.plugins[0]).sort(), ["2", "ipam", "mtu", "type"]);
    assert.match(
      wrapped,
      /"type": "bridge",\n\s+"mtu": 1\.0,\n\s+"2": "numeric key"/,
      "order and number text kept",
    );
  });

  await t.step("files that cannot carry the plugin are refused with the reason", () => {
    const bad: [string, string, RegExp][] = [
      ["/d/a.conflist", `{"name":"n","plugins":[{"type":"ptp"}]}`, /no cniVersion/],
      ["/d/a.conflist", `{"cniVersion":"1.0.0","plugins":[{"type":"ptp"}]}`, /"name"/],
      ["/d/a.conflist", `{"cniVersion":"1.0.0","name":"n","plugins":[{"mtu":1}]}`, /plugins\[0\]/],
      ["/d/a.conflist", `{"cniVersion":"1.0.0","name":"n","type":"ptp"}`, /without a "plugins" list/],
      ["/d/a.conf", `\uFEFF{"cniVersion":"1.0.0","name":"n","type":"ptp"}`, /invalid JSON/],
    ];
    for (const [path, text, why] of bad) {
      assert.throws(() => parseConfFile(path, enc.encode(text)), (e) => {
        assert.ok(e instanceof CniConfigFileError);
        assert.equal(e.file, path);
        assert.match(e.message, why);
        return true;
      });
    }
    assert.throws(() => parseConfFile("/d/a.conf", new Uint8Array([0x7b, 0xff, 0x7d])), /UTF-8/);
  });

  await t.step("our entry's type cannot be overridden", () => {
    assert.throws(() => pluginEntry({ type: "bridge" }), /merbridge-cni/);
    assert.deepEqual(Object.keys(pluginEntry({ a: 1, type: "merbridge-cni" })), ["type", "a"]);
  });
});
