// The plugin's logging: the daemon's JSON lines (src/log/lines.ts), written synchronously to stderr
// and the configured file. The plugin runs once per pod start and writes a line or two; the logging
// library the daemon uses would cost it a Node compat start and a module graph (about 25 ms of CPU
// per run, measured), so the plugin path never loads it.
import { jsonLine, LOG_LEVELS, type LogLevel, messageText } from "../src/log/lines.ts";
import { writeAllSync } from "../src/util/bytes.ts";

export interface PluginLogOptions {
  level: LogLevel;
  /** Also appended to, as JSON lines (0600). */
  file?: string;
}

const enc = new TextEncoder();
let current: { level: LogLevel; file?: string } | undefined;

/** Configures the plugin's logging; before this nothing is written. */
export function setupPluginLogging(opts: PluginLogOptions): void {
  current = { level: opts.level, file: opts.file };
}

/** Nothing is buffered; kept so the plugin ends its logging where it would flush a library's. */
export function shutdownPluginLogging(): void {
  current = undefined;
}

/** Splits "{name} text" into text and values, alternating, as the library's records carry them. */
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

function textLine(ts: number, level: LogLevel, category: readonly string[], message: unknown[]): string {
  return `${new Date(ts).toISOString()} [${level.slice(0, 3).toUpperCase()}] ${category.join("·")}: ${
    messageText(message)
  }\n`;
}

function emit(
  category: readonly string[],
  level: LogLevel,
  template: string,
  props: Record<string, unknown>,
) {
  const c = current;
  if (!c || LOG_LEVELS.indexOf(level) < LOG_LEVELS.indexOf(c.level)) return;
  const record = {
    timestamp: Date.now(),
    level,
    category,
    message: render(template, props),
    properties: props,
  };
  const json = jsonLine(record);
  try {
    const stderr = Deno.stderr.isTerminal()
      ? textLine(record.timestamp, level, category, record.message)
      : json;
    writeAllSync(Deno.stderr, enc.encode(stderr));
  } catch {
    // Logging is for people; it must not decide whether a pod starts.
  }
  if (c.file) {
    try {
      Deno.writeFileSync(c.file, enc.encode(json), { append: true, create: true, mode: 0o600 });
    } catch {
      // As above.
    }
  }
}

export interface PluginLogger {
  debug(template: string, props?: Record<string, unknown>): void;
  info(template: string, props?: Record<string, unknown>): void;
  warn(template: string, props?: Record<string, unknown>): void;
  error(template: string, props?: Record<string, unknown>): void;
}

export function pluginLogger(...category: string[]): PluginLogger {
  const cat = ["merbridge", ...category];
  return {
    debug: (t, p = {}) => emit(cat, "debug", t, p),
    info: (t, p = {}) => emit(cat, "info", t, p),
    warn: (t, p = {}) => emit(cat, "warning", t, p),
    error: (t, p = {}) => emit(cat, "error", t, p),
  };
}
