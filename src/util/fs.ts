// File-system checks shared across modules.

/** True when something exists at `path` (following links); false for a missing path or dangling link. */
export function pathExists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
