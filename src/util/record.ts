// The shape check every reader of untrusted JSON or YAML starts with. It imports nothing, so the CNI
// plugin can share it without pulling in anything of the daemon.

/** True for a plain object (a JSON object, a YAML mapping): not null, not an array. */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
