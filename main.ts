// Entry point. One executable, two roles: the CNI plugin when invoked as `merbridge-cni` (argv[0]; the
// runtime copies or links us under that name) or with CNI_COMMAND set, the `merbridge` CLI otherwise.
import { cniPluginMain, isCniPluginInvocation } from "./cni/entry.ts";
import { runCli } from "./src/cli/main.ts";

if (import.meta.main) {
  Deno.exit(isCniPluginInvocation() ? await cniPluginMain() : await runCli(Deno.args));
}
