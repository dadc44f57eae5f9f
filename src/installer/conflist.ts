// Chaining the plugin into a CNI configuration file, as text: adding or replacing our entry in a
// .conflist, removing it again, and wrapping a lone .conf into a .conflist. Everything not ours
// is kept byte for byte (see json_text.ts), so removal is the exact inverse of addition.
import { isDeepStrictEqual } from "node:util";
import { extname } from "node:path";
import {
  arrayElements,
  documentSpan,
  type MemberSpan,
  objectMembers,
  prettyJson,
  type Span,
} from "../../cni/json_text.ts";
import { isSupportedCniVersion, PLUGIN_TYPE, SUPPORTED_CNI_VERSIONS } from "../../cni/spec.ts";
import { isRecord } from "../util/record.ts";

/** A CNI configuration file that cannot be used as it is; the file is left untouched. */
export class CniConfigFileError extends Error {
  override readonly name = "CniConfigFileError";
  constructor(readonly file: string, readonly problem: string) {
    super(`CNI configuration ${file}: ${problem}`);
  }
}

/** The extensions libcni reads from the configuration directory. */
export const CONF_EXTENSIONS = [".conf", ".conflist", ".json"] as const;

export interface ConfFile {
  path: string;
  text: string;
  /** "conflist" when the file holds a plugins list, "conf" for a single plugin's configuration. */
  kind: "conflist" | "conf";
  obj: Record<string, unknown>;
}

export function isOurEntry(v: unknown): boolean {
  return isRecord(v) && v.type === PLUGIN_TYPE;
}

/** Our plugin entry: `type` first, then the caller's fields. */
export function pluginEntry(pluginConf: Record<string, unknown>): Record<string, unknown> {
  if (pluginConf.type !== undefined && pluginConf.type !== PLUGIN_TYPE) {
    throw new TypeError(
      `the plugin configuration's type must be "${PLUGIN_TYPE}", not ${JSON.stringify(pluginConf.type)}`,
    );
  }
  const { type: _type, ...rest } = pluginConf;
  const entry = { type: PLUGIN_TYPE, ...rest };
  // Entries are compared after a JSON round trip; values JSON cannot carry would never compare equal.
  return JSON.parse(JSON.stringify(entry));
}

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function checkChainVersion(path: string, v: unknown, where: string): void {
  if (v === undefined) {
    throw new CniConfigFileError(
      path,
      `${where} has no cniVersion (0.1.0 implied), which cannot chain plugins`,
    );
  }
  if (!isSupportedCniVersion(v)) {
    throw new CniConfigFileError(
      path,
      `${where} has cniVersion ${JSON.stringify(v)}; ${PLUGIN_TYPE} supports ${
        SUPPORTED_CNI_VERSIONS.join(", ")
      }`,
    );
  }
}

/** Decodes and checks a configuration file; throws CniConfigFileError naming the problem. */
export function parseConfFile(path: string, bytes: Uint8Array): ConfFile {
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    throw new CniConfigFileError(path, "not valid UTF-8");
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new CniConfigFileError(path, `invalid JSON: ${(err as Error).message}`);
  }
  if (!isRecord(obj)) throw new CniConfigFileError(path, "the top-level JSON value is not an object");
  if (obj.plugins !== undefined) {
    if (!Array.isArray(obj.plugins)) throw new CniConfigFileError(path, `"plugins" is not an array`);
    if (obj.plugins.length === 0) throw new CniConfigFileError(path, `"plugins" is empty`);
    obj.plugins.forEach((p, i) => {
      if (!isRecord(p) || typeof p.type !== "string") {
        throw new CniConfigFileError(path, `plugins[${i}] is not an object with a string "type"`);
      }
    });
    if (typeof obj.name !== "string") throw new CniConfigFileError(path, `the list has no string "name"`);
    checkChainVersion(path, obj.cniVersion, "the list");
    return { path, text, kind: "conflist", obj };
  }
  if (extname(path) === ".conflist") {
    throw new CniConfigFileError(path, `a .conflist without a "plugins" list`);
  }
  if (typeof obj.type !== "string") throw new CniConfigFileError(path, `no string "type"`);
  if (typeof obj.name !== "string") throw new CniConfigFileError(path, `no string "name"`);
  checkChainVersion(path, obj.cniVersion, "the configuration");
  return { path, text, kind: "conf", obj };
}

interface PluginsLayout {
  array: Span;
  elements: Span[];
  member: MemberSpan;
}

function pluginsLayout(text: string): PluginsLayout {
  // JSON.parse keeps the last of duplicate keys, so the runtime sees the last "plugins".
  const member = objectMembers(text, documentSpan(text)).findLast((m) => m.key === "plugins");
  if (!member) throw new Error("no plugins list");
  return { array: member.value, elements: arrayElements(text, member.value), member };
}

