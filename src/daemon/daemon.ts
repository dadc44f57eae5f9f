// The node agent: loads and attaches the datapath, keeps the pod maps in step with the pod source,
// and in CNI mode serves the plugin, owns per-pod attachments and keeps itself chained in the CNI
// config. SIGTERM leaves the pinned datapath running for the next daemon unless told to uninstall.
import { CniErrorCode } from "../../cni/spec.ts";
import { CniInstaller, PLUGIN_KUBECONFIG_FILE, type PluginSource } from "../installer/install.ts";
import { type DaemonSocketServer, serveDaemonSocket } from "./socket_server.ts";
import { assertCgroup2Dir, cgroup2Root } from "../cgroup/cgroup2.ts";
import { connAdmitLimit, Datapath, DEFAULT_TABLE_SIZE, uninstallDatapath } from "../datapath/datapath.ts";
import { getLogger } from "../log/logger.ts";
import { COUNTER_NAMES } from "../maps/layouts.ts";
import { meshParams } from "../mesh/modes.ts";
import { defaultPolicy } from "../mesh/policy.ts";
import type { MeshMode, PodPolicy } from "../mesh/types.ts";
import { Registry } from "../metrics/registry.ts";
import type { PodSource } from "../pods/source.ts";
import type { IngressHook, XdpModeOption } from "../xdp/attacher.ts";
import { Attachments } from "./attachments.ts";
import { attachmentsFile } from "./state_store.ts";
import { serveHttp } from "./http.ts";
import { PodTable } from "./pod_table.ts";
import { desiredNodeState, meshedPods, NodeStateWriter, wantedIps } from "./node_state.ts";
import { IdentityTracker, startIdentityTriggers } from "./identity.ts";
import { NetnsDiscovery } from "../netns/discover.ts";
import { pathExists } from "../util/fs.ts";
import { currentNetnsCookie } from "../netns/cookie.ts";
import { inClusterKubeconfigText, writeRootOnly } from "../kube/plugin_kubeconfig.ts";

const log = getLogger("daemon");

export interface DaemonConfig {
  mode: MeshMode;
  cniMode: boolean;
  hardwareChecksum: boolean;
  ingressHook: IngressHook;
  /** Default "auto". */
  xdpMode?: XdpModeOption;
  dnsCapture: boolean;
  /** The sk_msg fast path; off unless asked for (README: known limitations). */
  sockmap?: boolean;
  /** Capacity of the connection tables; default DEFAULT_TABLE_SIZE. */
  connTableSize?: number;
  /** Capacity of the inbound handshake LRU; default DEFAULT_TABLE_SIZE. */
  synTableSize?: number;
  cgroupPath?: string;
  pinPath: string;
  nodeName: string;
  metricsAddr: string;
  runDir: string;
  stateDir: string;
  cniBinDir: string;
  cniConfigDir: string;
  uninstallOnExit: boolean;
  /** Where runtimes keep pod network namespaces (for finding running pods without a state file). */
  netnsDirs: string[];
  /** The plugin as installed into the CNI bin dir. */
  pluginSource: PluginSource;
  logLevel: string;
  /**
   * Where the pods come from, for the plugin to judge a pod itself when the daemon cannot be asked:
   * a pods file, a kubeconfig (absolute paths), or neither for the in-cluster service account.
   */
  podSourceRef?: { podsFile?: string; kubeconfig?: string; context?: string; serviceAccountDir?: string };
}

export function socketPath(runDir: string): string {
  return `${runDir}/cni.sock`;
}

export { attachmentsFile };

export class Daemon {
  readonly registry = new Registry();
  /** Owns the install queue and counters of this daemon's CNI configuration changes. */
  readonly #installer = new CniInstaller();
  readonly table: PodTable;
  #dp?: Datapath;
  #attachments?: Attachments;
  #server?: DaemonSocketServer;
  #http?: Deno.HttpServer;
  #abort = new AbortController();
  #sweep?: ReturnType<typeof setInterval>;
  #repairTimer?: ReturnType<typeof setTimeout>;
  /** Meshed pods found running that could not be attached, with the reason: /readyz reports them. */
  #unattached = new Map<string, string>();
  /** What was wrong with the attachment state file at start, for /healthz. */
  #stateProblem?: string;
  #ready = false;
  #syncError?: string;
  #watchDone?: Promise<void>;
  #identity?: IdentityTracker;
  #identityDone?: Promise<void>;
  /** The one writer of the pod-keyed maps. */
  #writer?: NodeStateWriter;
  #fallbackPolicy: PodPolicy;
  #identityRuns = 0;
  readonly #m;

