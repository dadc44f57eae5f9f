// Before the first line runs, Deno loads and parses every module an entry point reaches, dynamic
// imports with a literal specifier included. Through main.ts that was the CLI's whole graph, about
// a hundred modules with node: ones among them, on every run of the plugin: 6 ms of CPU (user +
// sys, median of 150 runs) that `deno run main.ts` as the plugin no longer spends. A module
// imported through here is resolved when it is imported, and not before.
//
// `deno compile` cannot see these imports either: every module imported this way is listed in the
// compile task's --include flags (a unit test keeps the two in step).

/** Imports `url` (build it as `new URL("./x.ts", import.meta.url)`) as a module typed `T`. */
export function importLater<T>(url: URL): Promise<T> {
  return import(url.href) as Promise<T>;
}
