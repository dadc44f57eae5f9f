import { attachmentsFile, Daemon, type DaemonConfig } from "../../daemon/daemon.ts";
import { resolve } from "node:path";
import { getLogger } from "../../log/logger.ts";
import { openPodSource } from "../../pods/open_source.ts";
import { DAEMON_FLAGS } from "../options.ts";
import { UsageError } from "../args.ts";
import { connTableSizeFor, nodeMemoryBytes } from "../../datapath/sizing.ts";
import type { Command } from "../command.ts";
import type { MeshMode } from "../../mesh/types.ts";
import type { IngressHook, XdpModeOption } from "../../xdp/attacher.ts";

const log = getLogger("daemon");

/**
 * How the CNI plugin is installed: this executable when compiled, else a launcher for deno and the
 * plugin's own entry point. Run from source, main.ts would make deno walk the whole CLI's module
 * graph (its dynamic import) on every pod start: about 10 ms of CPU that cni/entry.ts does not cost.
 */
export function pluginSource(): DaemonConfig["pluginSource"] {
  const exe = Deno.execPath();
  if (/\/deno$/.test(exe)) {
    return {
      kind: "launcher",
      denoPath: exe,
      mainPath: new URL("../../../cni/entry.ts", import.meta.url).pathname,
      configPath: new URL("../../../deno.json", import.meta.url).pathname,
    };
  }
  return { kind: "binary", path: exe };
}

type Flags = { [K in keyof typeof DAEMON_FLAGS]: unknown };

/** The pod source as the plugin must find it: it starts from an unknown working directory. */
function podSourceRef(f: Flags): DaemonConfig["podSourceRef"] {
  const podsFile = f["pods-file"] as string | undefined;
  if (podsFile) return { podsFile: resolve(podsFile) };
  const kubeconfig = f.kubeconfig as string | undefined;
  if (kubeconfig) return { kubeconfig: resolve(kubeconfig) };
  return {};
}

export function daemonConfig(f: Flags): DaemonConfig {
  const nodeName = (f["node-name"] as string | undefined) || Deno.hostname();
  let connTableSize = f["conn-table-size"] as number;
  if (connTableSize === 0) connTableSize = connTableSizeFor(nodeMemoryBytes());
  else if (connTableSize < 1024) {
    throw new UsageError(
      `--conn-table-size: ${connTableSize} is below 1024 (0 sizes it from the node's memory)`,
    );
  }
  return {
    mode: f.mode as MeshMode,
    cniMode: f["cni-mode"] as boolean,
    hardwareChecksum: f["hardware-checksum"] as boolean,
    ingressHook: f["ingress-hook"] as IngressHook,
    xdpMode: f["xdp-mode"] as XdpModeOption,
    dnsCapture: f["dns-capture"] as boolean,
    sockmap: f.sockmap as boolean,
    connTableSize,
    synTableSize: f["syn-table-size"] as number,
    cgroupPath: f["cgroup-path"] as string | undefined,
    pinPath: f["bpf-pin-path"] as string,
    nodeName,
    metricsAddr: f["metrics-addr"] as string,
    runDir: f["run-dir"] as string,
    stateDir: f["state-dir"] as string,
    cniBinDir: f["cni-bin-dir"] as string,
    cniConfigDir: f["cni-config-dir"] as string,
    uninstallOnExit: f["uninstall-on-exit"] as boolean,
    netnsDirs: String(f["netns-dirs"] ?? "").split(",").map((d) => d.trim()).filter(Boolean),
    pluginSource: pluginSource(),
    logLevel: f.debug ? "debug" : f["log-level"] as string,
    podSourceRef: podSourceRef(f),
  };
}

export const daemonCommand: Command<typeof DAEMON_FLAGS> = {
  name: "daemon",
  summary: "run the node agent (load, attach, keep the maps in step with the pods)",
  flags: DAEMON_FLAGS,
  async run(f) {
    const cfg = daemonConfig(f);
    const source = await openPodSource({
      podsFile: f["pods-file"] as string | undefined,
      kubeconfig: f.kubeconfig as string | undefined,
      nodeName: cfg.nodeName,
    });
    const daemon = await Daemon.start(cfg, source);
    const stopped = Promise.withResolvers<string>();
    const onSig = (sig: Deno.Signal) => () => stopped.resolve(sig);
    const handlers = (["SIGTERM", "SIGINT"] as const).map((s) => {
      const h = onSig(s);
      Deno.addSignalListener(s, h);
      return [s, h] as const;
    });
    const sig = await stopped.promise;
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
    log.info("{sig}: stopping (state file {file})", { sig, file: attachmentsFile(cfg.stateDir) });
    await daemon.stop();
    return 0;
  },
};
