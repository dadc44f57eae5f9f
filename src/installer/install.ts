// Installs the plugin on the node: puts the executable into the runtime's CNI bin directory and
// chains its entry into the configuration the runtime uses, remembering what it changed so that
// uninstall puts back exactly what was there. A watcher repairs the chain when the node's
// network plugin rewrites its configuration.
import { basename, dirname, extname, isAbsolute, join } from "node:path";
import { getLogger } from "../log/logger.ts";
import {
  CniConfigFileError,
  CONF_EXTENSIONS,
  type ConfFile,
  isOurEntry,
  parseConfFile,
  pluginEntry,
  withOurEntry,
  withoutOurEntries,
  wrapConf,
} from "./conflist.ts";
import {
  exists,
  fileMode,
  isTempPath,
  readIfExists,
  removeIfExists,
  sameBytes,
  sameFileContent,
  sha256,
  syncDir,
  tempPath,
  writeAtomic,
} from "./files.ts";
import { PLUGIN_TYPE } from "../../cni/spec.ts";
import { crashPoint } from "../util/crash_point.ts";
import { sleep } from "../util/sleep.ts";

const enc = new TextEncoder();

export { CniConfigFileError };

export type PluginSource =
  | { kind: "binary"; path: string }
  | {
    kind: "launcher";
    denoPath: string;
    mainPath: string;
    /** The deno.json whose imports the entry point needs; default: deno.json beside mainPath. */
    configPath?: string;
  };

export interface InstallOptions {
  binDir: string;
  confDir: string;
  stateDir: string;
  /** Our entry's fields (socketPath, timeoutMs, logFile, logLevel, failurePolicy...). */
  pluginConf: Record<string, unknown>;
  source: PluginSource;
}

export type UninstallOptions = Pick<InstallOptions, "binDir" | "confDir" | "stateDir">;

export type InstallResult =
  /** The runtime's network plugin has not written a configuration yet: retry later. */
  | { kind: "no-config"; confDir: string }
  | { kind: "installed"; confFile: string; changed: boolean; changes: string[] };

export interface UninstallResult {
  changes: string[];
  /** Things deliberately left in place, with the reason. */
  warnings: string[];
}

/** Installer counters for metrics. */
export interface InstallerStats {
  /** Installs that changed the node (a first install, or a new configuration). */
  installs: number;
  /** Re-installs after someone else rewrote the configuration. */
  repairs: number;
  /** Failed attempts. */
  errors: number;
  /** Times the configuration was examined. */
  checks: number;
}

/** The installer itself failed (I/O, a corrupt state file, an unusable source). */
export class CniInstallError extends Error {
  override readonly name = "CniInstallError";
}

const log = getLogger("cni", "install");

const STATE_FILE = "cni-install.json";
/** Credentials the plugin reads pods with when the daemon cannot be asked (written by the daemon). */
export const PLUGIN_KUBECONFIG_FILE = "cni-kubeconfig";
const ORIGINAL_PREFIX = "original-";

type ConfRecord =
  | {
    /** Our entry was added to an existing list. */
    mode: "appended";
    file: string;
    /** Where the file's bytes without our entry are saved; null when they were never seen. */
    original: string | null;
    writtenSha256: string;
  }
  | {
    /** A lone .conf was replaced by a generated .conflist. */
    mode: "wrapped";
    confFile: string;
    conflistFile: string;
    confMode: number;
    /** Where the .conf's exact bytes are saved. */
    original: string;
    writtenSha256: string;
  };

interface InstallState {
  version: 1;
  createdStateDir: boolean;
  binary: string | null;
  conf: ConfRecord | null;
}

// ---------------------------------------------------------------------------------------------
// State

function statePath(stateDir: string): string {
  return join(stateDir, STATE_FILE);
}

async function readState(stateDir: string): Promise<InstallState | null> {
  const path = statePath(stateDir);
  const bytes = await readIfExists(path);
  if (bytes === null) return null;
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new CniInstallError(`install state ${path} is not valid JSON: ${(err as Error).message}`);
  }
  const s = v as Partial<InstallState>;
  if (
    typeof s !== "object" || s === null || s.version !== 1 || typeof s.createdStateDir !== "boolean" ||
    !(s.binary === null || typeof s.binary === "string") || !(s.conf === null || typeof s.conf === "object")
  ) {
    throw new CniInstallError(`install state ${path} is not a state file this version understands`);
  }
  const c = s.conf as Record<string, unknown> | null;
  if (
    c !== null &&
    !(c.mode === "appended" && typeof c.file === "string" && typeof c.writtenSha256 === "string") &&
    !(c.mode === "wrapped" && typeof c.confFile === "string" && typeof c.conflistFile === "string" &&
      typeof c.original === "string" && typeof c.confMode === "number" && typeof c.writtenSha256 === "string")
  ) {
    throw new CniInstallError(`install state ${path} has an invalid "conf" record`);
  }
  return s as InstallState;
}

