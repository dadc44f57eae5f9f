// The protocol between the CNI plugin (a short-lived process run by the container runtime) and
// the node daemon (which owns the eBPF maps and can enter pod network namespaces): over a unix
// stream socket, the plugin writes one JSON request line and reads one JSON response line. This is
// the contract and the client; the daemon's server is src/daemon/socket_server.ts.

import { isRecord } from "../src/util/record.ts";
import { joinChunks } from "../src/util/bytes.ts";

export const DEFAULT_RUN_DIR = "/var/run/merbridge";
export const DEFAULT_SOCKET_PATH = `${DEFAULT_RUN_DIR}/cni.sock`;

/** Requests and responses are small; a peer sending more than this is broken or hostile. */
export const MAX_MESSAGE_BYTES = 256 * 1024;
/** The pod table of a node with thousands of pods is larger than any request. */
export const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

/**
 * "pods" is the local API's read of the daemon's pod table (for `merbridge pods`): it lives on this
 * root-only socket rather than on the network port, where anything reaching the node could read it.
 */
export const DAEMON_OPS = ["add", "del", "check", "status", "gc", "pods"] as const;
export type DaemonOp = (typeof DAEMON_OPS)[number];

/** One (container, interface) pair the runtime still considers live (GC). */
export interface Attachment {
  containerId: string;
  ifName: string;
}

export interface DaemonRequest {
  op: DaemonOp;
  /** Empty for status and gc. */
  containerId: string;
  /** Empty when the runtime gave none (DEL after the namespace is gone; status; gc). */
  netns: string;
  ifName: string;
  /** Empty when CNI_ARGS carried no Kubernetes identity. */
  podNamespace: string;
  podName: string;
  podUid?: string;
  cniVersion: string;
  /** Addresses (without prefix length) the previous plugin in the chain gave the pod. */
  podIps?: string[];
  /** gc only: everything not listed may be cleaned up. */
  validAttachments?: Attachment[];
}

export interface DaemonOkResponse {
  ok: true;
  inMesh?: boolean;
  podIp?: string;
  detail?: string;
  /** "pods" only: the daemon's pod table. */
  pods?: unknown[];
}

export interface DaemonErrorResponse {
  ok: false;
  /** A CNI error code, passed through to the runtime. */
  code: number;
  msg: string;
  details?: string;
}

export type DaemonResponse = DaemonOkResponse | DaemonErrorResponse;

/** A request or response that does not follow this protocol. */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
}

export type UnreachableReason = "no-socket" | "refused" | "permission" | "timeout" | "closed" | "io";

/** The daemon could not be asked: nothing listens, the connection broke, or it did not answer in time. */
export class DaemonUnreachableError extends Error {
  override readonly name = "DaemonUnreachableError";
  constructor(readonly socketPath: string, readonly reason: UnreachableReason, detail: string) {
    super(`merbridge daemon unreachable at ${socketPath} (${reason}): ${detail}`);
  }
}

/** The daemon answered, and its answer was an error. */
export class DaemonAnsweredError extends Error {
  override readonly name = "DaemonAnsweredError";
  constructor(readonly code: number, readonly msg: string, readonly details?: string) {
    super(`merbridge daemon refused the request (code ${code}): ${msg}${details ? ` (${details})` : ""}`);
  }
}

/** The daemon answered something that is not a valid response. */
export class DaemonProtocolError extends Error {
  override readonly name = "DaemonProtocolError";
  constructor(readonly socketPath: string, detail: string) {
    super(`merbridge daemon at ${socketPath} sent an invalid response: ${detail}`);
  }
}

function str(
  o: Record<string, unknown>,
  key: string,
  opts: { required: boolean; nonEmpty?: boolean },
): string {
  const v = o[key];
  if (v === undefined && !opts.required) return "";
  if (typeof v !== "string") throw new ProtocolError(`field "${key}" must be a string`);
  if (opts.nonEmpty && v === "") throw new ProtocolError(`field "${key}" must not be empty`);
  return v;
}

