// Turns one plugin invocation (CNI_* environment, stdin network configuration) into a validated
// description of what was asked, or a CniError carrying the spec's code for what was wrong.
import { isLogLevel, LOG_LEVELS, type LogLevel } from "../src/log/lines.ts";
import { type Attachment, DEFAULT_RUN_DIR } from "./protocol.ts";
import { documentSpan, objectMembers } from "./json_text.ts";
import { type MembershipConf, parseMembershipConf } from "./membership.ts";
import {
  CniError,
  CniErrorCode,
  isSupportedCniVersion,
  PLUGIN_TYPE,
  SUPPORTED_CNI_VERSIONS,
} from "./spec.ts";
import { isRecord } from "../src/util/record.ts";

export const CNI_COMMANDS = ["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"] as const;
export type CniCommand = (typeof CNI_COMMANDS)[number];

export type FailurePolicy = "fail" | "ignore";

/**
 * Short enough that a dead daemon does not stall pod creation noticeably, long enough for the
 * daemon to enter the pod's namespace, open the mark listener and attach the datapath.
 */
export const DEFAULT_TIMEOUT_MS = 5_000;
const MAX_TIMEOUT_MS = 120_000;

/** The plugin's own fields in the network configuration, with defaults applied. */
export interface PluginConfig {
  cniVersion: string;
  name: string;
  socketPath: string;
  timeoutMs: number;
  logFile?: string;
  logLevel: LogLevel;
  /**
   * What ADD does when interception cannot be set up. "fail" by default: a meshed pod that
   * started without interception would send and receive traffic around its sidecar, silently
   * bypassing the mesh's mTLS and policy; failing makes the runtime retry until the daemon is back.
   */
  failurePolicy: FailurePolicy;
  /** How to judge a pod without the daemon; absent in entries written by older installers. */
  membership?: MembershipConf;
  /** The previous plugin's result exactly as the runtime sent it, when there was one. */
  prevResultText?: string;
  prevResult?: Record<string, unknown>;
  /** GC only; absent when the runtime sent no list. */
  validAttachments?: Attachment[];
}

/** The Kubernetes identity from CNI_ARGS; empty strings when the runtime gave none. */
export interface PodIdentity {
  namespace: string;
  name: string;
  uid?: string;
}

export interface CniInvocation {
  command: CniCommand;
  containerId: string;
  netns: string;
  ifName: string;
  pod: PodIdentity;
  config: PluginConfig;
}

/** Reads CNI_COMMAND; the one thing needed before anything else can be decided. */
export function parseCommand(env: Record<string, string | undefined>): CniCommand {
  const cmd = env.CNI_COMMAND;
  if (cmd === undefined || cmd === "") {
    throw new CniError(CniErrorCode.invalidEnv, "CNI_COMMAND is not set");
  }
  if (!(CNI_COMMANDS as readonly string[]).includes(cmd)) {
    throw new CniError(
      CniErrorCode.invalidEnv,
      `unknown CNI_COMMAND "${cmd}"`,
      `expected one of ${CNI_COMMANDS.join(", ")}`,
    );
  }
  return cmd as CniCommand;
}

/**
 * Parses CNI_ARGS ("K1=V1;K2=V2"). Every key is accepted: the runtime adds keys meant for other
 * plugins in the chain, so unknown keys (and IgnoreUnknown itself) carry no meaning here.
 */
export function parseCniArgs(raw: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!raw) return out;
  for (const pair of raw.split(";")) {
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    if (eq <= 0) {
      throw new CniError(
        CniErrorCode.invalidEnv,
        "CNI_ARGS is malformed",
        `"${pair}" is not KEY=VALUE (CNI_ARGS is KEY=VALUE pairs separated by ';')`,
      );
    }
    out.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return out;
}

/** Container ids start with an alphanumeric, then alphanumerics, '_', '.' or '-' (CNI spec). */
const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.\-]*$/;

function checkContainerId(id: string | undefined): string {
  if (!id) throw new CniError(CniErrorCode.invalidEnv, "CNI_CONTAINERID is not set");
  if (!CONTAINER_ID_RE.test(id)) {
    throw new CniError(
      CniErrorCode.invalidEnv,
      "CNI_CONTAINERID is invalid",
      `"${id}" must start with a letter or digit followed by letters, digits, '_', '.' or '-'`,
    );
  }
  return id;
}