async function ensureStateDir(stateDir: string): Promise<boolean> {
  if (await exists(stateDir)) return false;
  await Deno.mkdir(stateDir, { recursive: true, mode: 0o700 });
  return true;
}

async function writeState(stateDir: string, state: InstallState): Promise<void> {
  await writeAtomic(statePath(stateDir), enc.encode(JSON.stringify(state, null, 2) + "\n"), 0o600);
}

function originalPath(stateDir: string, file: string): string {
  return join(stateDir, ORIGINAL_PREFIX + basename(file));
}

// ---------------------------------------------------------------------------------------------
// Plugin executable

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The launcher that runs the entry point from source under the plugin's name. */
export function launcherScript(
  source: Extract<PluginSource, { kind: "launcher" }>,
  configPath?: string,
): string {
  const config = configPath ?? source.configPath;
  const args = [
    "run",
    "-A",
    "--quiet",
    ...(config ? ["--config", shellQuote(config)] : []),
    shellQuote(source.mainPath),
  ];
  return [
    "#!/bin/bash",
    "# Installed by merbridge: runs the agent from source as the CNI plugin. exec -a keeps the",
    "# plugin's name as argv[0], which the agent uses to pick plugin mode.",
    `exec -a ${PLUGIN_TYPE} ${shellQuote(source.denoPath)} ${args.join(" ")} "$@"`,
    "",
  ].join("\n");
}

interface BinaryPlan {
  dest: string;
  upToDate: boolean;
  write(): Promise<void>;
}

async function planBinary(binDir: string, source: PluginSource): Promise<BinaryPlan> {
  const dest = join(binDir, PLUGIN_TYPE);
  try {
    if (!(await Deno.stat(binDir)).isDirectory) {
      throw new CniInstallError(`CNI bin dir ${binDir} is not a directory`);
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new CniInstallError(`CNI bin dir ${binDir} does not exist`);
    }
    throw err;
  }
  const current = await Deno.stat(dest).catch((err) => {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  });
  const modeOk = current !== null && current.isFile && (current.mode ?? 0) % 0o10000 === 0o755;
  if (source.kind === "binary") {
    if (!isAbsolute(source.path)) {
      throw new CniInstallError(`plugin binary path must be absolute: ${source.path}`);
    }
    if (!(await exists(source.path))) {
      throw new CniInstallError(`plugin binary ${source.path} does not exist`);
    }
    return {
      dest,
      upToDate: modeOk && await sameFileContent(source.path, dest),
      async write() {
        const tmp = tempPath(dest);
        try {
          await Deno.copyFile(source.path, tmp);
          await Deno.chmod(tmp, 0o755);
          await Deno.rename(tmp, dest);
        } catch (err) {
          await Deno.remove(tmp).catch(() => {});
          throw err;
        }
      },
    };
  }
  for (const [what, p] of [["deno", source.denoPath], ["entry point", source.mainPath]] as const) {
    // The runtime starts the plugin from an unknown working directory.
    if (!isAbsolute(p)) throw new CniInstallError(`launcher ${what} path must be absolute: ${p}`);
    if (!(await exists(p))) throw new CniInstallError(`launcher ${what} ${p} does not exist`);
  }
  let configPath = source.configPath;
  if (configPath === undefined) {
    const beside = join(dirname(source.mainPath), "deno.json");
    if (await exists(beside)) configPath = beside;
  }
  const script = enc.encode(launcherScript(source, configPath));
  const cur = current?.isFile ? await Deno.readFile(dest) : null;
  return {
    dest,
    upToDate: modeOk && sameBytes(cur, script),
    write: () => writeAtomic(dest, script, 0o755),
  };
}

// ---------------------------------------------------------------------------------------------
// Configuration