/** Validates a decoded request; throws ProtocolError naming the first field that is wrong. */
export function parseDaemonRequest(v: unknown): DaemonRequest {
  if (!isRecord(v)) throw new ProtocolError("request must be a JSON object");
  const op = v.op;
  if (typeof op !== "string" || !(DAEMON_OPS as readonly string[]).includes(op)) {
    throw new ProtocolError(`field "op" must be one of ${DAEMON_OPS.join(", ")}`);
  }
  const perContainer = op === "add" || op === "del" || op === "check";
  const req: DaemonRequest = {
    op: op as DaemonOp,
    containerId: str(v, "containerId", { required: perContainer, nonEmpty: perContainer }),
    // DEL may come after the namespace is gone, so only add and check need one.
    netns: str(v, "netns", {
      required: op === "add" || op === "check",
      nonEmpty: op === "add" || op === "check",
    }),
    ifName: str(v, "ifName", { required: perContainer }),
    podNamespace: str(v, "podNamespace", { required: false }),
    podName: str(v, "podName", { required: false }),
    cniVersion: str(v, "cniVersion", { required: true, nonEmpty: true }),
  };
  if (v.podUid !== undefined) req.podUid = str(v, "podUid", { required: true });
  if (v.podIps !== undefined) {
    if (!Array.isArray(v.podIps) || !v.podIps.every((x) => typeof x === "string")) {
      throw new ProtocolError(`field "podIps" must be an array of strings`);
    }
    req.podIps = v.podIps as string[];
  }
  if (v.validAttachments !== undefined) {
    if (!Array.isArray(v.validAttachments)) {
      throw new ProtocolError(`field "validAttachments" must be an array`);
    }
    req.validAttachments = v.validAttachments.map((a, i) => {
      if (!isRecord(a) || typeof a.containerId !== "string" || typeof a.ifName !== "string") {
        throw new ProtocolError(`validAttachments[${i}] must be {containerId: string, ifName: string}`);
      }
      return { containerId: a.containerId, ifName: a.ifName };
    });
  }
  if (op === "gc" && req.validAttachments === undefined) {
    throw new ProtocolError(`a gc request needs "validAttachments"`);
  }
  return req;
}

/** Validates a decoded response; throws ProtocolError naming what is wrong. */
export function parseDaemonResponse(v: unknown): DaemonResponse {
  if (!isRecord(v)) throw new ProtocolError("response must be a JSON object");
  if (v.ok === true) {
    const res: DaemonOkResponse = { ok: true };
    if (v.inMesh !== undefined) {
      if (typeof v.inMesh !== "boolean") throw new ProtocolError(`field "inMesh" must be a boolean`);
      res.inMesh = v.inMesh;
    }
    if (v.podIp !== undefined) {
      if (typeof v.podIp !== "string") throw new ProtocolError(`field "podIp" must be a string`);
      res.podIp = v.podIp;
    }
    if (v.detail !== undefined) {
      if (typeof v.detail !== "string") throw new ProtocolError(`field "detail" must be a string`);
      res.detail = v.detail;
    }
    if (v.pods !== undefined) {
      if (!Array.isArray(v.pods)) throw new ProtocolError(`field "pods" must be an array`);
      res.pods = v.pods;
    }
    return res;
  }
  if (v.ok === false) {
    if (typeof v.code !== "number" || !Number.isInteger(v.code) || v.code < 1) {
      throw new ProtocolError(`field "code" must be a positive integer`);
    }
    if (typeof v.msg !== "string") throw new ProtocolError(`field "msg" must be a string`);
    const res: DaemonErrorResponse = { ok: false, code: v.code, msg: v.msg };
    if (v.details !== undefined) {
      if (typeof v.details !== "string") throw new ProtocolError(`field "details" must be a string`);
      res.details = v.details;
    }
    return res;
  }
  throw new ProtocolError(`field "ok" must be true or false`);
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Writes every byte (a unix stream write may take part of them). */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/**
 * Reads up to the first newline (or end of stream). Returns null when the peer closed without
 * sending anything; throws ProtocolError when the line exceeds MAX_MESSAGE_BYTES.
 */
export async function readLine(conn: Deno.Conn, max = MAX_MESSAGE_BYTES): Promise<string | null> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(16 * 1024);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    const nl = buf.subarray(0, n).indexOf(0x0a);
    const take = nl >= 0 ? nl : n;
    total += take;
    if (total > max) throw new ProtocolError(`message longer than ${max} bytes`);
    chunks.push(buf.slice(0, take));
    if (nl >= 0) break;
  }
  if (total === 0 && chunks.length === 0) return null;
  return dec.decode(joinChunks(chunks));
}

