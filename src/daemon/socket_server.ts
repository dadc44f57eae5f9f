// The daemon's side of the local API: serves the plugin protocol (cni/protocol.ts) on the root-only
// unix socket, one connection per request, each validated before the handler sees it.
import { dirname } from "node:path";
import {
  type DaemonRequest,
  type DaemonResponse,
  parseDaemonRequest,
  ProtocolError,
  readLine,
  writeAll,
} from "../../cni/protocol.ts";
import { getLogger } from "../log/logger.ts";

const log = getLogger("cni", "server");
const enc = new TextEncoder();

/** A client that connects and then stalls must not hold a server connection forever. */
const SERVER_READ_TIMEOUT_MS = 10_000;

/** How long close() lets in-flight requests finish before cutting their connections. */
const CLOSE_GRACE_MS = 2_000;

export type DaemonHandler = (req: DaemonRequest) => Promise<DaemonResponse>;

/** Half-closes and discards what the peer still sends, until it closes or `ms` pass. */
async function drain(conn: Deno.Conn, ms: number): Promise<void> {
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch {
      // Finished meanwhile.
    }
  }, ms);
  try {
    await conn.closeWrite();
    const buf = new Uint8Array(64 * 1024);
    while ((await conn.read(buf)) !== null) {
      // Discarded.
    }
  } catch {
    // The peer went away, or the deadline closed the connection.
  } finally {
    clearTimeout(timer);
  }
}

export interface DaemonSocketServer {
  /** Stops accepting, lets in-flight requests finish briefly, and removes the socket file. */
  close(): Promise<void>;
}

/** Malformed requests are answered with the spec's "decode failure" code. */
const MALFORMED_CODE = 6;
/** A handler that throws is treated as a transient failure: the runtime retries sandbox creation. */
const HANDLER_FAILED_CODE = 11;

/**
 * Serves the protocol on `path`. Creates the parent directory (0700) if needed, replaces a
 * stale socket file left by a previous daemon, and restricts the socket to its owner (0600):
 * whoever can write to it can change how pods' traffic is intercepted.
 */
export function serveDaemonSocket(path: string, handler: DaemonHandler): DaemonSocketServer {
  const dir = dirname(path);
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  Deno.chmodSync(dir, 0o700);
  try {
    const st = Deno.lstatSync(path);
    if (!st.isSocket) {
      throw new Error(`cannot serve the CNI socket at ${path}: a non-socket file is in the way`);
    }
    // Only this node's daemon serves here; a socket file at start is a previous instance's leftover.
    Deno.removeSync(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const listener = Deno.listen({ transport: "unix", path });
  Deno.chmodSync(path, 0o600);
  const socketIno = Deno.lstatSync(path).ino;

  const active = new Set<Deno.Conn>();
  const inflight = new Set<Promise<void>>();

  const serveOne = async (conn: Deno.Conn): Promise<void> => {
    const stall = setTimeout(() => {
      try {
        conn.close();
      } catch {
        // Finished meanwhile.
      }
    }, SERVER_READ_TIMEOUT_MS);
    let res: DaemonResponse;
    let line: string | null;
    try {
      line = await readLine(conn);
    } catch (err) {
      clearTimeout(stall);
      if (err instanceof ProtocolError) {
        res = { ok: false, code: MALFORMED_CODE, msg: `malformed request: ${err.message}` };
        await reply(conn, res);
        // Closing with unread input would reset the connection and lose the answer, so the
        // rest is read and dropped, for a bounded time.
        await drain(conn, SERVER_READ_TIMEOUT_MS);
      } else {
        log.debug("CNI client connection failed while reading: {error}", { error: (err as Error).message });
      }
      return;
    }
    clearTimeout(stall);
    if (line === null) return;
    let decoded: unknown;
    try {
      decoded = JSON.parse(line);
    } catch (err) {
      await reply(conn, {
        ok: false,
        code: MALFORMED_CODE,
        msg: `malformed request: not JSON: ${(err as Error).message}`,
      });
      return;
    }
    let req: DaemonRequest;
    try {
      req = parseDaemonRequest(decoded);
    } catch (err) {
      await reply(conn, {
        ok: false,
        code: MALFORMED_CODE,
        msg: `malformed request: ${(err as Error).message}`,
      });
      return;
    }
    try {
      res = await handler(req);
    } catch (err) {
      log.error("CNI {op} for container {containerId} failed: {error}", {
        op: req.op,
        containerId: req.containerId,
        error: (err as Error).message,
      });
      res = {
        ok: false,
        code: HANDLER_FAILED_CODE,
        msg: `merbridge daemon failed to handle ${req.op}`,
        details: (err as Error).message,
      };
    }
    await reply(conn, res);
  };

  const reply = async (conn: Deno.Conn, res: DaemonResponse): Promise<void> => {
    try {
      await writeAll(conn, enc.encode(JSON.stringify(res) + "\n"));
    } catch (err) {
      log.debug("could not answer a CNI client: {error}", { error: (err as Error).message });
    }
  };

  const acceptLoop = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) return;
        log.warn("accepting a CNI client failed: {error}", { error: (err as Error).message });
        continue;
      }
      active.add(conn);
      const p = serveOne(conn).catch((err) => {
        log.warn("a CNI client connection failed: {error}", { error: (err as Error).message });
      }).finally(() => {
        active.delete(conn);
        try {
          conn.close();
        } catch {
          // Closed by the stall timer or by close().
        }
        inflight.delete(p);
      });
      inflight.add(p);
    }
  })();

  let closing: Promise<void> | undefined;
  return {
    close(): Promise<void> {
      closing ??= (async () => {
        try {
          listener.close();
        } catch {
          // Already closed.
        }
        await acceptLoop;
        if (inflight.size > 0) {
          let graceTimer: ReturnType<typeof setTimeout> | undefined;
          const grace = new Promise<void>((r) => graceTimer = setTimeout(r, CLOSE_GRACE_MS));
          await Promise.race([Promise.allSettled([...inflight]), grace]);
          clearTimeout(graceTimer);
          for (const c of active) {
            try {
              c.close();
            } catch {
              // Finished meanwhile.
            }
          }
          await Promise.allSettled([...inflight]);
        }
        // Another daemon may already have replaced the file: only remove the one we created.
        try {
          if (Deno.lstatSync(path).ino === socketIno) Deno.removeSync(path);
        } catch (err) {
          if (!(err instanceof Deno.errors.NotFound)) throw err;
        }
      })();
      return closing;
    },
  };
}
