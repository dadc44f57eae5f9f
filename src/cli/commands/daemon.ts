import { attachmentsFile, Daemon, type DaemonConfig } from "../../daemon/daemon.ts";
import { resolve } from "node:path";
import { getLogger } from "../../log/logger.ts";
import { openPodSource } from "../../pods/open_source.ts";
import { DAEMON_FLAGS } from "../options.ts";
import { type Parsed, UsageError } from "../args.ts";
import { connTableSizeFor, nodeMemoryBytes } from "../../datapath/sizing.ts";
import type { Command } from "../command.ts";

const log = getLogger("daemon");

/**
 * How the CNI plugin is installed: this executable when compiled, else a launcher that runs main.ts
 * under the plugin's name, so that from source too the plugin is the executable picking its role by
 * argv[0]. main.ts reaches the CLI through importLater, so this costs no more than cni/entry.ts.
 */
export function pluginSource(): DaemonConfig["pluginSource"] {
  const exe = Deno.execPath();
  if (/\/deno$/.test(exe)) {
    return {
      kind: "launcher",
      denoPath: exe,
      mainPath: new URL("../../../main.ts", import.meta.url).pathname,
      configPath: new URL("../../../deno.json", import.meta.url).pathname,
    };
  }
  return { kind: "binary", path: exe };
}

type Flags = Parsed<typeof DAEMON_FLAGS>;

/** The pod source as the plugin must find it: it starts from an unknown working directory. */
function podSourceRef(f: Flags): DaemonConfig["podSourceRef"] {
  const podsFile = f["pods-file"];
  if (podsFile) return { podsFile: resolve(podsFile) };
  const kubeconfig = f.kubeconfig;
  if (kubeconfig) return { kubeconfig: resolve(kubeconfig) };
  return { serviceAccountDir: resolve(f["service-account-dir"]) };
}

export function daemonConfig(f: Flags): DaemonConfig {
  const nodeName = f["node-name"] || Deno.hostname();
  let connTableSize = f["conn-table-size"];
  if (connTableSize === 0) connTableSize = connTableSizeFor(nodeMemoryBytes());
  else if (connTableSize < 1024) {
    throw new UsageError(
      `--conn-table-size: ${connTableSize} is below 1024 (0 sizes it from the node's memory)`,
    );
  }
  return {
    mode: f.mode,
    cniMode: f["cni-mode"],
    hardwareChecksum: f["hardware-checksum"],
    ingressHook: f["ingress-hook"],
    xdpMode: f["xdp-mode"],
    dnsCapture: f["dns-capture"],
    sockmap: f.sockmap,
    connTableSize,
    synTableSize: f["syn-table-size"],
    cgroupPath: f["cgroup-path"],
    pinPath: f["bpf-pin-path"],
    nodeName,
    metricsAddr: f["metrics-addr"],
    runDir: f["run-dir"],
    stateDir: f["state-dir"],
    cniBinDir: f["cni-bin-dir"],
    cniConfigDir: f["cni-config-dir"],
    uninstallOnExit: f["uninstall-on-exit"],
    netnsDirs: f["netns-dirs"].split(",").map((d) => d.trim()).filter(Boolean),
    pluginSource: pluginSource(),
    logLevel: f.debug ? "debug" : f["log-level"],
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
      podsFile: f["pods-file"],
      kubeconfig: f.kubeconfig,
      serviceAccountDir: f["service-account-dir"],
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
