// The shape of a subcommand, shared by the dispatcher and each command module.
import type { FlagSpecs } from "./args.ts";

export interface Command<S extends FlagSpecs = FlagSpecs> {
  name: string;
  summary: string;
  usage?: string;
  flags: S;
  positionals?: boolean;
  // deno-lint-ignore no-explicit-any
  run(flags: any): Promise<number>;
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
