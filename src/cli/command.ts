// The shape of a subcommand, shared by the dispatcher and each command module.
import { type FlagSpecs, type Parsed, parseFlags } from "./args.ts";
import { isLogLevel, type LogOptions } from "../log/logger.ts";

/** A subcommand as its module writes it: `run` gets the flags typed from the `flags` schema. */
export interface Command<S extends FlagSpecs> {
  name: string;
  summary: string;
  usage?: string;
  flags: S;
  positionals?: boolean;
  run(flags: Parsed<S>): Promise<number>;
}

/** A parsed command line, ready to run once logging is set up from its flags. */
export interface Invocation {
  logging: LogOptions;
  run(): Promise<number>;
}

/**
 * A subcommand as the dispatcher holds it: the schema's type stays inside `parse`, which parses with
 * that schema and hands `run` exactly what it declared, so the table needs no cast of any command.
 */
export interface CommandEntry {
  name: string;
  summary: string;
  usage?: string;
  flags: FlagSpecs;
  positionals?: boolean;
  /** Throws UsageError for flags the schema rejects. */
  parse(args: string[], env: Record<string, string | undefined>): Invocation;
}

export function command<S extends FlagSpecs>(cmd: Command<S>): CommandEntry {
  return {
    name: cmd.name,
    summary: cmd.summary,
    usage: cmd.usage,
    flags: cmd.flags,
    positionals: cmd.positionals,
    parse(args, env) {
      const flags = parseFlags(cmd.flags, args, { positionals: cmd.positionals, env });
      return { logging: logOptions(flags), run: () => cmd.run(flags) };
    },
  };
}

// Most commands carry LOG_FLAGS; one that does not (version) logs at info in the automatic format.
function logOptions(f: { readonly [flag: string]: unknown }): LogOptions {
  const level = f["log-level"];
  const format = f["log-format"];
  return {
    level: f.debug === true ? "debug" : typeof level === "string" && isLogLevel(level) ? level : "info",
    format: format === "json" || format === "text" ? format : "auto",
  };
}

/** Output helpers: tables for people, JSON for scripts. */
export function printTable(rows: (string | number)[][], header: string[]): void {
  const all = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...all.map((r) => String(r[i] ?? "").length)));
  for (const r of all) console.log(r.map((c, i) => String(c).padEnd(widths[i]!)).join("  ").trimEnd());
}

export function printJson(v: unknown): void {
  console.log(JSON.stringify(v, (_k, x) => typeof x === "bigint" ? x.toString() : x, 2));
}