function lineIndent(text: string, pos: number): { indent: string; ownLine: boolean } {
  const lineStart = text.lastIndexOf("\n", pos - 1) + 1;
  const before = text.slice(lineStart, pos);
  const ownLine = /^[ \t]*$/.test(before);
  return { indent: ownLine ? before : (/^[ \t]*/.exec(before)?.[0] ?? ""), ownLine };
}

/** One level of indentation as the file uses it: that of its top-level members. */
function indentUnit(text: string, member: MemberSpan): string {
  const { indent } = lineIndent(text, member.span.start);
  return indent === "" ? "  " : indent;
}

/** Renders an entry to sit at an element position whose preceding separator is `sep`. */
function renderEntry(entry: Record<string, unknown>, sep: string, unit: string): string {
  const compact = JSON.stringify(entry);
  if (!sep.includes("\n")) return compact;
  return prettyJson(compact, unit, sep.slice(sep.lastIndexOf("\n") + 1));
}

function removeElement(text: string, layout: PluginsLayout, i: number): string {
  const els = layout.elements;
  const el = els[i]!;
  if (i > 0) return text.slice(0, els[i - 1]!.end) + text.slice(el.end);
  const next = els[1];
  if (next) return text.slice(0, el.start) + text.slice(next.start);
  return text.slice(0, layout.array.start + 1) + text.slice(layout.array.end - 1);
}

/** Removes every entry of ours from a conflist's text; other bytes are kept. */
export function withoutOurEntries(text: string): string {
  for (;;) {
    const layout = pluginsLayout(text);
    const idx = layout.elements.findLastIndex((el) => isOurEntry(JSON.parse(text.slice(el.start, el.end))));
    if (idx < 0) return text;
    text = removeElement(text, layout, idx);
  }
}

/**
 * The conflist's text with exactly one entry of ours equal to `entry`: appended after the last
 * plugin when absent, replaced in place when different (moved to the end if it was first). Returns the same text when nothing
 * needs to change, which is what keeps a watcher from reacting to its own writes.
 */
export function withOurEntry(file: ConfFile, entry: Record<string, unknown>): string {
  let text = file.text;
  let layout = pluginsLayout(text);
  const parsed = () => layout.elements.map((el) => JSON.parse(text.slice(el.start, el.end)) as unknown);
  let ours = parsed().flatMap((p, i) => isOurEntry(p) ? [i] : []);
  const first = ours[0] === 0 && layout.elements.length > 1;
  if (ours.length === 1 && !first && isDeepStrictEqual(parsed()[ours[0]!], entry)) return text;

  // Duplicates go first (from the back, so earlier spans stay valid), keeping the first one.
  while (ours.length > 1) {
    text = removeElement(text, layout, ours[ours.length - 1]!);
    layout = pluginsLayout(text);
    ours = parsed().flatMap((p, i) => isOurEntry(p) ? [i] : []);
  }
  // First in the chain we would run before anything gave the pod a network: move to the end.
  if (ours.length === 1 && ours[0] === 0 && layout.elements.length > 1) {
    text = removeElement(text, layout, 0);
    layout = pluginsLayout(text);
    ours = [];
  }
  const unit = indentUnit(text, layout.member);
  const els = layout.elements;
  if (ours.length === 1) {
    const el = els[ours[0]!]!;
    if (isDeepStrictEqual(JSON.parse(text.slice(el.start, el.end)), entry)) return text;
    const { indent, ownLine } = lineIndent(text, el.start);
    const rendered = renderEntry(entry, ownLine ? "\n" + indent : "", unit);
    return text.slice(0, el.start) + rendered + text.slice(el.end);
  }
  const last = els[els.length - 1]!;
  // Reuse the separator that precedes the last element, so the new one lines up with it.
  const sepStart = els.length >= 2 ? text.indexOf(",", els[els.length - 2]!.end) + 1 : layout.array.start + 1;
  const sep = text.slice(sepStart, last.start);
  return text.slice(0, last.end) + "," + sep + renderEntry(entry, sep, unit) + text.slice(last.end);
}

/**
 * A lone configuration turned into a list: {cniVersion, name, plugins: [the original minus
 * cniVersion and name, our entry]}. Every other member of the original is copied verbatim.
 */
export function wrapConf(file: ConfFile, entry: Record<string, unknown>): string {
  const text = file.text;
  const members = objectMembers(text, documentSpan(text));
  const raw = (key: string) => {
    const m = members.findLast((x) => x.key === key)!;
    return text.slice(m.value.start, m.value.end);
  };
  const rest = members.filter((m) => m.key !== "cniVersion" && m.key !== "name")
    .map((m) => text.slice(m.span.start, m.span.end));
  const doc = `{"cniVersion":${raw("cniVersion")},"name":${raw("name")},"plugins":[{${rest.join(",")}},${
    JSON.stringify(entry)
  }]}`;
  const unit = members[0] ? indentUnit(text, members[0]) : "  ";
  return prettyJson(doc, unit) + "\n";
}
