// Named points where a process can be made to die (SIGKILL, no clean-up) for the fault-injection
// tests: MERBRIDGE_CRASH_AT="<point>[:<n>]" kills the process at the n-th time (default 1st) it
// passes <point>. Unset, a crash point costs one comparison.

let armed: { point: string; left: number } | null | undefined;

function arm(): { point: string; left: number } | null {
  let spec: string | undefined;
  try {
    spec = Deno.env.get("MERBRIDGE_CRASH_AT");
  } catch {
    spec = undefined; // no env permission: never armed
  }
  if (!spec) return null;
  // Point names contain ':' themselves; only a numeric last part is a count.
  const m = /^(.*):(\d+)$/.exec(spec);
  return m ? { point: m[1]!, left: Math.max(1, Number(m[2])) } : { point: spec, left: 1 };
}

export function crashPoint(point: string): void {
  armed ??= arm();
  if (armed === null || armed.point !== point) return;
  if (--armed.left > 0) return;
  Deno.kill(Deno.pid, "SIGKILL");
}
