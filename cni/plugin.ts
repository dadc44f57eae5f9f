// The CNI plugin: the container runtime runs it for each pod sandbox, chained after the node's
// network plugin. It does not touch the network itself; it tells the node daemon about the pod
// so the daemon can set up the eBPF interception, and hands the previous result on unchanged.
import { getLogger, setupLogging, shutdownLogging } from "../src/log/logger.ts";
import {
  callDaemon,
  DaemonAnsweredError,
  type DaemonOkResponse,
  DaemonProtocolError,
  type DaemonRequest,
  DaemonUnreachableError,
} from "./protocol.ts";
import {
  type CniCommand,
  type CniInvocation,
  parseCommand,
  parseInvocation,
  parsePluginConfig,
  resultAddresses,
} from "./plugin_config.ts";
import {
  CniError,
  CniErrorCode,
  errorDocument,
  LATEST_CNI_VERSION,
  PLUGIN_TYPE,
  versionDocument,
} from "./spec.ts";

export interface CniPluginIo {
  env: Record<string, string | undefined>;
  stdin: Uint8Array;
  /** Receives the whole of stdout: exactly one JSON document, or nothing. */
  writeStdout(s: string): void;
}

const log = getLogger("cni", "plugin");

/** Runs one plugin invocation and returns the process exit code. */
export async function runCniPlugin(io: CniPluginIo): Promise<number> {
  let cniVersion = LATEST_CNI_VERSION;
  let loggingReady = false;
  try {
    const command = parseCommand(io.env);
    if (command === "VERSION") {
      io.writeStdout(versionDocument() + "\n");
      return 0;
    }
    const config = parsePluginConfig(io.stdin);
    cniVersion = config.cniVersion;
    setupLogging({ level: config.logLevel, file: config.logFile });
    loggingReady = true;
    const inv = parseInvocation(command, io.env, config);
    return await dispatch(inv, io);
  } catch (err) {
    const cniErr = err instanceof CniError
      ? err
      : new CniError(CniErrorCode.internal, `${PLUGIN_TYPE} failed unexpectedly`, (err as Error)?.message);
    io.writeStdout(errorDocument(cniVersion, cniErr) + "\n");
    try {
      if (!loggingReady) setupLogging({ level: "info" });
      log.error("{command} failed with code {code}: {error}", {
        command: io.env.CNI_COMMAND ?? "",
        containerId: io.env.CNI_CONTAINERID ?? "",
        code: cniErr.code,
        error: cniErr.details ? `${cniErr.message}: ${cniErr.details}` : cniErr.message,
      });
    } catch {
      // The runtime already has the error on stdout; a logging failure must not replace it.
    }
    return 1;
  } finally {
    shutdownLogging();
  }
}

function request(inv: CniInvocation, op: DaemonRequest["op"]): DaemonRequest {
  const req: DaemonRequest = {
    op,
    containerId: inv.containerId,
    netns: inv.netns,
    ifName: inv.ifName,
    podNamespace: inv.pod.namespace,
    podName: inv.pod.name,
    cniVersion: inv.config.cniVersion,
  };
  if (inv.pod.uid) req.podUid = inv.pod.uid;
  const ips = resultAddresses(inv.config.prevResult);
  if (ips.length > 0) req.podIps = ips;
  if (op === "gc") req.validAttachments = inv.config.validAttachments ?? [];
  return req;
}

/** Maps a failed daemon call onto the CNI error the runtime should see. */
function daemonFailure(err: unknown): CniError {
  if (err instanceof DaemonAnsweredError) return new CniError(err.code, err.msg, err.details);
  if (err instanceof DaemonUnreachableError) {
    return new CniError(
      CniErrorCode.tryAgainLater,
      "merbridge daemon is not reachable, try again later",
      err.message,
    );
  }
  if (err instanceof DaemonProtocolError) {
    return new CniError(
      CniErrorCode.ioFailure,
      "merbridge daemon answered with an invalid response",
      err.message,
    );
  }
  throw err;
}

/**
 * The daemon could not be asked about a pod with a Kubernetes identity. Returns when the pod may
 * start without it (it is not in the mesh, read from the daemon's own pod source); throws the CNI
 * error to answer otherwise: a meshed pod, or one that cannot be judged, waits for the daemon.
 */
async function withoutDaemon(inv: CniInvocation, err: DaemonUnreachableError): Promise<void> {
  const pod = `${inv.pod.namespace}/${inv.pod.name}`;
  const conf = inv.config.membership;
  if (!conf) throw daemonFailure(err);
  const { decideMembership, MembershipUnknownError } = await import("./membership.ts");
  let verdict;
  try {
    verdict = await decideMembership(conf, inv.pod, inv.config.timeoutMs);
  } catch (e) {
    if (!(e instanceof MembershipUnknownError)) throw e;
    throw new CniError(
      CniErrorCode.tryAgainLater,
      `merbridge daemon is not reachable and pod ${pod} could not be judged without it, try again later`,
      `${e.message}; ${err.message}`,
    );
  }
  if (verdict.inMesh) {
    throw new CniError(
      CniErrorCode.tryAgainLater,
      `pod ${pod} is in the mesh and the merbridge daemon is not reachable to set up its interception; ` +
        "it starts once the daemon is back",
      `${verdict.source} says it is meshed; ${err.message}`,
    );
  }
  log.info("{command} {containerId} ({pod}): daemon not reachable; not in the mesh by {source}", {
    command: inv.command,
    containerId: inv.containerId,
    pod,
    source: verdict.source,
  });
}

