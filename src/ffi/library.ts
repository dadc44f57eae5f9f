// Finds and opens the native libraries once per process. An operator can point the agent at a
// specific build with LIBBPF_PATH / LIBC_PATH; otherwise we try the soname (the dynamic loader's own
// search) and then the directories distributions install into. When nothing works the error lists
// every path with its own failure, because "library not found" alone does not tell a missing package
// from an ABI mismatch (a libbpf older than the symbols we need).
import { getLogger } from "../log/logger.ts";
import { installLibbpfPrint } from "./libbpf_log.ts";
import { LIBBPF_SYMBOLS, type LibbpfSymbols } from "./libbpf_symbols.ts";
import { LIBC_SYMBOLS, type LibcSymbols } from "./libc_symbols.ts";

export interface LibrarySpec {
  /** Human name used in errors and logs, e.g. "libbpf". */
  name: string;
  /** Environment variable whose value, when set, is tried before the candidates. */
  envVar: string;
  candidates: readonly string[];
}

export const LIBBPF_SPEC: LibrarySpec = {
  name: "libbpf",
  envVar: "LIBBPF_PATH",
  candidates: [
    "libbpf.so.1",
    "/usr/lib/x86_64-linux-gnu/libbpf.so.1",
    "/lib/x86_64-linux-gnu/libbpf.so.1",
    "/usr/lib/aarch64-linux-gnu/libbpf.so.1",
    "/lib/aarch64-linux-gnu/libbpf.so.1",
    "/usr/lib64/libbpf.so.1",
    "/usr/lib/libbpf.so.1",
  ],
};

export const LIBC_SPEC: LibrarySpec = {
  name: "libc",
  envVar: "LIBC_PATH",
  candidates: [
    "libc.so.6",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/aarch64-linux-gnu/libc.so.6",
    "/usr/lib/aarch64-linux-gnu/libc.so.6",
    "/usr/lib64/libc.so.6",
    "/usr/lib/libc.so.6",
  ],
};

export interface LibraryAttempt {
  path: string;
  reason: string;
}

export class LibraryLoadError extends Error {
  override name = "LibraryLoadError";
  constructor(readonly library: string, readonly envVar: string, readonly attempts: LibraryAttempt[]) {
    super(
      `cannot load ${library}; tried ${attempts.length} path(s) (set ${envVar} to choose one):\n` +
        attempts.map((a) => `  ${a.path}: ${a.reason}`).join("\n"),
    );
  }
}

/** The paths to try, in order: the environment override first, then the spec's candidates. */
export function libraryCandidates(
  spec: LibrarySpec,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): string[] {
  const override = env(spec.envVar)?.trim();
  const paths = override ? [override, ...spec.candidates] : [...spec.candidates];
  return [...new Set(paths)];
}

export interface OpenedLibrary<S extends Deno.ForeignLibraryInterface> {
  library: Deno.DynamicLibrary<S>;
  path: string;
  attempts: LibraryAttempt[];
}

/** Opens the first candidate that loads with every symbol of `symbols`; throws LibraryLoadError. */
export function openLibrary<const S extends Deno.ForeignLibraryInterface>(
  spec: LibrarySpec,
  symbols: S,
  env?: (name: string) => string | undefined,
): OpenedLibrary<S> {
  const attempts: LibraryAttempt[] = [];
  for (const path of libraryCandidates(spec, env)) {
    try {
      const library = Deno.dlopen(path, symbols);
      if (attempts.length > 0) {
        getLogger("ffi").warn("{library}: using {path} after {failed} failed attempt(s): {attempts}", {
          library: spec.name,
          path,
          failed: attempts.length,
          attempts: attempts.map((a) => `${a.path}: ${a.reason}`).join("; "),
        });
      }
      return { library, path, attempts };
    } catch (err) {
      attempts.push({ path, reason: err instanceof Error ? err.message : String(err) });
    }
  }
  throw new LibraryLoadError(spec.name, spec.envVar, attempts);
}

// Never closed: libbpf keeps our print callback, and handles it returned stay valid only while the
// library is mapped.
let libbpfLib: OpenedLibrary<typeof LIBBPF_SYMBOLS> | undefined;
let libcLib: OpenedLibrary<typeof LIBC_SYMBOLS> | undefined;

/** libbpf's functions, opening the library (and routing its messages to our logger) on first use. */
export function libbpf(): LibbpfSymbols {
  if (!libbpfLib) {
    const opened = openLibrary(LIBBPF_SPEC, LIBBPF_SYMBOLS);
    installLibbpfPrint(opened.library.symbols, libc());
    libbpfLib = opened;
  }
  return libbpfLib.library.symbols;
}

/** libc's functions, opening the library on first use. */
export function libc(): LibcSymbols {
  libcLib ??= openLibrary(LIBC_SPEC, LIBC_SYMBOLS);
  return libcLib.library.symbols;
}

/** Where each library was loaded from, for status output; undefined until first use. */
export function loadedLibraryPaths(): { libbpf?: string; libc?: string } {
  return { libbpf: libbpfLib?.path, libc: libcLib?.path };
}
