// How the demo talks: numbered, marked lines a newcomer can read top to bottom, and a tally that
// decides the exit code. A check is a list of expectations so a mismatch can say exactly what was
// expected and what happened instead of just "failed".

const COLOR = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
const paint = (code: string) => (s: string) => COLOR ? `\x1b[${code}m${s}\x1b[0m` : s;

export const bold = paint("1");
export const dim = paint("2");
export const green = paint("32");
export const red = paint("31");
export const cyan = paint("36");

const PASS = green("✓");
const FAIL = red("✗");

export interface Expectation {
  what: string;
  ok: boolean;
  expected: string;
  actual: string;
}

/** An expectation compared by value (strings, numbers, booleans). */
export function equal(what: string, expected: unknown, actual: unknown): Expectation {
  return { what, ok: expected === actual, expected: show(expected), actual: show(actual) };
}

/** An expectation that is not a plain comparison; `expected` describes the condition in words. */
export function holds(what: string, ok: boolean, expected: string, actual: unknown): Expectation {
  return { what, ok, expected, actual: show(actual) };
}

export function show(v: unknown): string {
  if (typeof v === "string") return v;
  if (v === undefined) return "nothing";
  return JSON.stringify(v, (_k, x) => typeof x === "bigint" ? x.toString() : x);
}

export class Ledger {
  passed = 0;
  readonly failures: string[] = [];

  header(lines: string[]): void {
    console.log(bold(lines[0] ?? ""));
    for (const l of lines.slice(1)) console.log(dim(l));
  }

  section(title: string): void {
    console.log(`\n${bold(cyan(title))}`);
  }

  /** Prints one marked line (plus indented details); returns whether every expectation held. */
  check(label: string, expectations: Expectation[], details: string[] = []): boolean {
    const bad = expectations.filter((e) => !e.ok);
    console.log(`  ${bad.length ? FAIL : PASS} ${label}`);
    for (const d of details) console.log(`      ${dim(d)}`);
    for (const e of bad) {
      console.log(`      ${red("expected")} ${e.what}: ${e.expected}`);
      console.log(`      ${red("but got")}  ${e.actual}`);
    }
    if (bad.length) this.failures.push(label);
    else this.passed++;
    return bad.length === 0;
  }

  fail(label: string, why: string): void {
    this.check(label, [{ what: "this step", ok: false, expected: "to complete", actual: why }]);
  }

  info(line: string): void {
    console.log(`    ${line}`);
  }
}
