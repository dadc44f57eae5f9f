// Compiles the benchmark's C peers (bench/native) at run time, into a directory every test uid can
// read and execute: the proxy runs as the mesh's proxy uid and the clients as an application uid.
import { run, type Scope } from "../testbed/mod.ts";

const SRC = new URL("./native/", import.meta.url).pathname;

export interface NativeTools {
  dir: string;
  loadgen: string;
  fastproxy: string;
  compiler: string;
}

async function compilerVersion(cc: string): Promise<string> {
  const r = await run(cc, ["--version"], { allowFail: true });
  return r.stdout.split("\n")[0]?.trim() ?? cc;
}

export async function buildNative(scope: Scope, cc = "clang-19"): Promise<NativeTools> {
  const dir = await Deno.makeTempDir({ prefix: "merbridge-bench-bin-" });
  scope.defer(() => Deno.remove(dir, { recursive: true }));
  await Deno.chmod(dir, 0o755);
  const flags = ["-O2", "-g", "-Wall", "-Wextra", "-std=gnu11"];
  const loadgen = `${dir}/loadgen`;
  const fastproxy = `${dir}/fastproxy`;
  try {
    await run(cc, [...flags, "-pthread", "-o", loadgen, `${SRC}loadgen.c`]);
    await run(cc, [...flags, "-o", fastproxy, `${SRC}fastproxy.c`]);
  } catch (e) {
    throw new Error(
      `compiling the benchmark peers with ${cc} failed (scripts/setup.sh installs clang-19 and libc6-dev): ${
        (e as Error).message
      }`,
    );
  }
  for (const f of [loadgen, fastproxy]) await Deno.chmod(f, 0o755);
  return { dir, loadgen, fastproxy, compiler: await compilerVersion(cc) };
}