function unreachableReason(err: unknown): UnreachableReason {
  if (err instanceof Deno.errors.NotFound) return "no-socket";
  if (err instanceof Deno.errors.ConnectionRefused) return "refused";
  if (err instanceof Deno.errors.PermissionDenied) return "permission";
  if (
    err instanceof Deno.errors.ConnectionReset || err instanceof Deno.errors.BrokenPipe ||
    err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted
  ) return "closed";
  return "io";
}

/**
 * Sends one request and returns the daemon's successful answer. Throws DaemonUnreachableError
 * when the daemon cannot be asked or does not answer within `timeoutMs`, DaemonAnsweredError when
 * it answers with an error, DaemonProtocolError when its answer is not valid.
 */
export async function callDaemon(
  socketPath: string,
  req: DaemonRequest,
  timeoutMs: number,
): Promise<DaemonOkResponse> {
  let conn: Deno.Conn | undefined;
  let timedOut = false;
  // Not setTimeout: its first use loads Deno's Node timers (about 10 ms, for every pod start). The
  // signal's timer keeps the process alive only while a listener is attached.
  const deadline = AbortSignal.timeout(timeoutMs);
  let onTimeout = () => {};
  const timeout = new Promise<never>((_, reject) => {
    onTimeout = () => {
      timedOut = true;
      reject(new DaemonUnreachableError(socketPath, "timeout", `no answer within ${timeoutMs} ms`));
    };
    deadline.addEventListener("abort", onTimeout, { once: true });
  });
  const exchange = (async () => {
    const c = await Deno.connect({ transport: "unix", path: socketPath });
    if (timedOut) {
      c.close();
      return null;
    }
    conn = c;
    await writeAll(c, enc.encode(JSON.stringify(req) + "\n"));
    return await readLine(c, MAX_RESPONSE_BYTES);
  })();
  // After a timeout the exchange fails on its closed connection; that outcome is already reported.
  exchange.catch(() => {});
  let line: string | null;
  try {
    line = await Promise.race([exchange, timeout]);
  } catch (err) {
    if (err instanceof DaemonUnreachableError) throw err;
    if (err instanceof ProtocolError) throw new DaemonProtocolError(socketPath, err.message);
    throw new DaemonUnreachableError(socketPath, unreachableReason(err), (err as Error).message);
  } finally {
    deadline.removeEventListener("abort", onTimeout);
    try {
      conn?.close();
    } catch {
      // Closed already.
    }
  }
  if (line === null) {
    throw new DaemonUnreachableError(
      socketPath,
      "closed",
      "the daemon closed the connection without answering",
    );
  }
  let decoded: unknown;
  try {
    decoded = JSON.parse(line);
  } catch (err) {
    throw new DaemonProtocolError(socketPath, `not JSON: ${(err as Error).message}`);
  }
  let res: DaemonResponse;
  try {
    res = parseDaemonResponse(decoded);
  } catch (err) {
    throw new DaemonProtocolError(socketPath, (err as Error).message);
  }
  if (!res.ok) throw new DaemonAnsweredError(res.code, res.msg, res.details);
  return res;
}
