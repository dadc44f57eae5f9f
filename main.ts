// Entry point. One executable, two roles: the CNI plugin when invoked as `merbridge-cni` (argv[0]; the
// runtime copies or links us under that name) or with CNI_COMMAND set, the `merbridge` CLI otherwise.
import { cniPluginMain, isCniPluginInvocation } from "./cni/entry.ts";
import { importLater } from "./src/util/import_later.ts";

if (import.meta.main) {
  // The CLI (daemon, Kubernetes client, libbpf) loads only when asked for: every pod start runs the
  // plugin, and it needs none of it.
  Deno.exit(
    isCniPluginInvocation()
      ? await cniPluginMain()
      : await (await importLater<typeof import("./src/cli/main.ts")>(
        new URL("./src/cli/main.ts", import.meta.url),
      ))
        .runCli(Deno.args),
  );
}