/** The configuration files libcni would read, in its order (by name). */
async function confFiles(confDir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(confDir)) {
      if (e.isDirectory) continue;
      if ((CONF_EXTENSIONS as readonly string[]).includes(extname(e.name))) names.push(e.name);
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  names.sort((a, b) => a < b ? -1 : a > b ? 1 : 0);
  return names.map((n) => join(confDir, n));
}

/** The file the runtime uses: the first by name among *.conf, *.conflist, *.json. */
export async function activeConfFile(confDir: string): Promise<string | null> {
  return (await confFiles(confDir))[0] ?? null;
}

async function readConf(path: string): Promise<{ file: ConfFile; bytes: Uint8Array; stat: Deno.FileInfo }> {
  const [bytes, stat] = await Promise.all([Deno.readFile(path), Deno.stat(path)]);
  return { file: parseConfFile(path, bytes), bytes, stat };
}

/** Takes our entry out of a configuration we changed, restoring the saved bytes when possible. */
async function revertConf(rec: ConfRecord, out: UninstallResult): Promise<void> {
  if (rec.mode === "appended") {
    const cur = await readIfExists(rec.file);
    if (cur === null) return;
    const original = rec.original === null ? null : await readIfExists(rec.original);
    const stat = await Deno.stat(rec.file);
    if (original !== null && await sha256(cur) === rec.writtenSha256) {
      await writeAtomic(rec.file, original, fileMode(stat), stat);
      out.changes.push(`restored ${rec.file}`);
      return;
    }
    await removeEntriesFrom(rec.file, cur, stat, out);
    return;
  }
  const cur = await readIfExists(rec.conflistFile);
  const original = await readIfExists(rec.original);
  if (cur !== null && await sha256(cur) !== rec.writtenSha256) {
    // Someone else changed the generated list (another plugin chained itself in, say): it now
    // matters to them, so it stays a list and only our entry leaves.
    await removeEntriesFrom(rec.conflistFile, cur, await Deno.stat(rec.conflistFile), out);
    out.warnings.push(
      `${rec.conflistFile} was changed by someone else; kept it and did not restore ${rec.confFile}`,
    );
    return;
  }
  // The list goes before the .conf comes back: with both, the runtime would read the .conf first
  // while believing the chain still in place. A crash in between leaves neither; the runtime waits,
  // and the next install or uninstall puts the .conf back from the saved bytes.
  if (cur !== null) {
    await Deno.remove(rec.conflistFile);
    await syncDir(dirname(rec.conflistFile));
    out.changes.push(`removed ${rec.conflistFile}`);
  }
  crashPoint("cni-uninstall:list-removed");
  if (original !== null && !(await exists(rec.confFile))) {
    await writeAtomic(rec.confFile, original, rec.confMode);
    out.changes.push(`restored ${rec.confFile}`);
  }
}

async function removeEntriesFrom(path: string, bytes: Uint8Array, stat: Deno.FileInfo, out: UninstallResult) {
  let file: ConfFile;
  try {
    file = parseConfFile(path, bytes);
  } catch (err) {
    out.warnings.push(`left ${path} untouched: ${(err as Error).message}`);
    return;
  }
  if (file.kind !== "conflist") return;
  const text = withoutOurEntries(file.text);
  if (text === file.text) return;
  await writeAtomic(path, enc.encode(text), fileMode(stat), stat);
  out.changes.push(`removed ${PLUGIN_TYPE} from ${path}`);
}

// ---------------------------------------------------------------------------------------------
// Install / uninstall

/**
 * One installer per owner (the daemon, a CLI command): it owns the queue that keeps its installs,
 * uninstalls and watcher passes one at a time (they share the state file) and its counters.
 */
export class CniInstaller {
  readonly stats: InstallerStats = { installs: 0, repairs: 0, errors: 0, checks: 0 };
  #queue: Promise<unknown> = Promise.resolve();

  serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /** See installCni. */
  install(opts: InstallOptions): Promise<InstallResult> {
    return installWith(this, opts);
  }

  /** See uninstallCni. */
  uninstall(opts: UninstallOptions): Promise<UninstallResult> {
    return uninstallWith(this, opts);
  }

  /** See watchCniConfig. */
  watch(opts: WatchOptions, signal: AbortSignal): Promise<void> {
    return watchWith(this, opts, signal);
  }
}