async function ask(inv: CniInvocation, op: DaemonRequest["op"]): Promise<DaemonOkResponse> {
  return await callDaemon(inv.config.socketPath, request(inv, op), inv.config.timeoutMs);
}

function hasPodIdentity(inv: CniInvocation): boolean {
  return inv.pod.name !== "" && inv.pod.namespace !== "";
}

const handlers: Record<
  Exclude<CniCommand, "VERSION">,
  (inv: CniInvocation, io: CniPluginIo) => Promise<number>
> = {
  async ADD(inv, io) {
    const prev = inv.config.prevResultText;
    if (prev === undefined) {
      // Without a previous result this plugin would be first in the chain: nothing has given
      // the pod an interface or an address, and inventing an empty result would hide that.
      throw new CniError(
        CniErrorCode.invalidConfig,
        `${PLUGIN_TYPE} must be chained after the plugin that creates the pod's network`,
        "the network configuration has no prevResult",
      );
    }
    const fields = { containerId: inv.containerId, pod: `${inv.pod.namespace}/${inv.pod.name}` };
    if (!hasPodIdentity(inv)) {
      // Mesh membership comes from the pod's labels and annotations; a sandbox without a
      // Kubernetes identity cannot be in the mesh.
      log.info("ADD {containerId}: no Kubernetes pod in CNI_ARGS, nothing to intercept", fields);
    } else {
      try {
        const res = await ask(inv, "add");
        if (res.inMesh === false) log.info("ADD {containerId} ({pod}): not in the mesh", fields);
        else {log.info("ADD {containerId} ({pod}): interception set up {detail}", {
            ...fields,
            detail: res.detail ?? "",
          });}
      } catch (err) {
        const cniErr = daemonFailure(err);
        if (inv.config.failurePolicy === "fail") {
          if (!(err instanceof DaemonUnreachableError)) throw cniErr;
          await withoutDaemon(inv, err);
          io.writeStdout(prev + "\n");
          return 0;
        }
        log.warn("ADD {containerId} ({pod}): starting without interception (failurePolicy ignore): {error}", {
          ...fields,
          error: cniErr.details ?? cniErr.message,
        });
      }
    }
    io.writeStdout(prev + "\n");
    return 0;
  },

  async DEL(inv) {
    // DEL must succeed whatever the daemon's state: a failing DEL keeps the pod from ever being
    // deleted, and the daemon reconciles leftovers against the pods that still exist.
    try {
      await ask(inv, "del");
      log.info("DEL {containerId}: done", { containerId: inv.containerId });
    } catch (err) {
      log.warn("DEL {containerId}: the daemon could not be told, it will reconcile later: {error}", {
        containerId: inv.containerId,
        error: (err as Error).message,
      });
    }
    return 0;
  },

  async CHECK(inv) {
    if (!hasPodIdentity(inv)) return 0;
    try {
      await ask(inv, "check");
    } catch (err) {
      const cniErr = daemonFailure(err);
      if (inv.config.failurePolicy === "fail") {
        if (!(err instanceof DaemonUnreachableError)) throw cniErr;
        await withoutDaemon(inv, err);
        return 0;
      }
      log.warn("CHECK {containerId}: ignored failure (failurePolicy ignore): {error}", {
        containerId: inv.containerId,
        error: cniErr.details ?? cniErr.message,
      });
    }
    return 0;
  },

  async STATUS(inv) {
    try {
      await ask(inv, "status");
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      // With "ignore", or when the plugin can judge pods itself, ADD still takes the pods that
      // are not in the mesh: reporting the plugin unavailable would hold every pod of the node.
      if (inv.config.failurePolicy === "ignore" || inv.config.membership) {
        log.warn("STATUS: daemon unavailable, reporting ready ({why}): {error}", {
          why: inv.config.failurePolicy === "ignore"
            ? "failurePolicy ignore"
            : "pods outside the mesh start without it",
          error: reason,
        });
        return 0;
      }
      throw new CniError(CniErrorCode.pluginNotAvailable, "merbridge daemon is not available", reason);
    }
    return 0;
  },

  async GC(inv) {
    if (inv.config.validAttachments === undefined) {
      // An absent list is not an empty one: treating it as "nothing is valid" would tear down
      // every pod's interception.
      log.warn("GC: the runtime sent no cni.dev/valid-attachments, nothing to do");
      return 0;
    }
    try {
      await ask(inv, "gc");
    } catch (err) {
      log.warn("GC: the daemon could not be asked, it reconciles on its own: {error}", {
        error: (err as Error).message,
      });
    }
    return 0;
  },
};

function dispatch(inv: CniInvocation, io: CniPluginIo): Promise<number> {
  return handlers[inv.command as Exclude<CniCommand, "VERSION">](inv, io);
}
