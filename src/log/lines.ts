// Log levels, records and the JSON line format (src/log/logger.ts writes them).

/** The levels in increasing severity. */
export const LOG_LEVELS = ["trace", "debug", "info", "warning", "error", "fatal"] as const;

export type LogLevel = (typeof LOG_LEVELS)[number];

export function isLogLevel(v: string): v is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(v);
}

/** One log record: what a JSON line is made of. */
export interface LineRecord {
  readonly timestamp: number;
  readonly level: LogLevel;
  readonly category: readonly string[];
  /** Template text and values, alternating (text at even indexes). */
  readonly message: readonly unknown[];
  readonly properties: Record<string, unknown>;
}

/** A record's message as text: the template's text with its values (as JSON) in their places. */
export function messageText(message: readonly unknown[]): string {
  return message.map((m) => typeof m === "string" ? m : JSON.stringify(m instanceof Error ? m.message : m))
    .join("");
}

/** One record as a JSON line: ts, level, logger, msg, then the properties that do not clash. */
export function jsonLine(record: LineRecord): string {
  const msg = messageText(record.message);
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
