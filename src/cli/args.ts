// Flag parsing on node:util parseArgs (strict), with the things a node agent's flags need on top:
// booleans that also accept `--flag=true|false` (the DaemonSet flips `--cni-mode=false` with sed),
// typed values, choices, and errors that name the flag and the bad value.
import { parseArgs } from "node:util";

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

interface FlagBase {
  description: string;
  /** Environment variable consulted when the flag is absent. */
  env?: string;
}
export interface StringFlag extends FlagBase {
  type: "string";
  default?: string;
  choices?: readonly string[];
  placeholder?: string;
}
export interface BoolFlag extends FlagBase {
  type: "boolean";
  default?: boolean;
}
export interface IntFlag extends FlagBase {
  type: "int";
  default?: number;
  min?: number;
  max?: number;
}
export type FlagSpec = StringFlag | BoolFlag | IntFlag;
export type FlagSpecs = Record<string, FlagSpec>;

// A flag's value as a command sees it: a string flag with choices is the union of its choices.
type ValueOf<F extends FlagSpec> = F extends BoolFlag ? boolean
  : F extends IntFlag ? number
  : F extends { choices: readonly (infer C extends string)[] } ? C
  : string;
/** The flags of schema `S` as parsed: a flag with a default always has a value. */
export type Parsed<S extends FlagSpecs> =
  & { [K in keyof S]: S[K] extends { default: unknown } ? ValueOf<S[K]> : ValueOf<S[K]> | undefined }
  & { _: string[] };

function toBool(flag: string, v: string): boolean {
  if (/^(true|1|yes)$/i.test(v)) return true;
  if (/^(false|0|no)$/i.test(v)) return false;
  throw new UsageError(`--${flag}: expected true or false, got ${JSON.stringify(v)}`);
}

function convert(flag: string, spec: FlagSpec, raw: string): string | number | boolean {
  switch (spec.type) {
    case "boolean":
      return toBool(flag, raw);
    case "int": {
      if (!/^-?\d+$/.test(raw)) {
        throw new UsageError(`--${flag}: expected an integer, got ${JSON.stringify(raw)}`);
      }
      const n = Number(raw);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
        throw new UsageError(`--${flag}: ${n} is outside ${spec.min ?? "-inf"}..${spec.max ?? "inf"}`);
      }
      return n;
    }
    case "string":
      if (spec.choices && !spec.choices.includes(raw)) {
        throw new UsageError(`--${flag}: ${JSON.stringify(raw)} is not one of ${spec.choices.join(", ")}`);
      }
      return raw;
  }
}

export function parseFlags<S extends FlagSpecs>(
  specs: S,
  argv: string[],
  opts: { positionals?: boolean; env?: Record<string, string | undefined> } = {},
): Parsed<S> {
  // A bare boolean flag means true; parseArgs only knows string-typed options, so spell it out.
  const args = argv.map((a) => {
    const m = /^--([^=]+)$/.exec(a);
    return m && specs[m[1]!]?.type === "boolean" ? `${a}=true` : a;
  });
  const options: Record<string, { type: "string" }> = Object.fromEntries(
    Object.keys(specs).map((k) => [k, { type: "string" }]),
  );
  let parsed;
  try {
    parsed = parseArgs({ args, strict: true, allowPositionals: opts.positionals ?? false, options });
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^TypeError \[[A-Z_]+\]: /, ""));
  }
  const out: Record<string, unknown> = { _: parsed.positionals };
  const env = opts.env ?? {};
  for (const [name, spec] of Object.entries(specs)) {
    const raw = parsed.values[name] ?? (spec.env ? env[spec.env] : undefined);
    out[name] = raw !== undefined ? convert(name, spec, raw) : spec.default;
  }
  return out as Parsed<S>;
}

export function helpText(usage: string, summary: string, specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([name, s]) => {
    const val = s.type === "boolean"
      ? "[=true|false]"
      : s.type === "int"
      ? "=N"
      : `=${s.placeholder ?? "VALUE"}`;
    const dflt = s.default !== undefined && s.default !== "" ? ` (default ${JSON.stringify(s.default)})` : "";
    const choices = s.type === "string" && s.choices ? ` [${s.choices.join("|")}]` : "";
    const env = s.env ? ` [env ${s.env}]` : "";
    return [`  --${name}${val}`, `${s.description}${choices}${dflt}${env}`];
  });
  const w = Math.max(...rows.map((r) => r[0]!.length), 10) + 2;
  return `usage: ${usage}\n\n${summary}\n\nflags:\n${rows.map(([a, b]) => a!.padEnd(w) + b).join("\n")}\n`;
}