/** Half-written files of ours from an installer that was killed mid-write. */
async function removeOurTempFiles(dir: string): Promise<void> {
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && isTempPath(e.name)) await removeIfExists(join(dir, e.name));
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

async function installOnce(
  opts: InstallOptions,
  stats: InstallerStats,
  changes: string[] = [],
  depth = 0,
): Promise<InstallResult> {
  stats.checks++;
  if (depth === 0) {
    await removeOurTempFiles(opts.confDir);
    await removeOurTempFiles(opts.binDir);
  }
  let entry: Record<string, unknown>;
  try {
    entry = pluginEntry(opts.pluginConf);
  } catch (err) {
    throw new CniInstallError((err as Error).message);
  }
  let active = await activeConfFile(opts.confDir);
  const prior = await readState(opts.stateDir);
  const rec = prior?.conf ?? null;
  if (active === null && rec?.mode === "wrapped" && depth === 0) {
    // Killed between taking the .conf away and putting the list in its place (install), or between
    // removing the list and putting the .conf back (uninstall): the saved bytes bring the .conf back.
    const original = await readIfExists(rec.original);
    if (original !== null) {
      await writeAtomic(rec.confFile, original, rec.confMode);
      changes.push(`restored ${rec.confFile} left out by an interrupted change`);
      active = rec.confFile;
    }
  }
  if (active === null) return { kind: "no-config", confDir: opts.confDir };

  // Everything is read and checked before the first write, so a bad file changes nothing.
  const { file, bytes, stat } = await readConf(active);
  const binary = await planBinary(opts.binDir, opts.source);

  // Our entry lives in one place only: when the runtime's file changed (a new file sorts first),
  // the previous change is undone before the new one is made.
  if (
    rec && depth === 0 &&
    !(rec.mode === "appended" && rec.file === active) &&
    !(rec.mode === "wrapped" && (rec.conflistFile === active || rec.confFile === active))
  ) {
    const out: UninstallResult = { changes, warnings: [] };
    await revertConf(rec, out);
    for (const w of out.warnings) log.warn(w);
    await removeIfExists(rec.original);
    await writeState(opts.stateDir, { ...prior!, conf: null });
    return await installOnce(opts, stats, changes, depth + 1);
  }

  const savedOriginal = originalPath(opts.stateDir, active);
  let next: ConfRecord;
  let original: Uint8Array | null = null;
  let writeConf: () => Promise<void>;

  if (file.kind === "conflist") {
    const text = withOurEntry(file, entry);
    const newBytes = enc.encode(text);
    const writtenSha256 = await sha256(newBytes);
    if (rec?.mode === "wrapped" && rec.conflistFile === active && await sha256(bytes) === rec.writtenSha256) {
      // Still the list we generated: uninstall can still turn it back into the .conf.
      next = { ...rec, writtenSha256 };
    } else {
      // A list of someone else's, or our generated one after someone else rewrote it.
      next = { mode: "appended", file: active, original: savedOriginal, writtenSha256 };
      original = enc.encode(withoutOurEntries(file.text));
    }
    writeConf = async () => {
      if (text === file.text) return;
      await writeAtomic(active, newBytes, fileMode(stat), stat);
      changes.push(`added ${PLUGIN_TYPE} to ${active}`);
    };
  } else {
    const conflistFile = join(dirname(active), `${basename(active, extname(active))}.conflist`);
    const existing = await readIfExists(conflistFile);
    if (existing !== null) {
      const ours = rec?.mode === "wrapped" && rec.conflistFile === conflistFile;
      if (!ours && !conflistHasOurEntry(conflistFile, existing)) {
        throw new CniConfigFileError(
          active,
          `cannot wrap it into ${conflistFile}: that file exists and was not written by merbridge`,
        );
      }
    }
    const newBytes = enc.encode(wrapConf(file, entry));
    next = {
      mode: "wrapped",
      confFile: active,
      conflistFile,
      confMode: fileMode(stat),
      original: savedOriginal,
      writtenSha256: await sha256(newBytes),
    };
    original = bytes;
    const conf = active;
    writeConf = async () => {
      // The runtime reads the first file by name and .conf sorts before .conflist: both at once would
      // make it use the .conf, without us. So the list is staged under a hidden name, the .conf is moved
      // aside, and only then does the list take its name; a crash in between leaves neither, which the
      // next install repairs from the saved bytes, and the runtime waits meanwhile.
      const staged = tempPath(conflistFile);
      const aside = tempPath(conf);
      await writeAtomic(staged, newBytes, fileMode(stat), stat);
      await Deno.rename(conf, aside);
      crashPoint("cni-install:conf-aside");
      await Deno.rename(staged, conflistFile);
      await syncDir(dirname(conflistFile));
      await Deno.remove(aside);
      changes.push(`replaced ${conf} with ${conflistFile}`);
    };
  }

  const createdStateDir = await ensureStateDir(opts.stateDir);
  if (original !== null && !sameBytes(await readIfExists(savedOriginal), original)) {
    await writeAtomic(savedOriginal, original, 0o600);
  }
  // The executable goes first: a configuration naming a plugin that is not there fails every pod.
  if (!binary.upToDate) {
    await binary.write();
    changes.push(`installed ${binary.dest}`);
  }
  const state: InstallState = {
    version: 1,
    createdStateDir: prior ? prior.createdStateDir : createdStateDir,
    binary: binary.dest,
    conf: next,
  };
  // The record is written before the configuration, so a crash in between still uninstalls.
  if (JSON.stringify(prior) !== JSON.stringify(state)) await writeState(opts.stateDir, state);
  crashPoint("cni-install:state-written");
  await writeConf();
  // A saved copy the new record no longer points at (the list was taken over) is dropped.
  if (rec?.original && rec.original !== next.original) await removeIfExists(rec.original);
  const confFile = next.mode === "wrapped" ? next.conflistFile : next.file;
  return { kind: "installed", confFile, changed: changes.length > 0, changes };
}

