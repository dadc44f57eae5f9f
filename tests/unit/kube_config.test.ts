// Connection settings: kubeconfig files (what is honoured, what is refused and how the error reads),
// the in-cluster service account, and token files that rotate.
import assert from "node:assert/strict";
import { inClusterConnection, KubeConfigError } from "../../src/kube/config.ts";
import { loadKubeconfig, parseKubeconfig } from "../../src/kube/kubeconfig.ts";
import { FileToken, StaticToken, TokenFileError } from "../../src/kube/token.ts";
import { kubeConnection, openKubePodSource } from "../../src/kube/open.ts";

const CA = "-----BEGIN CERTIFICATE-----\nQ0EgY2VydA==\n-----END CERTIFICATE-----\n";
const CERT = "-----BEGIN CERTIFICATE-----\nY2xpZW50\n-----END CERTIFICATE-----\n";
const KEY = "-----BEGIN PRIVATE KEY-----\na2V5\n-----END PRIVATE KEY-----\n";
const b64 = (s: string) => btoa(s);

function kubeconfig(
  user: string,
  cluster = `server: https://10.0.0.1:6443/\n      certificate-authority-data: ${b64(CA)}`,
) {
  return `apiVersion: v1
kind: Config
current-context: main
clusters:
  - name: c1
    cluster:
      ${cluster}
  - name: c2
    cluster:
      server: http://127.0.0.1:8080
contexts:
  - name: main
    context: { cluster: c1, user: u1 }
  - name: other
    context: { cluster: c2 }
users:
  - name: u1
    user:
      ${user}
`;
}

function errorOf(f: () => unknown): KubeConfigError {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof KubeConfigError, `expected a KubeConfigError, got ${e}`);
    return e;
  }
  assert.fail("no error was thrown");
}

