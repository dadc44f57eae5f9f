import assert from "node:assert/strict";
import { LIBBPF_SYMBOLS } from "../../src/ffi/libbpf_symbols.ts";
import { LIBC_SYMBOLS } from "../../src/ffi/libc_symbols.ts";
import {
  libbpf,
  LIBBPF_SPEC,
  libc,
  libraryCandidates,
  LibraryLoadError,
  type LibrarySpec,
  loadedLibraryPaths,
  openLibrary,
} from "../../src/ffi/library.ts";
import { thrown } from "./helpers.ts";

const env = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("library resolution", async (t) => {
  await t.step("the environment override comes first, then the candidates, without duplicates", () => {
    assert.deepEqual(
      libraryCandidates(LIBBPF_SPEC, env({ LIBBPF_PATH: "/opt/libbpf.so.1" })),
      ["/opt/libbpf.so.1", ...LIBBPF_SPEC.candidates],
    );
    assert.deepEqual(libraryCandidates(LIBBPF_SPEC, env({})), [...LIBBPF_SPEC.candidates]);
    assert.deepEqual(
      libraryCandidates(LIBBPF_SPEC, env({ LIBBPF_PATH: "libbpf.so.1" })),
      [...LIBBPF_SPEC.candidates],
    );
  });

  await t.step("the default candidates start with the soname and cover the distro directories", () => {
    assert.equal(LIBBPF_SPEC.candidates[0], "libbpf.so.1");
    for (const dir of ["/usr/lib/x86_64-linux-gnu/", "/lib/x86_64-linux-gnu/", "/usr/lib64/", "/usr/lib/"]) {
      assert.ok(LIBBPF_SPEC.candidates.includes(`${dir}libbpf.so.1`), dir);
    }
  });

  await t.step("when nothing loads, the error lists every path tried with its failure", () => {
    const spec: LibrarySpec = {
      name: "libbpf",
      envVar: "LIBBPF_PATH",
      candidates: ["/nonexistent/a/libbpf.so.1", "/nonexistent/b/libbpf.so.1"],
    };
    const err = thrown(() => openLibrary(spec, LIBBPF_SYMBOLS, env({ LIBBPF_PATH: "/bogus/libbpf.so.9" })));
    assert.ok(err instanceof LibraryLoadError);
    assert.deepEqual(
      err.attempts.map((a) => a.path),
      ["/bogus/libbpf.so.9", "/nonexistent/a/libbpf.so.1", "/nonexistent/b/libbpf.so.1"],
    );
    for (const a of err.attempts) {
      assert.ok(a.reason.length > 0);
      assert.ok(err.message.includes(`${a.path}: `), `message names ${a.path}`);
    }
    assert.match(err.message, /set LIBBPF_PATH/);
  });

  await t.step("a library without the required symbols counts as a failure, with the reason", () => {
    // libc loads fine but has none of libbpf's functions: an ABI mismatch, not a missing file.
    const spec: LibrarySpec = { name: "libbpf", envVar: "LIBBPF_PATH", candidates: ["libc.so.6"] };
    const err = thrown(() => openLibrary(spec, LIBBPF_SYMBOLS, env({})));
    assert.ok(err instanceof LibraryLoadError);
    assert.equal(err.attempts.length, 1);
    // The reason names one of libbpf's symbols that libc lacks (which one depends on the order the
    // runtime registers them in).
    const missing = /undefined symbol: (\w+)/.exec(err.attempts[0]?.reason ?? "")?.[1];
    assert.ok(missing && Object.hasOwn(LIBBPF_SYMBOLS, missing), err.attempts[0]?.reason);
  });

  await t.step("a bogus override falls back to the first candidate that loads", () => {
    const spec: LibrarySpec = {
      name: "libc",
      envVar: "LIBC_PATH",
      candidates: ["/nonexistent/libc.so.6", "libc.so.6"],
    };
    const opened = openLibrary(spec, LIBC_SYMBOLS, env({ LIBC_PATH: "/bogus/libc.so.6" }));
    try {
      assert.equal(opened.path, "libc.so.6");
      assert.equal(opened.attempts.length, 2);
      assert.ok(opened.library.symbols.getpid() > 0);
    } finally {
      opened.library.close();
    }
  });

  await t.step("the process-wide singletons open lazily and report where they came from", () => {
    assert.equal(libc().getpid(), Deno.pid);
    assert.ok(libbpf().libbpf_num_possible_cpus() >= 1);
    const paths = loadedLibraryPaths();
    assert.ok(paths.libbpf?.includes("libbpf"));
    assert.ok(paths.libc?.includes("libc"));
  });
});
