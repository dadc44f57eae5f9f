// The plugin's copy of the agent's API credentials: a kubeconfig the plugin's reader accepts,
// root-only, rewritten only when the token changed.
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseKubeconfig } from "../../src/kube/kubeconfig.ts";
import { inClusterKubeconfigText, writeRootOnly } from "../../src/kube/plugin_kubeconfig.ts";

Deno.test("plugin kubeconfig from the in-cluster service account", async () => {
  const dir = await Deno.makeTempDir({ prefix: "merbridge-plugin-kubeconfig-" });
  try {
    const sa = join(dir, "sa");
    await Deno.mkdir(sa);
    await Deno.writeTextFile(join(sa, "token"), "tok-1\n");
    await Deno.writeTextFile(
      join(sa, "ca.crt"),
      "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    );
    const env = (n: string) => ({ KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "443" })[n];
    assert.equal(inClusterKubeconfigText({ env: () => undefined, serviceAccountDir: sa }), undefined);
    const text = inClusterKubeconfigText({ env, serviceAccountDir: sa })!;
    const conn = parseKubeconfig(text, join(dir, "cni-kubeconfig"));
    assert.match(conn.server, /^https:\/\/10\.96\.0\.1(:443)?$/);
    assert.equal(await conn.token?.token(), "tok-1");
    assert.match(conn.caCerts?.[0] ?? "", /BEGIN CERTIFICATE/);

    const path = join(dir, "state", "cni-kubeconfig");
    assert.equal(writeRootOnly(path, text), true);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600, "the token is readable by root only");
    assert.equal(writeRootOnly(path, text), false, "unchanged: not rewritten");
    await Deno.writeTextFile(join(sa, "token"), "tok-2\n");
    assert.equal(writeRootOnly(path, inClusterKubeconfigText({ env, serviceAccountDir: sa })!), true);
    assert.match(await Deno.readTextFile(path), /tok-2/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