  private constructor(readonly cfg: DaemonConfig, readonly source: PodSource) {
    this.table = new PodTable(cfg.mode);
    this.#fallbackPolicy = defaultPolicy(cfg.mode);
    const r = this.registry;
    this.#m = {
      bpf: r.counter("merbridge_bpf_events_total", "What the BPF programs did, by event (summed over CPUs)"),
      pods: r.gauge("merbridge_pods", "Pods of this node by state"),
      mapEntries: r.gauge("merbridge_map_entries", "Entries in each datapath map"),
      mapCapacity: r.gauge("merbridge_map_capacity", "Capacity of each datapath map"),
      reconciles: r.counter("merbridge_reconciles_total", "Pod map reconciliations, by outcome"),
      cniRequests: r.counter("merbridge_cni_requests_total", "CNI plugin requests, by operation and result"),
      cniLatency: r.histogram("merbridge_cni_request_seconds", "CNI request handling time", [
        0.001,
        0.005,
        0.01,
        0.05,
        0.1,
        0.5,
        1,
        5,
      ]),
      source: r.counter("merbridge_pod_source_events_total", "Pod source lists, watch restarts and errors"),
      cniInstall: r.counter("merbridge_cni_config_events_total", "CNI config installs, repairs and errors"),
      ready: r.gauge("merbridge_ready", "1 once programs are attached and the first pod sync is done"),
      attachments: r.gauge("merbridge_cni_attachments", "Pods with a mark listener and ingress programs"),
      podConnections: r.counter(
        "merbridge_pod_connections_total",
        "Per meshed pod of this node: connections redirected, passed by its rules, inbound rewrites, original-destination misses",
      ),
      identified: r.gauge(
        "merbridge_pods_identified",
        "Meshed pods with an IP by how connect4 knows them: netns (found by the daemon), cni, none",
      ),
      netnsScan: r.gauge(
        "merbridge_netns_scan_seconds",
        "Time the last scan of the node's network namespaces took",
      ),
      namespaces: r.gauge(
        "merbridge_netns_namespaces",
        "Network namespaces of this node (the host's excluded)",
      ),
      repaired: r.counter(
        "merbridge_pods_repaired_total",
        "Meshed pods found running without their CNI attachment and attached in place",
      ),
      unattached: r.gauge(
        "merbridge_pods_unattached",
        "Meshed pods running on this node that could not be attached (see /readyz)",
      ),
    };
    // Present from the first scrape, so a rate over it works before the first repair.
    this.#m.repaired.inc({}, 0);
  }

  static async start(cfg: DaemonConfig, source: PodSource): Promise<Daemon> {
    const d = new Daemon(cfg, source);
    try {
      await d.#start();
    } catch (e) {
      await d.#teardown(false);
      throw e;
    }
    return d;
  }

  get ready(): boolean {
    return this.#ready;
  }

  get datapath(): Datapath {
    if (!this.#dp) throw new Error("datapath not loaded");
    return this.#dp;
  }

  async #start(): Promise<void> {
    const cfg = this.cfg;
    // Where a start's time goes, in the "ready" line: restarts are measured against a target.
    const phases: Record<string, number> = { process: Math.round(performance.now()) };
    let mark = performance.now();
    const phase = (name: string) => {
      const now = performance.now();
      phases[name] = Math.round(now - mark);
      mark = now;
    };
    const mesh = meshParams(cfg.mode);
    const cgroupPath = cfg.cgroupPath ?? cgroup2Root();
    assertCgroup2Dir(cgroupPath);
    log.info("starting: mode {mode}, cni-mode {cni}, cgroup {cgroup}, pins {pins}", {
      mode: cfg.mode,
      cni: cfg.cniMode,
      cgroup: cgroupPath,
      pins: cfg.pinPath,
    });
    const dp = this.#dp = Datapath.load({
      pinPath: cfg.pinPath,
      cgroupPath,
      dnsCapture: cfg.dnsCapture,
      replaceIncompatiblePins: true,
      connTableSize: cfg.connTableSize,
      synTableSize: cfg.synTableSize,
    });
    phase("load");
    dp.maps.setMeshConfig(mesh, {
      dnsCapture: cfg.dnsCapture,
      cniMode: cfg.cniMode,
      sockmap: cfg.sockmap ?? false,
      // The daemon runs in the node's own namespace (hostNetwork): nothing there is ever captured.
      hostNetns: currentNetnsCookie(),
      connAdmit: connAdmitLimit(cfg.connTableSize ?? DEFAULT_TABLE_SIZE),
    });
    dp.attach();
    phase("attach");
    this.#identity = new IdentityTracker(new NetnsDiscovery({ netnsDirs: cfg.netnsDirs }));
    this.#writer = new NodeStateWriter(dp.maps);

    if (cfg.metricsAddr) this.#http = serveHttp(cfg.metricsAddr, this.registry, this.#health());
    this.#collectors();

    if (cfg.cniMode) {
      this.#attachments = new Attachments({
        maps: dp.maps,
        programs: dp.ingressPrograms(),
        pinPath: cfg.pinPath,
        stateFile: attachmentsFile(cfg.stateDir),
        hook: cfg.ingressHook,
        xdpMode: cfg.xdpMode ?? "auto",
        hardwareChecksum: cfg.hardwareChecksum,
        lookupPod: (ns, name) => this.#lookupPod(ns, name),
      });
      const r = this.#attachments.restore();
      this.#stateProblem = r.problem;
      log.info("CNI attachments restored: {restored}, dropped: {dropped}", r);
      // Entries a crash lost come back now; nothing goes before the pods are known.
      this.reconcile();
      phase("restore");
    }

    await this.source.start((pods) => {
      const changed = this.table.set(pods);
      if (changed || this.table.snapshots === 1) this.reconcile();
      // A pod the daemon did not know at its ADD (or did not know was meshed) may be known now.
      if (changed) this.#scheduleRepair();
    });
    log.info("pods from {source}: {n} on this node", {
      source: this.source.description,
      n: this.table.entries().length,
    });
    phase("pods");

    if (!cfg.cniMode) {
      await this.#leaveCniMode();
      this.#serveLocalApi();
      // Removed attachments took their namespace cookies with them; the scan puts them back now.
      this.reconcile({ scan: true });
    }
    if (cfg.cniMode) {
      const attachments = this.#attachments!;
      this.#repair();
      this.#serveLocalApi(attachments);
      this.#sweep = setInterval(() => {
        const n = attachments.sweep();
        if (n) {
          log.info("removed {n} attachments whose pod namespace disappeared", { n });
          this.reconcile();
        }
        this.#repair();
        // The kubelet rotates the service-account token; the plugin's copy follows.
        this.#pluginMembership();
      }, 10_000);
      const installOpts = this.#cniInstallOptions();
      const first = await this.#installer.install(installOpts).catch((e) => {
        log.error("CNI install failed: {error}", { error: (e as Error).message });
        return undefined;
      });
      if (first?.kind === "installed") log.info("chained into {file}", { file: first.confFile });
      this.#watchDone = this.#installer.watch(installOpts, this.#abort.signal).catch((e) => {
        log.error("CNI config watcher stopped: {error}", { error: (e as Error).message });
      });
    }
    phase("serve");
    // After the first pod snapshot, so a restarted daemon keeps every entry that is still valid.
    const identity = this.#identity!;
    this.#identityDone = startIdentityTriggers({
      netnsDirs: cfg.netnsDirs,
      signal: this.#abort.signal,
      run: () => {
        // Now and then the writer reads the maps again instead of trusting what it wrote.
        if (++this.#identityRuns % 30 === 0) this.#writer?.resync();
        this.reconcile({ scan: true });
        return identity.discovery.settling(identity.wanted());
      },
    }).done;
    phase("identity");
    this.#ready = true;
    log.info("ready {ms} ms after exec ({phases})", {
      ms: Math.round(performance.now()),
      phases: Object.entries(phases).map(([k, v]) => `${k} ${v}`).join(", "),
    });
  }

  #scheduleRepair(): void {
    if (!this.#attachments || this.#abort.signal.aborted) return;
    clearTimeout(this.#repairTimer);
    this.#repairTimer = setTimeout(() => this.#repair(), 200);
  }

  /**
   * Finds meshed pods running without their attachment (ADD while the pod was unknown or its
   * membership could not be read, a failed restore, a pod started before the plugin was chained)
   * and attaches them in place; the ones that fail are reported by /readyz until they succeed.
   */
  #repair(): void {
    const a = this.#attachments;
    // Before the first snapshot an empty table says nothing about which pods should be attached.
    if (!a || this.table.snapshots === 0) return;
    let r;
    try {
      r = a.rediscover(this.table.entries(), this.cfg.netnsDirs, a.busyPods);
    } catch (e) {
      log.error("repair pass failed: {error}", { error: (e as Error).message });
      return;
    }
    for (const x of r.attached) {
      this.#m.repaired.inc();
      log.info(
        "repaired {pod}: meshed but running without its attachment; attached in place ({netns}, ip {ip})",
        x,
      );
    }
    if (r.attached.length) this.reconcile();
    if (a.orphanCount > 0) {
      // After a damaged state file: what no running pod claimed is what deleted pods left.
      const meshed = new Set(this.table.entries().filter((e) => e.inMesh && e.ip).map((e) => e.ip));
      const n = a.dropOrphans(meshed);
      if (n) log.info("removed {n} per-pod pin directories no running pod claimed", { n });
      this.reconcile();
    }
    const before = this.#unattached;
    this.#unattached = new Map(r.failed.map((f) => [f.pod, f.error]));
    for (const [pod, error] of this.#unattached) {
      if (before.get(pod) !== error) log.error("cannot attach meshed pod {pod}: {error}", { pod, error });
    }
    this.#m.unattached.set({}, this.#unattached.size);
  }

  /**
   * The local API on the root-only unix socket: the plugin's requests in CNI mode, and the pod
   * table in every mode. Nothing of it is on the network port.
   */
  #serveLocalApi(attachments?: Attachments): void {
    this.#server = serveDaemonSocket(socketPath(this.cfg.runDir), async (req) => {
      if (req.op === "pods") return { ok: true, pods: this.#podRows() };
      if (!attachments) {
        if (req.op === "status") return { ok: true, detail: "not in CNI mode" };
        return {
          ok: false,
          code: CniErrorCode.pluginNotAvailable,
          msg: "this merbridge daemon is not in CNI mode",
        };
      }
      const t0 = performance.now();
      const res = await attachments.handle(req);
      // The pod's entries are in the maps before the runtime hears back.
      if (req.op !== "status") this.reconcile();
      this.#m.cniRequests.inc({ op: req.op, result: res.ok ? "ok" : "error" });
      this.#m.cniLatency.observe({ op: req.op }, (performance.now() - t0) / 1000);
      return res;
    });
  }

  /**
   * A daemon started without CNI mode on a node where CNI mode ran before: the chained plugin would
   * fail every pod ADD with nobody answering, so the chain entry, the plugin and the per-pod
   * attachments go.
   */
  async #leaveCniMode(): Promise<void> {
    const hadInstall = pathExists(`${this.cfg.stateDir}/cni-install.json`);
    const hadPods = pathExists(attachmentsFile(this.cfg.stateDir));
    if (!hadInstall && !hadPods) return;
    if (hadInstall) {
      const res = await this.#installer.uninstall(this.#cniInstallOptions()).catch((e) => {
        log.error("removing the CNI chain entry left by CNI mode: {error}", { error: (e as Error).message });
        return undefined;
      });
      if (res) {
        log.info("CNI mode is off: removed {changes}", { changes: res.changes.join("; ") || "nothing" });
      }
    }
    if (hadPods && this.#dp) {
      const a = new Attachments({
        maps: this.#dp.maps,
        programs: this.#dp.ingressPrograms(),
        pinPath: this.cfg.pinPath,
        stateFile: attachmentsFile(this.cfg.stateDir),
        hook: this.cfg.ingressHook,
        xdpMode: this.cfg.xdpMode ?? "auto",
        hardwareChecksum: this.cfg.hardwareChecksum,
        lookupPod: () => Promise.resolve(undefined),
      });
      a.restore();
      log.info("CNI mode is off: removed {n} pod attachments", {
        n: a.removeAll() + a.dropOrphans(new Set()),
      });
    }
  }

  /**
   * What the plugin needs to judge membership without the daemon. In a cluster the service
   * account's token is copied into a root-only kubeconfig on the host, and kept current.
   */
  #pluginMembership(): Record<string, unknown> | undefined {
    const cfg = this.cfg;
    const base = { mode: cfg.mode, nodeName: cfg.nodeName };
    const ref = cfg.podSourceRef;
    if (!ref) return undefined;
    if (ref.podsFile) return { ...base, podsFile: ref.podsFile };
    if (ref.kubeconfig) {
      return { ...base, kubeconfig: ref.kubeconfig, ...(ref.context ? { context: ref.context } : {}) };
    }
    const path = `${cfg.stateDir}/${PLUGIN_KUBECONFIG_FILE}`;
    try {
      const text = inClusterKubeconfigText({ serviceAccountDir: ref.serviceAccountDir });
      if (text === undefined) return undefined;
      if (writeRootOnly(path, text)) log.info("wrote the plugin's API credentials to {path}", { path });
    } catch (e) {
      log.error("cannot write the plugin's API credentials: {error}", { error: (e as Error).message });
      return undefined;
    }
    return { ...base, kubeconfig: path };
  }

  #cniInstallOptions() {
    const cfg = this.cfg;
    const membership = cfg.cniMode ? this.#pluginMembership() : undefined;
    return {
      binDir: cfg.cniBinDir,
      confDir: cfg.cniConfigDir,
      stateDir: cfg.stateDir,
      source: cfg.pluginSource,
      pluginConf: {
        socketPath: socketPath(cfg.runDir),
        logFile: `${cfg.runDir}/cni.log`,
        logLevel: cfg.logLevel,
        ...(membership ? { membership } : {}),
      },
    };
  }

  async #lookupPod(ns: string, name: string) {
    // The API may not have told us about a brand-new pod yet: wait briefly, then ask directly.
    for (let i = 0; i < 10; i++) {
      const e = this.table.get(ns, name);
      if (e) return e;
      await new Promise((r) => setTimeout(r, 100));
    }
    // An error is not "not meshed": it reaches the plugin, and the runtime retries.
    const pod = await this.source.get(ns, name);
    if (!pod) return undefined;
    const { podEntry } = await import("../mesh/membership.ts");
    return podEntry(pod, this.cfg.mode);
  }

  /**
   * Brings every pod-keyed map in line with the pod table, the CNI attachments and the namespaces
   * found. The namespaces are scanned again when `scan` is set (the periodic pass, the netns dirs'
   * events) or when the pods' addresses changed; a policy change costs no scan.
   */
  reconcile(o: { scan?: boolean } = {}): void {
    const identity = this.#identity, writer = this.#writer;
    if (!identity || !writer) return;
    // Before the first snapshot an empty table says nothing: entries are only added, never removed.
    const early = this.table.snapshots === 0;
    const pods = this.table.entries();
    let namespaces;
    if (!early) {
      try {
        namespaces = identity.namespaces(wantedIps(meshedPods(pods)), o.scan ?? false);
      } catch (e) {
        log.error("pod identity scan: {error}", { error: (e as Error).message });
      }
    }
    const desired = desiredNodeState({
      pods,
      attached: this.#attachments?.attached() ?? [],
      namespaces,
      orphanMarks: this.#attachments?.orphanMarks(),
      fallbackPolicy: this.#fallbackPolicy,
    });
    try {
      const w = writer.apply(desired, { addOnly: early || namespaces === undefined });
      this.#m.reconciles.inc({ result: "ok" });
      this.#syncError = undefined;
      const lp = w.localPods;
      if (lp.added + lp.updated + lp.removed) {
        log.info("pod maps: +{added} ~{updated} -{removed}", { ...lp });
      }
      if (w.marks.added + w.marks.updated + w.marks.removed) {
        log.debug("mark_pod_ips: +{added} ~{updated} -{removed}", { ...w.marks });
      }
      if (!early && namespaces) {
        identity.update(desired.identityPods, desired.netnsPods, w.netnsPods.written, w.netnsPods.removed);
      }
    } catch (e) {
      // What was written is remembered; the next pass retries the rest.
      this.#m.reconciles.inc({ result: "error" });
      this.#syncError = (e as Error).message;
      log.error("reconciling pod maps failed: {error}", { error: this.#syncError });
    }
  }

  #health() {
    return {
      notReady: () => {
        if (!this.#ready) return "starting";
        if (this.#unattached.size === 0) return undefined;
        return `${this.#unattached.size} meshed pod(s) could not be attached: ` +
          [...this.#unattached].map(([pod, e]) => `${pod} (${e})`).join("; ");
      },
      unhealthy: () => this.#syncError,
      // Not a reason to restart the agent (other pods are fine), but said on /healthz too.
      degraded: () => {
        const parts = [];
        if (this.#unattached.size) {
          parts.push(`meshed pods not attached: ${[...this.#unattached.keys()].join(", ")}`);
        }
        if (this.#stateProblem) parts.push(`attachment state at start: ${this.#stateProblem}`);
        return parts.length ? parts.join("; ") : undefined;
      },
    };
  }

  /** The pod table with how connect4 knows each pod, for `merbridge pods`. */
  #podRows(): unknown[] {
    return this.table.entries().map((e) => {
      const ids = this.#identity?.of(e.namespace, e.name);
      return {
        ...e,
        identity: ids?.map((i) => ({ via: i.via, cookie: i.cookie.toString(), netns: i.netns ?? null })) ??
          null,
      };
    });
  }

  #collectors(): void {
    this.registry.onCollect(() => {
      const dp = this.#dp;
      if (!dp) return;
      const c = dp.maps.counters();
      for (const name of COUNTER_NAMES) this.#m.bpf.set({ event: name }, c[name]);
      // Only this node's meshed pods have entries (reconcilePodCounters), so the series are bounded
      // and a pod's go with it.
      this.#m.podConnections.reset();
      for (const e of this.table.entries()) {
        if (!e.inMesh || !(e.ip || e.ip6)) continue;
        const pc = sumCounters(
          [e.ip, e.ip6 ?? ""].filter((ip) => ip !== "").map((ip) => dp.maps.podCounters(ip)),
        );
        if (!pc) continue;
        for (const [event, v] of Object.entries(pc)) {
          this.#m.podConnections.set({ pod: `${e.namespace}/${e.name}`, event }, v);
        }
      }
      const counts = this.table.counts();
      this.#m.pods.set({ state: "meshed" }, counts.meshed);
      this.#m.pods.set({ state: "not_meshed" }, counts.notMeshed);
      this.#m.pods.set({ state: "no_ip" }, counts.noIp);
      // Counted by the kernel (or the programs), never by walking keys: a scrape costs the same
      // whether the tables are empty or full.
      for (const t of dp.tableFills()) {
        if (t.entries !== undefined) this.#m.mapEntries.set({ map: t.map }, t.entries);
        this.#m.mapCapacity.set({ map: t.map }, t.capacity);
      }
      this.#m.cniInstall.set({ event: "install" }, this.#installer.stats.installs);
      this.#m.cniInstall.set({ event: "repair" }, this.#installer.stats.repairs);
      this.#m.cniInstall.set({ event: "error" }, this.#installer.stats.errors);
      this.#m.ready.set({}, this.#ready ? 1 : 0);
      this.#m.attachments.set({}, this.#attachments?.records().length ?? 0);
      if (this.#identity) {
        const c = this.#identity.counts();
        this.#m.identified.set({ via: "netns" }, c.netns);
        this.#m.identified.set({ via: "cni" }, c.cni);
        this.#m.identified.set({ via: "none" }, c.unidentified);
        const st = this.#identity.discovery.lastStats;
        this.#m.netnsScan.set({}, st.ms / 1000);
        this.#m.namespaces.set({}, st.candidates);
      }
      const s = this.source.stats();
      this.#m.source.set({ event: "list" }, s.lists);
      this.#m.source.set({ event: "watch_restart" }, s.watchRestarts);
      this.#m.source.set({ event: "error" }, s.errors);
    });
  }

  /** Stops serving. With `uninstall`, removes everything this agent put on the node. */
  async stop(uninstall = this.cfg.uninstallOnExit): Promise<void> {
    await this.#teardown(uninstall);
  }

  async #teardown(uninstall: boolean): Promise<void> {
    this.#ready = false;
    this.#abort.abort();
    clearInterval(this.#sweep);
    clearTimeout(this.#repairTimer);
    await this.source.stop().catch(() => {});
    await this.#server?.close().catch(() => {});
    await this.#watchDone;
    await this.#identityDone;
    await this.#http?.shutdown().catch(() => {});
    if (uninstall) {
      const n = this.#attachments?.removeAll() ?? 0;
      if (this.cfg.cniMode) {
        await this.#installer.uninstall(this.#cniInstallOptions()).catch((e) => log.error(String(e)));
      }
      this.#dp?.close();
      const pins = uninstallDatapath(this.cfg.pinPath);
      log.info("uninstalled: {n} pod attachments, {pins} pins", { n, pins });
    } else {
      this.#attachments?.close();
      this.#dp?.close();
      log.info("stopped; the datapath stays attached for the next daemon");
    }
  }
}

/** A dual-stack pod's counters: the sum of its entries (undefined when it has none). */
function sumCounters<K extends string>(
  parts: (Record<K, bigint> | undefined)[],
): Record<K, bigint> | undefined {
  const have = parts.filter((p): p is Record<K, bigint> => p !== undefined);
  if (!have.length) return undefined;
  const out = { ...have[0]! };
  for (const p of have.slice(1)) for (const k of Object.keys(p) as K[]) out[k] += p[k];
  return out;
}
