// Entry point. One executable, two roles: the CNI plugin when invoked as `merbridge-cni` (argv[0]; the
// runtime copies or links us under that name) or with CNI_COMMAND set, the `merbridge` CLI otherwise.
import process from "node:process";
import { runCli } from "./src/cli/main.ts";
import { runCniPluginMain } from "./src/cli/cni_entry.ts";

function invokedName(): string {
  const a0 = process.argv0 ?? "";
  return a0.slice(a0.lastIndexOf("/") + 1);
}

if (import.meta.main) {
  const code = invokedName() === "merbridge-cni" || Deno.env.get("CNI_COMMAND") !== undefined
    ? await runCniPluginMain()
    : await runCli(Deno.args);
  Deno.exit(code);
}
