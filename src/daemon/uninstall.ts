// Removing the agent from a node without a running daemon: per-pod ingress programs (and the checksum
// offload we switched off), the CNI chain entry and plugin, every pin. What cannot be removed is
// reported, never silently skipped.
import { uninstallCni } from "../installer/install.ts";
import { uninstallDatapath } from "../datapath/datapath.ts";
import { getLogger } from "../log/logger.ts";
import { detachIngress } from "../xdp/attacher.ts";
import { socketPath } from "./daemon.ts";
import {
  type AttachmentRecord,
  attachmentsFile,
  readAttachmentState,
  removeAttachmentState,
} from "./state_store.ts";

const log = getLogger("uninstall");

export interface UninstallOptions {
  pinPath: string;
  stateDir: string;
  runDir: string;
  cniBinDir: string;
  cniConfigDir: string;
}

export interface UninstallReport {
  podAttachments: number;
  pins: number;
  cni: string[];
  warnings: string[];
}

export async function uninstallNode(o: UninstallOptions): Promise<UninstallReport> {
  const report: UninstallReport = { podAttachments: 0, pins: 0, cni: [], warnings: [] };
  const file = attachmentsFile(o.stateDir);
  const state = readAttachmentState(file);
  const recs: AttachmentRecord[] = state.kind === "ok" ? state.records : [];
  if (state.kind === "invalid") report.warnings.push(state.problem);
  else if (state.kind === "ok" && state.problem) {
    report.warnings.push(`${state.problem}; used the previous copy`);
  }
  for (const r of recs) {
    try {
      detachIngress({
        netnsPath: r.netns,
        ifName: r.ifName,
        pinDir: `${o.pinPath}/pods/${
          r.pinKey ?? r.containerId.replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 200)
        }`,
      }, r.txChanged);
      report.podAttachments++;
    } catch (e) {
      report.warnings.push(`pod ${r.podNamespace}/${r.podName}: ${(e as Error).message}`);
    }
  }
  removeAttachmentState(file);
  try {
    const res = await uninstallCni({ binDir: o.cniBinDir, confDir: o.cniConfigDir, stateDir: o.stateDir });
    report.cni = res.changes;
    report.warnings.push(...res.warnings);
  } catch (e) {
    report.warnings.push(`CNI config: ${(e as Error).message}`);
  }
  report.pins = uninstallDatapath(o.pinPath);
  for (const path of [socketPath(o.runDir)]) {
    try {
      Deno.removeSync(path);
    } catch { /* absent */ }
  }
  for (const dir of [o.runDir, o.stateDir]) {
    try {
      Deno.removeSync(dir); // only when empty: anything else in it is not ours to delete
    } catch { /* absent or not empty */ }
  }
  log.info("uninstalled: {pods} pod attachments, {pins} pins, CNI: {cni}", {
    pods: report.podAttachments,
    pins: report.pins,
    cni: report.cni.join("; ") || "nothing",
  });
  return report;
}