function conflistHasOurEntry(path: string, bytes: Uint8Array): boolean {
  try {
    const f = parseConfFile(path, bytes);
    return f.kind === "conflist" && (f.obj.plugins as unknown[]).some(isOurEntry);
  } catch {
    return false;
  }
}

/**
 * Installs the plugin executable and chains our entry into the runtime's configuration.
 * Idempotent: when everything is already in place nothing is written. A malformed
 * configuration throws CniConfigFileError before anything is changed.
 */
function installWith(inst: CniInstaller, opts: InstallOptions): Promise<InstallResult> {
  return inst.serialized(async () => {
    try {
      const res = await installOnce(opts, inst.stats);
      if (res.kind === "installed" && res.changed) {
        inst.stats.installs++;
        log.info("CNI plugin installed: {changes}", { changes: res.changes.join("; ") });
      }
      return res;
    } catch (err) {
      inst.stats.errors++;
      throw err;
    }
  });
}

/**
 * Removes what install added: our entry (restoring the file's original bytes when nobody else
 * changed it since), the generated .conflist (restoring the .conf), the executable and the
 * install state. Without a state file it still removes our entries and the executable.
 */
function uninstallWith(inst: CniInstaller, opts: UninstallOptions): Promise<UninstallResult> {
  return inst.serialized(async () => {
    const out: UninstallResult = { changes: [], warnings: [] };
    const state = await readState(opts.stateDir);
    if (state?.conf) {
      await revertConf(state.conf, out);
      crashPoint("cni-uninstall:conf-reverted");
    } else if (state === null) {
      for (const path of await confFiles(opts.confDir)) {
        const bytes = await readIfExists(path);
        if (bytes !== null) await removeEntriesFrom(path, bytes, await Deno.stat(path), out);
      }
    }
    const bin = state?.binary ?? join(opts.binDir, PLUGIN_TYPE);
    if (await exists(bin)) {
      await Deno.remove(bin);
      out.changes.push(`removed ${bin}`);
    }
    const creds = join(opts.stateDir, PLUGIN_KUBECONFIG_FILE);
    if (await exists(creds)) {
      await Deno.remove(creds);
      out.changes.push(`removed ${creds}`);
    }
    if (state) {
      await removeIfExists(state.conf?.original ?? null);
      await removeIfExists(statePath(opts.stateDir));
      if (state.createdStateDir) {
        await Deno.remove(opts.stateDir).catch(() => {
          out.warnings.push(`kept ${opts.stateDir}: it is not empty`);
        });
      }
    }
    for (const w of out.warnings) log.warn(w);
    if (out.changes.length > 0) {
      log.info("CNI plugin uninstalled: {changes}", { changes: out.changes.join("; ") });
    }
    return out;
  });
}

// ---------------------------------------------------------------------------------------------
// Watcher

