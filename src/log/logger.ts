// Logging for every mode. Logs always go to stderr: in CNI-plugin mode stdout is reserved
// for the CNI result, and a daemon's stderr is what kubectl logs shows anyway.
import {
  configure,
  dispose,
  getLogger as ltGetLogger,
  getStreamSink,
  getTextFormatter,
  type Logger,
  type LogLevel,
  type LogRecord,
  reset,
  type Sink,
} from "@logtape/logtape";

export type { Logger, LogLevel };

export const LOG_LEVELS = ["trace", "debug", "info", "warning", "error", "fatal"] as const;

export function isLogLevel(v: string): v is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(v);
}

export interface LogOptions {
  level: LogLevel;
  /** "json" for JSON lines, "text" for humans; "auto" picks json when stderr is not a TTY. */
  format?: "json" | "text" | "auto";
  /** Extra file (append) receiving the same lines, e.g. the CNI plugin's log file. */
  file?: string;
}

function jsonFormatter(record: LogRecord): string {
  const msg = record.message.map((m) => typeof m === "string" ? m : JSON.stringify(m)).join("");
  const line: Record<string, unknown> = {
    ts: new Date(record.timestamp).toISOString(),
    level: record.level,
    logger: record.category.join("."),
    msg,
  };
  for (const [k, v] of Object.entries(record.properties)) {
    if (!(k in line)) line[k] = v instanceof Error ? v.message : v;
  }
  return JSON.stringify(line) + "\n";
}

const textFormatter = getTextFormatter({ timestamp: "date-time-timezone" });

let configured = false;

/** Configures the root "merbridge" logger. Safe to call more than once (reconfigures). */
export async function setupLogging(opts: LogOptions): Promise<void> {
  const fmt = opts.format ?? "auto";
  const json = fmt === "json" || (fmt === "auto" && !Deno.stderr.isTerminal());
  const formatter = json ? jsonFormatter : textFormatter;
  const sinks: Record<string, Sink> = {
    stderr: getStreamSink(Deno.stderr.writable, { formatter, closeStream: false }),
  };
  if (opts.file) sinks.file = fileSink(opts.file, jsonFormatter);
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