function checkIfName(name: string | undefined): string {
  if (!name) throw new CniError(CniErrorCode.invalidEnv, "CNI_IFNAME is not set");
  if (name === "." || name === ".." || name.length > 15 || /[/:\s]/.test(name)) {
    throw new CniError(
      CniErrorCode.invalidEnv,
      "CNI_IFNAME is invalid",
      `"${name}" is not a valid interface name (at most 15 characters, no '/', ':' or whitespace)`,
    );
  }
  return name;
}

function checkNetns(netns: string | undefined): string {
  if (!netns) throw new CniError(CniErrorCode.invalidEnv, "CNI_NETNS is not set");
  return netns;
}

const dec = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Decodes stdin into the network configuration object and its text. */
function decodeStdin(stdin: Uint8Array): { text: string; obj: Record<string, unknown> } {
  let text: string;
  try {
    text = dec.decode(stdin);
  } catch {
    throw new CniError(CniErrorCode.decodeFailure, "network configuration on stdin is not valid UTF-8");
  }
  if (text.trim() === "") {
    throw new CniError(CniErrorCode.decodeFailure, "no network configuration on stdin");
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new CniError(
      CniErrorCode.decodeFailure,
      "network configuration on stdin is not valid JSON",
      (err as Error).message,
    );
  }
  if (!isRecord(obj)) {
    throw new CniError(CniErrorCode.decodeFailure, "network configuration on stdin is not a JSON object");
  }
  return { text, obj };
}

/** The cniVersion of a configuration, checked against what this plugin speaks. */
function checkVersion(obj: Record<string, unknown>): string {
  const v = obj.cniVersion;
  if (v === undefined) {
    throw new CniError(
      CniErrorCode.incompatibleVersion,
      "incompatible CNI version",
      `the configuration has no cniVersion (0.1.0 implied); ${PLUGIN_TYPE} supports ${
        SUPPORTED_CNI_VERSIONS.join(", ")
      }`,
    );
  }
  if (!isSupportedCniVersion(v)) {
    throw new CniError(
      CniErrorCode.incompatibleVersion,
      "incompatible CNI version",
      `the configuration asks for cniVersion ${JSON.stringify(v)}; ${PLUGIN_TYPE} supports ${
        SUPPORTED_CNI_VERSIONS.join(", ")
      }`,
    );
  }
  return v;
}

function invalid(msg: string, details?: string): CniError {
  return new CniError(CniErrorCode.invalidConfig, msg, details);
}