export interface WatchOptions extends InstallOptions {
  /** Quiet time after the last change before re-checking; default 300 ms. */
  debounceMs?: number;
  /** Wait before retrying a failed install or looking again for a missing directory; default 5 s. */
  retryMs?: number;
}

/**
 * Keeps the plugin installed until `signal` aborts: installs now, then re-installs whenever the
 * configuration directory changes. Our own writes trigger one more check, which finds nothing
 * to do (installs are idempotent), so the watcher never feeds itself.
 */
async function watchWith(inst: CniInstaller, opts: WatchOptions, signal: AbortSignal): Promise<void> {
  const debounceMs = opts.debounceMs ?? 300;
  const retryMs = opts.retryMs ?? 5_000;
  let installedOnce = false;

  const attempt = async (): Promise<boolean> => {
    try {
      const res = await inst.serialized(() => installOnce(opts, inst.stats));
      if (res.kind === "no-config") {
        log.info("no CNI configuration in {dir} yet; waiting for the network plugin", { dir: opts.confDir });
        return true;
      }
      if (res.changed) {
        if (installedOnce) {
          inst.stats.repairs++;
          log.info("CNI configuration repaired: {changes}", { changes: res.changes.join("; ") });
        } else {
          inst.stats.installs++;
          log.info("CNI plugin installed: {changes}", { changes: res.changes.join("; ") });
        }
      }
      installedOnce = true;
      return true;
    } catch (err) {
      inst.stats.errors++;
      log.error("CNI install failed, will retry: {error}", { error: (err as Error).message });
      return false;
    }
  };

  while (!signal.aborted) {
    if (!(await exists(opts.confDir))) {
      await sleep(retryMs, signal);
      continue;
    }
    let watcher: Deno.FsWatcher;
    try {
      watcher = Deno.watchFs(opts.confDir, { recursive: false });
    } catch (err) {
      log.warn("cannot watch {dir}: {error}", { dir: opts.confDir, error: (err as Error).message });
      await sleep(retryMs, signal);
      continue;
    }
    const stop = () => watcher.close();
    signal.addEventListener("abort", stop, { once: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    let running: Promise<void> = Promise.resolve();
    const schedule = (ms: number) => {
      clearTimeout(timer);
      timer = setTimeout(run, ms);
    };
    const run = () => {
      running = running.then(async () => {
        if (signal.aborted) return;
        if (!(await attempt()) && !signal.aborted) schedule(retryMs);
      });
    };
    // The watcher exists before the first check, so no change can slip between the two.
    run();
    try {
      for await (const ev of watcher) {
        // Reads (ours included) show up as access events; only changes matter.
        if (ev.kind === "access") continue;
        if (ev.paths.every(isTempPath)) continue;
        schedule(debounceMs);
      }
    } catch (err) {
      if (!signal.aborted) {
        log.warn("watching {dir} failed: {error}", { dir: opts.confDir, error: (err as Error).message });
      }
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", stop);
      try {
        watcher.close();
      } catch {
        // Closed by abort.
      }
      await running;
    }
    if (!signal.aborted) await sleep(retryMs, signal);
  }
}

// For callers that need no installer of their own (CLI commands, the library surface, tests).
const shared = new CniInstaller();

/** The shared installer's counters. */
export const cniInstallStats: InstallerStats = shared.stats;

/**
 * Installs the plugin executable and chains our entry into the runtime's configuration.
 * Idempotent: when everything is already in place nothing is written. A malformed
 * configuration throws CniConfigFileError before anything is changed.
 */
export function installCni(opts: InstallOptions): Promise<InstallResult> {
  return shared.install(opts);
}

/**
 * Removes what install added: our entry (restoring the file's original bytes when nobody else
 * changed it since), the generated .conflist (restoring the .conf), the executable and the
 * install state. Without a state file it still removes our entries and the executable.
 */
export function uninstallCni(opts: UninstallOptions): Promise<UninstallResult> {
  return shared.uninstall(opts);
}

/**
 * Keeps the plugin installed until `signal` aborts: installs now, then re-installs whenever the
 * configuration directory changes. Our own writes trigger one more check, which finds nothing
 * to do (installs are idempotent), so the watcher never feeds itself.
 */
export function watchCniConfig(opts: WatchOptions, signal: AbortSignal): Promise<void> {
  return shared.watch(opts, signal);
}