Deno.test("kubeconfig files", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "merbridge-kubeconfig-" });
  try {
    await t.step("current-context with inline CA data and a token", async () => {
      const c = parseKubeconfig(kubeconfig("token: abc123"), "/x/config");
      assert.equal(c.server, "https://10.0.0.1:6443");
      assert.deepEqual(c.caCerts, [CA]);
      assert.equal(c.insecureSkipTlsVerify, false);
      assert.ok(c.token instanceof StaticToken);
      assert.equal(await c.token.token(), "abc123");
      assert.equal(c.clientCert, undefined);
      assert.match(c.description, /kubeconfig \/x\/config, context "main"/);
    });

    await t.step(
      "a named context overrides current-context; a context without a user has no credentials",
      () => {
        const c = parseKubeconfig(kubeconfig("token: abc"), "/x/config", { context: "other" });
        assert.equal(c.server, "http://127.0.0.1:8080");
        assert.equal(c.token, undefined);
        assert.equal(c.caCerts, undefined);
      },
    );

    await t.step("files are resolved against the kubeconfig's directory", async () => {
      await Deno.mkdir(`${dir}/pki`, { recursive: true });
      await Deno.writeTextFile(`${dir}/pki/ca.crt`, CA);
      await Deno.writeTextFile(`${dir}/pki/client.crt`, CERT);
      await Deno.writeTextFile(`${dir}/pki/client.key`, KEY);
      await Deno.writeTextFile(`${dir}/token`, "from-file\n");
      await Deno.writeTextFile(
        `${dir}/config`,
        kubeconfig(
          "client-certificate: pki/client.crt\n      client-key: pki/client.key\n      tokenFile: token",
          "server: https://api.example:6443/prefix/\n      certificate-authority: pki/ca.crt",
        ),
      );
      const c = loadKubeconfig(`${dir}/config`);
      assert.equal(c.server, "https://api.example:6443/prefix");
      assert.deepEqual(c.caCerts, [CA]);
      assert.deepEqual(c.clientCert, { cert: CERT, key: KEY });
      assert.ok(c.token instanceof FileToken);
      assert.equal(c.token.path, `${dir}/token`);
      assert.equal(await c.token.token(), "from-file");
    });

    await t.step("client certificate and key as data", () => {
      const c = parseKubeconfig(
        kubeconfig(`client-certificate-data: ${b64(CERT)}\n      client-key-data: ${b64(KEY)}`),
        "/x/config",
      );
      assert.deepEqual(c.clientCert, { cert: CERT, key: KEY });
      assert.equal(c.token, undefined);
    });

    await t.step("insecure-skip-tls-verify is carried, and refused next to a CA", () => {
      const c = parseKubeconfig(
        kubeconfig("token: a", "server: https://10.0.0.1:6443\n      insecure-skip-tls-verify: true"),
        "/x/config",
      );
      assert.equal(c.insecureSkipTlsVerify, true);
      const e = errorOf(() =>
        parseKubeconfig(
          kubeconfig(
            "token: a",
            `server: https://h\n      insecure-skip-tls-verify: true\n      certificate-authority-data: ${
              b64(CA)
            }`,
          ),
          "/x/config",
        )
      );
      assert.match(e.message, /cluster "c1": a certificate authority together with insecure-skip-tls-verify/);
    });

    await t.step("unsupported credentials are refused by name", () => {
      const cases: [string, RegExp][] = [
        [
          "exec:\n        command: aws\n        apiVersion: client.authentication.k8s.io/v1",
          /user "u1": exec is not supported/,
        ],
        ["auth-provider:\n        name: gcp", /user "u1": auth-provider is not supported/],
        ["username: admin\n      password: secret", /user "u1": username is not supported/],
        ["as: someone", /user "u1": as is not supported/],
      ];
      for (const [user, re] of cases) {
        const e = errorOf(() => parseKubeconfig(kubeconfig(user), "/x/config"));
        assert.match(e.message, /^kubeconfig \/x\/config: /);
        assert.match(e.message, re);
      }
      const empty = parseKubeconfig(
        kubeconfig('token: a\n      username: ""\n      exec: null'),
        "/x/config",
      );
      assert.ok(empty.token, "empty unsupported fields ask for nothing");
      const proxy = errorOf(() =>
        parseKubeconfig(
          kubeconfig("token: a", "server: https://h\n      proxy-url: http://proxy:3128"),
          "/x/c",
        )
      );
      assert.match(proxy.message, /cluster "c1": proxy-url is not supported/);
    });

    await t.step("malformed files name the file and what is wrong", async () => {
      const cases: [string, RegExp][] = [
        ["clusters: [unclosed", /kubeconfig \/k: not valid YAML/],
        ["- just\n- a list\n", /kubeconfig \/k: the document is not a mapping/],
        ["apiVersion: v1\nkind: Config\n", /no current-context is set/],
        [
          kubeconfig("token: a").replace("current-context: main", "current-context: nope"),
          /context "nope" is not defined in contexts/,
        ],
        [
          kubeconfig("token: a").replace("cluster: c1, user", "cluster: c9, user"),
          /cluster "c9" is not defined in clusters/,
        ],
        [kubeconfig("token: a").replace("user: u1 }", "user: u7 }"), /user "u7" is not defined in users/],
        [kubeconfig("token: a", "certificate-authority-data: x"), /cluster "c1" has no server/],
        [kubeconfig("token: a", "server: ftp://h"), /server ftp:\/\/h must be an http or https URL/],
        [
          kubeconfig("token: a", "server: https://h\n      certificate-authority-data: '%%%'"),
          /certificate-authority-data is not valid base64/,
        ],
        [
          kubeconfig("token: a", `server: https://h\n      certificate-authority-data: ${b64("hello")}`),
          /certificate-authority-data does not hold PEM data/,
        ],
        [kubeconfig("token: 42"), /user "u1": token must be a string/],
        [
          kubeconfig(`client-certificate-data: ${b64(CERT)}`),
          /user "u1" has a client certificate but no client key/,
        ],
        [
          kubeconfig("token: a", "server: https://h\n      insecure-skip-tls-verify: yes please"),
          /insecure-skip-tls-verify must be true or false/,
        ],
        [
          "clusters: 3\ncurrent-context: main\ncontexts: [{name: main, context: {cluster: c}}]",
          /clusters must be a list/,
        ],
      ];
      for (const [text, re] of cases) {
        const e = errorOf(() => parseKubeconfig(text, "/k"));
        assert.match(e.message, re, text);
      }
      const missing = errorOf(() =>
        parseKubeconfig(
          kubeconfig("token: a", "server: https://h\n      certificate-authority: nope/ca.crt"),
          `${dir}/config`,
        )
      );
      assert.match(missing.message, new RegExp(`certificate-authority ${dir}/nope/ca.crt: `));
      const absent = errorOf(() => loadKubeconfig(`${dir}/does-not-exist`));
      assert.match(absent.message, new RegExp(`kubeconfig ${dir}/does-not-exist: `));
      await assert.rejects(
        openKubePodSource({ kubeconfig: `${dir}/does-not-exist`, nodeName: "n" }),
        KubeConfigError,
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("in-cluster settings", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "merbridge-sa-" });
  const env = (vars: Record<string, string>) => (n: string) => vars[n];
  try {
    await Deno.writeTextFile(`${dir}/ca.crt`, CA);
    await Deno.writeTextFile(`${dir}/token`, "sa-token-1");

    await t.step("server from the environment, CA and token from the mount", async () => {
      const c = inClusterConnection({
        env: env({ KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "443" }),
        serviceAccountDir: dir,
      });
      assert.equal(c.server, "https://10.96.0.1:443");
      assert.deepEqual(c.caCerts, [CA]);
      assert.equal(await c.token?.token(), "sa-token-1");
      assert.match(c.description, /in-cluster/);
    });

    await t.step("an IPv6 service host is bracketed", () => {
      const c = inClusterConnection({
        env: env({ KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "443" }),
        serviceAccountDir: dir,
      });
      assert.equal(c.server, "https://[fd00::1]:443");
    });

    await t.step("outside a cluster, or with the mount missing, the error says so", () => {
      const e = errorOf(() => inClusterConnection({ env: env({}), serviceAccountDir: dir }));
      assert.match(e.message, /KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set/);
      const port = errorOf(() =>
        inClusterConnection({
          env: env({ KUBERNETES_SERVICE_HOST: "h", KUBERNETES_SERVICE_PORT: "https" }),
          serviceAccountDir: dir,
        })
      );
      assert.match(port.message, /KUBERNETES_SERVICE_PORT is not a port number: "https"/);
      const mount = errorOf(() =>
        inClusterConnection({
          env: env({ KUBERNETES_SERVICE_HOST: "h", KUBERNETES_SERVICE_PORT: "443" }),
          serviceAccountDir: `${dir}/missing`,
        })
      );
      assert.match(mount.message, new RegExp(`service-account CA certificate ${dir}/missing/ca.crt`));
    });

    await t.step("without --kubeconfig the in-cluster settings are used", async () => {
      // The test process is not in a pod (or if it is, the error differs); either way the choice shows.
      const prev = Deno.env.get("KUBERNETES_SERVICE_HOST");
      Deno.env.delete("KUBERNETES_SERVICE_HOST");
      try {
        await assert.rejects(kubeConnection({}), /not running inside a cluster/);
      } finally {
        if (prev !== undefined) Deno.env.set("KUBERNETES_SERVICE_HOST", prev);
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("token files are re-read once older than the limit, and at once after invalidate()", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "merbridge-token-" });
  const path = `${dir}/token`;
  let now = 1_000_000;
  try {
    await Deno.writeTextFile(path, "one\n");
    const tok = new FileToken(path, { maxAgeMs: 60_000, now: () => now });

    await t.step("cached while young", async () => {
      assert.equal(await tok.token(), "one");
      await Deno.writeTextFile(path, "two");
      now += 59_000;
      assert.equal(await tok.token(), "one");
      assert.equal(tok.reads, 1);
    });

    await t.step("re-read when older than the limit", async () => {
      now += 2_000;
      assert.equal(await tok.token(), "two");
      assert.equal(tok.reads, 2);
    });

    await t.step("invalidate() forces a read", async () => {
      await Deno.writeTextFile(path, "three");
      tok.invalidate();
      assert.equal(await tok.token(), "three");
    });

    await t.step("a file briefly missing or empty keeps the previous token", async () => {
      await Deno.writeTextFile(path, "");
      tok.invalidate();
      assert.equal(await tok.token(), "three");
      await Deno.remove(path);
      tok.invalidate();
      assert.equal(await tok.token(), "three");
    });

    await t.step("no token ever read: the error names the file", async () => {
      const fresh = new FileToken(`${dir}/absent`);
      const e = await fresh.token().then(() => undefined, (e) => e);
      assert.ok(e instanceof TokenFileError);
      assert.match(e.message, new RegExp(`token file ${dir}/absent: `));
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
