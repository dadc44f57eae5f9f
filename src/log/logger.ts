// Logging for every mode. Logs always go to stderr: in CNI-plugin mode stdout is reserved
// for the CNI result, and a daemon's stderr is what kubectl logs shows anyway.
import {
  configure,
  dispose,
  getLogger as ltGetLogger,
  getStreamSink,
  getTextFormatter,
  type Logger,
  type LogRecord,
  reset,
  type Sink,
} from "@logtape/logtape";

import { jsonLine, type LogLevel } from "./lines.ts";

export type { Logger, LogLevel };
export { isLogLevel, LOG_LEVELS } from "./lines.ts";

export interface LogOptions {
  level: LogLevel;
  /** "json" for JSON lines, "text" for humans; "auto" picks json when stderr is not a TTY. */
  format?: "json" | "text" | "auto";
  /** Extra file (append) receiving the same lines, e.g. the CNI plugin's log file. */
  file?: string;
}

const textFormatter = getTextFormatter({ timestamp: "date-time-timezone" });

let configured = false;

/** Configures the root "merbridge" logger. Safe to call more than once (reconfigures). */
export async function setupLogging(opts: LogOptions): Promise<void> {
  const fmt = opts.format ?? "auto";
  const json = fmt === "json" || (fmt === "auto" && !Deno.stderr.isTerminal());
  const formatter = json ? jsonLine : textFormatter;
  const sinks: Record<string, Sink> = {
    stderr: getStreamSink(Deno.stderr.writable, { formatter, closeStream: false }),
  };
  if (opts.file) sinks.file = fileSink(opts.file, jsonLine);
  await configure({
    reset: true,
    sinks,
    loggers: [
      { category: ["merbridge"], lowestLevel: opts.level, sinks: Object.keys(sinks) },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
  configured = true;
}

function fileSink(path: string, formatter: (r: LogRecord) => string): Sink {
  const enc = new TextEncoder();
  return (record: LogRecord) => {
    try {
      Deno.writeFileSync(path, enc.encode(formatter(record)), { append: true, create: true, mode: 0o600 });
    } catch {
      // A log file we cannot write must never fail the operation being logged.
    }
  };
}

/** Flushes sinks; call before exiting. */
export async function shutdownLogging(): Promise<void> {
  if (configured) await dispose();
  configured = false;
}

export async function resetLogging(): Promise<void> {
  await reset();
  configured = false;
}

export function getLogger(...category: string[]): Logger {
  return ltGetLogger(["merbridge", ...category]);
}
