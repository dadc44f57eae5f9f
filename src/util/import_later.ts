// Deno resolves every module an entry point reaches before the first line runs, dynamic imports
// with a literal specifier included, and an npm package anywhere among them starts its npm
// resolver. For the plugin, which runs on every pod start, that was 6-7 ms of CPU spent on modules
// that only the CLI or the daemon-less membership check ever loads. A module imported through here
// is resolved when it is imported, and not before.
//
// `deno compile` cannot see these imports either: every module imported this way is listed in the
// compile task's --include flags (a unit test keeps the two in step).

/** Imports `url` (build it as `new URL("./x.ts", import.meta.url)`) as a module typed `T`. */
export function importLater<T>(url: URL): Promise<T> {
  return import(url.href) as Promise<T>;
}