function absolutePath(obj: Record<string, unknown>, key: string): string | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !v.startsWith("/")) {
    throw invalid(
      `invalid "${key}" in the network configuration`,
      `expected an absolute path, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function parseValidAttachments(obj: Record<string, unknown>): Attachment[] | undefined {
  // Spec 1.1.0 names the key "cni.dev/valid-attachments"; early runtimes sent "cni.dev/attachments".
  const raw = obj["cni.dev/valid-attachments"] ?? obj["cni.dev/attachments"];
  if (raw === undefined) return undefined;
  if (!Array.isArray(raw)) throw invalid(`"cni.dev/valid-attachments" must be an array`);
  return raw.map((a, i) => {
    if (!isRecord(a) || typeof a.containerID !== "string" || typeof a.ifname !== "string") {
      throw invalid(`"cni.dev/valid-attachments"[${i}] must be {"containerID": string, "ifname": string}`);
    }
    return { containerId: a.containerID, ifName: a.ifname };
  });
}

/** Parses and validates the network configuration for any command but VERSION. */
export function parsePluginConfig(stdin: Uint8Array): PluginConfig {
  const { text, obj } = decodeStdin(stdin);
  const cniVersion = checkVersion(obj);
  if (obj.type !== PLUGIN_TYPE) {
    throw invalid(
      `this plugin is "${PLUGIN_TYPE}" but the network configuration has type ${JSON.stringify(obj.type)}`,
    );
  }
  if (obj.name !== undefined && typeof obj.name !== "string") {
    throw invalid(`"name" in the network configuration must be a string`);
  }
  const runDir = absolutePath(obj, "runDir");
  const socketPath = absolutePath(obj, "socketPath") ??
    `${(runDir ?? DEFAULT_RUN_DIR).replace(/\/+$/, "")}/cni.sock`;

  let timeoutMs = DEFAULT_TIMEOUT_MS;
  if (obj.timeoutMs !== undefined) {
    const t = obj.timeoutMs;
    if (typeof t !== "number" || !Number.isInteger(t) || t < 1 || t > MAX_TIMEOUT_MS) {
      throw invalid(
        `invalid "timeoutMs"`,
        `expected an integer from 1 to ${MAX_TIMEOUT_MS}, got ${JSON.stringify(t)}`,
      );
    }
    timeoutMs = t;
  }

  let logLevel: LogLevel = "info";
  if (obj.logLevel !== undefined) {
    if (typeof obj.logLevel !== "string" || !isLogLevel(obj.logLevel)) {
      throw invalid(
        `invalid "logLevel"`,
        `expected one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(obj.logLevel)}`,
      );
    }
    logLevel = obj.logLevel;
  }

  let failurePolicy: FailurePolicy = "fail";
  if (obj.failurePolicy !== undefined) {
    if (obj.failurePolicy !== "fail" && obj.failurePolicy !== "ignore") {
      throw invalid(
        `invalid "failurePolicy"`,
        `expected "fail" or "ignore", got ${JSON.stringify(obj.failurePolicy)}`,
      );
    }
    failurePolicy = obj.failurePolicy;
  }

  const config: PluginConfig = {
    cniVersion,
    name: typeof obj.name === "string" ? obj.name : "",
    socketPath,
    timeoutMs,
    logLevel,
    failurePolicy,
  };
  const logFile = absolutePath(obj, "logFile");
  if (logFile) config.logFile = logFile;
  if (obj.membership !== undefined) {
    const m = parseMembershipConf(obj.membership);
    if (typeof m === "string") throw invalid(`invalid "membership" in the network configuration`, m);
    config.membership = m;
  }

  if (obj.prevResult !== undefined) {
    if (!isRecord(obj.prevResult)) throw invalid(`"prevResult" must be a JSON object`);
    config.prevResult = obj.prevResult;
    // Keep the runtime's own bytes: ADD hands the previous result on unchanged.
    const member = objectMembers(text, documentSpan(text)).findLast((m) => m.key === "prevResult");
    if (member) config.prevResultText = text.slice(member.value.start, member.value.end);
  }
  const attachments = parseValidAttachments(obj);
  if (attachments) config.validAttachments = attachments;
  return config;
}

/** The pod identity kubelet passes in CNI_ARGS. */
export function podIdentity(args: Map<string, string>): PodIdentity {
  const pod: PodIdentity = {
    namespace: args.get("K8S_POD_NAMESPACE") ?? "",
    name: args.get("K8S_POD_NAME") ?? "",
  };
  const uid = args.get("K8S_POD_UID");
  if (uid) pod.uid = uid;
  return pod;
}

/**
 * Validates the environment for the command. DEL asks only for what identifies the attachment:
 * the spec lets the namespace be gone by then, and a DEL refused for anything less blocks the
 * pod's deletion forever.
 */
export function parseInvocation(
  command: Exclude<CniCommand, "VERSION">,
  env: Record<string, string | undefined>,
  config: PluginConfig,
): CniInvocation {
  const base = { command, config, containerId: "", netns: "", ifName: "", pod: { namespace: "", name: "" } };
  switch (command) {
    case "ADD":
    case "CHECK":
      return {
        ...base,
        containerId: checkContainerId(env.CNI_CONTAINERID),
        netns: checkNetns(env.CNI_NETNS),
        ifName: checkIfName(env.CNI_IFNAME),
        pod: podIdentity(parseCniArgs(env.CNI_ARGS)),
      };
    case "DEL": {
      let pod: PodIdentity = { namespace: "", name: "" };
      try {
        pod = podIdentity(parseCniArgs(env.CNI_ARGS));
      } catch {
        // The daemon can still find the attachment by container id.
      }
      return {
        ...base,
        containerId: checkContainerId(env.CNI_CONTAINERID),
        netns: env.CNI_NETNS ?? "",
        ifName: env.CNI_IFNAME ?? "",
        pod,
      };
    }
    case "STATUS":
    case "GC":
      return base;
  }
}

/** The addresses in a result's "ips" (0.3.0 and later), without prefix length. */
export function resultAddresses(result: Record<string, unknown> | undefined): string[] {
  if (!result) return [];
  const out: string[] = [];
  const ips = result.ips;
  if (Array.isArray(ips)) {
    for (const ip of ips) {
      if (isRecord(ip) && typeof ip.address === "string") {
        const addr = ip.address.split("/")[0];
        if (addr) out.push(addr);
      }
    }
  }
  return out;
}
