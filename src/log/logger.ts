// Logging for every mode, the daemon's and the CLI's as well as the CNI plugin's: records go to stderr
// (JSON lines, or text on a terminal) and, when asked, to a file as JSON lines. Written synchronously:
// a line is out before the call returns, so a plugin that exits or a daemon that is killed right after
// has said what it did. No node: or npm: module is loaded here; a logging library cost every start
// 15-25 ms and 4 MiB (its npm resolution and the Node compat layer), the plugin's on every pod start.
import { writeAllSync } from "../util/bytes.ts";
import { jsonLine, type LineRecord, LOG_LEVELS, type LogLevel, messageText } from "./lines.ts";

export type { LineRecord, LogLevel };
export { isLogLevel, LOG_LEVELS } from "./lines.ts";

export interface LogOptions {
  level: LogLevel;
  /** "json" for JSON lines, "text" for humans; "auto" picks json when stderr is not a TTY. */
  format?: "json" | "text" | "auto";
  /** Extra file (append, 0600) receiving the same records as JSON lines, e.g. the plugin's log file. */
  file?: string;
}

export interface Logger {
  debug(template: string, props?: Record<string, unknown>): void;
  info(template: string, props?: Record<string, unknown>): void;
  warn(template: string, props?: Record<string, unknown>): void;
  error(template: string, props?: Record<string, unknown>): void;
}

type Sink = (record: LineRecord) => void;

interface Config {
  level: LogLevel;
  /** Only records whose category starts with this one (a test capturing one module's records). */
  category: readonly string[];
  sinks: Sink[];
}

/** Unconfigured, nothing is written: a library user decides where our lines go. */
let config: Config | undefined;

const enc = new TextEncoder();

function textLine(r: LineRecord): string {
  const d = new Date(r.timestamp).toISOString();
  return `${d.slice(0, 10)} ${d.slice(11, 23)} +00:00 [${LEVEL_TAGS[r.level]}] ${r.category.join("·")}: ${
    messageText(r.message)
  }\n`;
}

const LEVEL_TAGS: Record<LogLevel, string> = {
  trace: "TRC",
  debug: "DBG",
  info: "INF",
  warning: "WRN",
  error: "ERR",
  fatal: "FTL",
};

function stderrSink(json: boolean): Sink {
  return (r) => writeAllSync(Deno.stderr, enc.encode(json ? jsonLine(r) : textLine(r)));
}

function fileSink(path: string): Sink {
  return (r) =>
    Deno.writeFileSync(path, enc.encode(jsonLine(r)), { append: true, create: true, mode: 0o600 });
}

/** Configures where records go and from which level on; a second call replaces the first. */
export function setupLogging(opts: LogOptions): void {
  const fmt = opts.format ?? "auto";
  const json = fmt === "json" || (fmt === "auto" && !Deno.stderr.isTerminal());
  const sinks = [stderrSink(json)];
  if (opts.file) sinks.push(fileSink(opts.file));
  config = { level: opts.level, category: ["merbridge"], sinks };
}

/** Stops writing; nothing is buffered, so nothing is lost. */
export function shutdownLogging(): void {
  config = undefined;
}

/**
 * Collects the records of `category` (under "merbridge") from `level` on, instead of writing any
 * record, until disposed; then the previous configuration is back. For tests.
 */
export function captureLogs(
  category: string[],
  level: LogLevel = "debug",
): { records: LineRecord[] } & Disposable {
  const previous = config;
  const records: LineRecord[] = [];
  config = { level, category: ["merbridge", ...category], sinks: [(r) => void records.push(r)] };
  return {
    records,
    [Symbol.dispose]() {
      config = previous;
    },
  };
}

/** Splits "{name} text" into text and values, alternating, as LineRecord.message holds them. */
function render(template: string, props: Record<string, unknown>): unknown[] {
  const out: unknown[] = [];
  let last = 0;
  for (const m of template.matchAll(/\{([A-Za-z0-9_]+)\}/g)) {
    out.push(template.slice(last, m.index), props[m[1]!]);
    last = m.index + m[0].length;
  }
  out.push(template.slice(last));
  return out;
}

function emit(
  category: readonly string[],
  level: LogLevel,
  template: string,
  props: Record<string, unknown>,
) {
  const c = config;
  if (!c || LOG_LEVELS.indexOf(level) < LOG_LEVELS.indexOf(c.level)) return;
  if (c.category.some((part, i) => category[i] !== part)) return;
  const record: LineRecord = {
    timestamp: Date.now(),
    level,
    category,
    message: render(template, props),
    properties: props,
  };
  for (const sink of c.sinks) {
    try {
      sink(record);
    } catch {
      // Logging is for people: a full disk or a closed stderr must not fail what is being logged.
    }
  }
}

export function getLogger(...category: string[]): Logger {
  const cat = ["merbridge", ...category];
  return {
    debug: (t, p = {}) => emit(cat, "debug", t, p),
    info: (t, p = {}) => emit(cat, "info", t, p),
    warn: (t, p = {}) => emit(cat, "warning", t, p),
    error: (t, p = {}) => emit(cat, "error", t, p),
  };
}
