// Commands that change the node: uninstall everything, install or remove the CNI chain entry.
import { installCni, uninstallCni } from "../../installer/install.ts";
import { socketPath } from "../../daemon/daemon.ts";
import { uninstallNode } from "../../daemon/uninstall.ts";
import { type Command, printJson } from "../command.ts";
import { CNI_INSTALL_FLAGS, LOG_FLAGS, OUTPUT_FLAGS, PIN_FLAGS } from "../options.ts";
import { pluginSource } from "./daemon.ts";
import { daemonAnswers } from "../local_api.ts";

const UNINSTALL_FLAGS = {
  ...PIN_FLAGS,
  ...CNI_INSTALL_FLAGS,
  force: {
    type: "boolean",
    default: false,
    description: "uninstall even though a daemon answers on the socket",
  },
  ...OUTPUT_FLAGS,
  ...LOG_FLAGS,
} as const;

export const uninstallCommand: Command<typeof UNINSTALL_FLAGS> = {
  name: "uninstall",
  summary: "remove everything from this node: links, pins, XDP/TC attachments, CNI config entry, plugin",
  flags: UNINSTALL_FLAGS,
  async run(f) {
    if (!f.force && await daemonAnswers(f["run-dir"])) {
      console.error("a merbridge daemon is running on this node; stop it first (or pass --force)");
      return 1;
    }
    const report = await uninstallNode({
      pinPath: f["bpf-pin-path"],
      stateDir: f["state-dir"],
      runDir: f["run-dir"],
      cniBinDir: f["cni-bin-dir"],
      cniConfigDir: f["cni-config-dir"],
    });
    if (f.output === "json") printJson(report);
    else {
      console.log(`removed ${report.pins} pins and ${report.podAttachments} pod attachments`);
      for (const c of report.cni) console.log(`cni: ${c}`);
      for (const w of report.warnings) console.log(`warning: ${w}`);
    }
    return report.warnings.length ? 1 : 0;
  },
};

const CNI_FLAGS = { ...CNI_INSTALL_FLAGS, ...LOG_FLAGS } as const;

export const installCniCommand: Command<typeof CNI_FLAGS> = {
  name: "install-cni",
  summary:
    "install the CNI plugin and chain it into the active CNI config (the daemon does this in CNI mode)",
  flags: CNI_FLAGS,
  async run(f) {
    const runDir = f["run-dir"];
    const res = await installCni({
      binDir: f["cni-bin-dir"],
      confDir: f["cni-config-dir"],
      stateDir: f["state-dir"],
      source: pluginSource(),
      pluginConf: { socketPath: socketPath(runDir), logFile: `${runDir}/cni.log` },
    });
    if (res.kind === "no-config") {
      console.error(`no CNI config in ${res.confDir} yet`);
      return 1;
    }
    console.log(
      res.changed
        ? `chained into ${res.confFile}: ${res.changes.join("; ")}`
        : `already chained into ${res.confFile}`,
    );
    return 0;
  },
};

export const uninstallCniCommand: Command<typeof CNI_FLAGS> = {
  name: "uninstall-cni",
  summary: "remove the CNI chain entry and the plugin, restoring the config as it was",
  flags: CNI_FLAGS,
  async run(f) {
    const res = await uninstallCni({
      binDir: f["cni-bin-dir"],
      confDir: f["cni-config-dir"],
      stateDir: f["state-dir"],
    });
    for (const c of res.changes) console.log(c);
    for (const w of res.warnings) console.error(`warning: ${w}`);
    return 0;
  },
};
