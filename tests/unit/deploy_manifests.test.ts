// The deploy files cannot be applied or built here (no cluster, no Docker), so this holds them to
// what the code says instead: flags the daemon really has, host paths equal to its defaults, the
// image tag of this version, the RBAC it needs and nothing more, a Dockerfile that builds the BPF
// objects before compiling with the Deno the project pins.
import assert from "node:assert/strict";
import { loadAll } from "js-yaml";
import type { DaemonSet } from "kubernetes-types/apps/v1.d.ts";
import type { Container, PodSpec, Volume, VolumeMount } from "kubernetes-types/core/v1.d.ts";
import type { ClusterRole, ClusterRoleBinding } from "kubernetes-types/rbac/v1.d.ts";
import { parseFlags } from "../../src/cli/args.ts";
import { COMMANDS } from "../../src/cli/commands.ts";
import { DAEMON_FLAGS, DEFAULTS } from "../../src/cli/options.ts";
import { VERSION } from "../../src/version.ts";

const root = new URL("../../", import.meta.url);
const read = (path: string) => Deno.readTextFileSync(new URL(path, root));

const ALL_IN_ONE = "deploy/all-in-one.yaml";
const UNINSTALL = "deploy/uninstall-job.yaml";
const CNI_OFF = "--cni-mode=false";
const CNI_ON = "--cni-mode=true";

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
}

function parseManifest(text: string): K8sObject[] {
  // A stray "---" at the end yields null documents; they are not objects kubectl would apply.
  return loadAll(text).filter((d) => d !== null && d !== undefined) as K8sObject[];
}

function only<T = K8sObject>(objs: K8sObject[], kind: string): T {
  const found = objs.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `expected one ${kind}, found ${found.length}`);
  return found[0] as unknown as T;
}

function podSpec(ds: DaemonSet): PodSpec {
  const spec = ds.spec?.template.spec;
  assert.ok(spec, `${ds.metadata?.name}: no pod spec`);
  return spec;
}

function container(spec: PodSpec, name: string, init = false): Container {
  const c = (init ? spec.initContainers : spec.containers)?.find((c) => c.name === name);
  assert.ok(c, `no ${init ? "init " : ""}container ${name}`);
  return c;
}

// /var/run is a link to /run on the hosts and in the image (Debian), so a path below either one names
// the same directory; paths are compared in their /run spelling.
function canonical(path: string): string {
  return path.replace(/^\/var\/run(?=\/|$)/, "/run").replace(/\/+$/, "") || "/";
}

function isWithin(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === "/" ? "/" : dir + "/");
}

/**
 * Where `path` inside the container lands on the host: through the deepest mount that holds it, which
 * must be a hostPath volume. undefined when the path is not on a host mount at all.
 */
function resolveOnHost(
  spec: PodSpec,
  c: Container,
  path: string,
): { host: string; mount: VolumeMount; volume: Volume } | undefined {
  const want = canonical(path);
  const mounts = (c.volumeMounts ?? [])
    .filter((m) => isWithin(want, canonical(m.mountPath)))
    .sort((a, b) => canonical(b.mountPath).length - canonical(a.mountPath).length);
  const mount = mounts[0];
  if (!mount) return undefined;
  const volume = spec.volumes?.find((v) => v.name === mount.name);
  assert.ok(volume, `mount ${mount.mountPath} names volume ${mount.name}, which is not declared`);
  assert.ok(volume.hostPath, `${path} is on volume ${mount.name}, which is not a hostPath`);
  const rest = want.slice(canonical(mount.mountPath).length);
  return { host: canonical(volume.hostPath.path + rest), mount, volume };
}

/** Asserts that `path` is the same directory inside the container and on the host. */
function assertSameOnHost(spec: PodSpec, c: Container, path: string, what: string): VolumeMount {
  const r = resolveOnHost(spec, c, path);
  assert.ok(r, `${what} ${path} is not on a host mount in container ${c.name}`);
  assert.equal(r.host, canonical(path), `${what} ${path} lands on ${r.host} on the host`);
  return r.mount;
}

function assertTolerateEverything(spec: PodSpec, what: string): void {
  const catchAll = (spec.tolerations ?? []).some((t) =>
    t.operator === "Exists" && t.key === undefined && t.effect === undefined
  );
  assert.ok(catchAll, `${what}: needs a toleration {operator: Exists} without key or effect`);
}

function daemonArgs(c: Container): string[] {
  assert.deepEqual(c.command, ["/usr/local/bin/merbridge"], "the agent runs the image's executable");
  const args = c.args ?? [];
  assert.equal(args[0], "daemon", "the first argument selects the daemon subcommand");
  return args.slice(1);
}

function flagName(arg: string): string {
  const m = /^--([a-z0-9-]+)(=.*)?$/.exec(arg);
  assert.ok(m, `argument ${JSON.stringify(arg)} is not --flag or --flag=value`);
  return m[1]!;
}

function metricsPort(addr: string): number {
  const m = /:(\d+)$/.exec(addr);
  assert.ok(m, `metrics address ${addr} has no port`);
  return Number(m[1]);
}

const allInOneText = read(ALL_IN_ONE);
const allInOne = parseManifest(allInOneText);
const agent = only<DaemonSet>(allInOne, "DaemonSet");
const agentSpec = podSpec(agent);
const agentContainer = container(agentSpec, "merbridge");
const agentArgs = daemonArgs(agentContainer);
const flags = parseFlags(DAEMON_FLAGS, agentArgs, { env: { NODE_NAME: "node-under-test" } });

const uninstallObjs = parseManifest(read(UNINSTALL));

Deno.test("manifests: every document is a named object; namespaced ones share one namespace", () => {
  for (const [file, objs] of [[ALL_IN_ONE, allInOne], [UNINSTALL, uninstallObjs]] as const) {
    assert.ok(objs.length > 0, `${file} holds no objects`);
    for (const o of objs) {
      assert.ok(o.apiVersion && o.kind && o.metadata?.name, `${file}: an object lacks apiVersion/kind/name`);
      const clusterScoped = ["ClusterRole", "ClusterRoleBinding", "Namespace"].includes(o.kind);
      if (!clusterScoped) assert.equal(o.metadata.namespace, agent.metadata?.namespace, `${file}: ${o.kind}`);
    }
  }
});

Deno.test("CNI mode: the documented sed flips exactly the one flag", async (t) => {
  await t.step("the flag is spelled out once in the file, off", () => {
    assert.equal(allInOneText.split(CNI_OFF).length - 1, 1, `${CNI_OFF} must occur exactly once`);
    assert.equal(allInOneText.split(CNI_ON).length - 1, 0);
    assert.equal(agentArgs.filter((a) => flagName(a) === "cni-mode").length, 1);
    assert.equal(flags["cni-mode"], false);
  });

  await t.step("the real sed turns it on and changes nothing else", async () => {
    const out = await new Deno.Command("sed", {
      args: [`s/${CNI_OFF}/${CNI_ON}/g`, new URL(ALL_IN_ONE, root).pathname],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const flippedText = new TextDecoder().decode(out.stdout);
    assert.equal(flippedText, allInOneText.replaceAll(CNI_OFF, CNI_ON));

    const flipped = parseManifest(flippedText);
    const flippedArgs = daemonArgs(container(podSpec(only<DaemonSet>(flipped, "DaemonSet")), "merbridge"));
    assert.equal(parseFlags(DAEMON_FLAGS, flippedArgs)["cni-mode"], true);
    const changed = flippedArgs.flatMap((a, i) => a === agentArgs[i] ? [] : [[agentArgs[i], a]]);
    assert.deepEqual(changed, [[CNI_OFF, CNI_ON]]);
    // Putting the one argument back must give the original objects exactly.
    const restored = parseManifest(flippedText.replaceAll(CNI_ON, CNI_OFF));
    assert.deepEqual(restored, allInOne);
  });

  await t.step("docs/deploy.md gives the same one-liner", () => {
    const doc = read("docs/deploy.md");
    assert.ok(
      doc.includes(`sed 's/${CNI_OFF}/${CNI_ON}/g' ${ALL_IN_ONE} | kubectl apply -f -`),
      "docs/deploy.md must show the sed one-liner",
    );
  });
});

Deno.test("agent arguments: real daemon flags, each once, all parsing", () => {
  const names = agentArgs.map(flagName);
  for (const n of names) assert.ok(n in DAEMON_FLAGS, `--${n} is not a daemon flag`);
  assert.deepEqual(names, [...new Set(names)], "a flag is given twice");
  assert.doesNotThrow(() => parseFlags(DAEMON_FLAGS, agentArgs));
  assert.equal(flags.mode, "istio");
  assert.equal(flags["hardware-checksum"], false, "hardware checksum offload stays off unless asked for");
  assert.equal(flags["uninstall-on-exit"], false, "a rolling update must leave the datapath pinned");
  assert.equal(flags["pods-file"], undefined, "in a cluster the pods come from the API");
  assert.equal(flags.kubeconfig, undefined, "in a cluster the service account is used");
});

Deno.test("agent host mounts: every directory the daemon uses is the host's, at the same path", async (t) => {
  const mountOf = (path: string, what: string) => assertSameOnHost(agentSpec, agentContainer, path, what);

  await t.step("the flag values are the defaults the code documents", () => {
    assert.equal(flags["bpf-pin-path"], DEFAULTS.pinPath);
    assert.equal(flags["run-dir"], DEFAULTS.runDir);
    assert.equal(flags["state-dir"], DEFAULTS.stateDir);
    assert.equal(flags["cni-bin-dir"], DEFAULTS.cniBinDir);
    assert.equal(flags["cni-config-dir"], DEFAULTS.cniConfigDir);
    assert.equal(flags["netns-dirs"], DEFAULTS.netnsDirs);
  });

  await t.step("pins on the host's bpffs, mounted both ways so a bpffs mounted here reaches the host", () => {
    const m = mountOf(flags["bpf-pin-path"], "pin path");
    assert.equal(m.mountPath, "/sys/fs/bpf");
    assert.equal(m.mountPropagation, "Bidirectional");
    // Bidirectional propagation is only admitted for privileged containers.
    assert.equal(agentContainer.securityContext?.privileged, true);
    const init = container(agentSpec, "mount-bpffs", true);
    assert.equal(init.securityContext?.privileged, true);
    assert.equal(assertSameOnHost(agentSpec, init, "/sys/fs/bpf", "bpffs").mountPropagation, "Bidirectional");
  });

  await t.step("run dir, state dir, CNI dirs", () => {
    mountOf(flags["run-dir"], "run dir");
    mountOf(flags["state-dir"], "state dir");
    mountOf(flags["cni-bin-dir"], "CNI bin dir");
    mountOf(flags["cni-config-dir"], "CNI config dir");
  });

  await t.step("every netns dir, with host-to-container propagation", () => {
    for (const dir of flags["netns-dirs"].split(",")) {
      const m = mountOf(dir, "netns dir");
      assert.ok(
        m.mountPropagation === "HostToContainer" || m.mountPropagation === "Bidirectional",
        `netns dir ${dir}: namespaces created after the pod started must show up (propagation)`,
      );
    }
  });

  await t.step("the cgroup path is the host's cgroup2 root", () => {
    const path = flags["cgroup-path"];
    assert.ok(path, "--cgroup-path must name the host mount: detection would find the pod's own cgroup");
    const r = resolveOnHost(agentSpec, agentContainer, path);
    assert.equal(r?.host, "/sys/fs/cgroup");
    assert.notEqual(canonical(path), "/sys/fs/cgroup", "must not sit on the runtime's cgroup mount");
  });

  await t.step("no declared volume goes unused, no mount lacks a volume", () => {
    const used = new Set(
      [...agentSpec.containers, ...agentSpec.initContainers ?? []].flatMap((c) =>
        (c.volumeMounts ?? []).map((m) => m.name)
      ),
    );
    const declared = new Set((agentSpec.volumes ?? []).map((v) => v.name));
    assert.deepEqual([...used].sort(), [...declared].sort());
  });
});

Deno.test("RBAC: get, list and watch on pods, nothing else, bound to the agent's account", () => {
  const role = only<ClusterRole & K8sObject>(allInOne, "ClusterRole");
  assert.equal(role.rules?.length, 1);
  const rule = role.rules![0]!;
  assert.deepEqual(rule.apiGroups, [""]);
  assert.deepEqual(rule.resources, ["pods"]);
  assert.deepEqual([...rule.verbs].sort(), ["get", "list", "watch"]);
  assert.equal(rule.resourceNames, undefined);
  assert.equal(rule.nonResourceURLs, undefined);
  assert.equal(allInOne.filter((o) => o.kind === "Role" || o.kind === "RoleBinding").length, 0);

  const binding = only<ClusterRoleBinding & K8sObject>(allInOne, "ClusterRoleBinding");
  assert.deepEqual(binding.roleRef, {
    apiGroup: "rbac.authorization.k8s.io",
    kind: "ClusterRole",
    name: role.metadata.name,
  });
  const sa = only(allInOne, "ServiceAccount");
  assert.deepEqual(binding.subjects, [{
    kind: "ServiceAccount",
    name: sa.metadata.name,
    namespace: sa.metadata.namespace,
  }]);
  assert.equal(agentSpec.serviceAccountName, sa.metadata.name);

  for (const kind of ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"]) {
    assert.equal(uninstallObjs.filter((o) => o.kind === kind).length, 0, `uninstall needs no ${kind}`);
  }
});

Deno.test("images: one image, tagged with this version, running the executable the Dockerfile installs", () => {
  const images = [agent, only<DaemonSet>(uninstallObjs, "DaemonSet")].flatMap((ds) => {
    const s = podSpec(ds);
    return [...s.initContainers ?? [], ...s.containers].map((c) => c.image);
  });
  assert.ok(images.length >= 4);
  assert.equal(new Set(images).size, 1, `different images: ${[...new Set(images)].join(", ")}`);
  const image = images[0]!;
  assert.match(image, /^[a-z0-9.-]+\/[a-z0-9._/-]+:[^:@]+$/);
  assert.equal(image.slice(image.lastIndexOf(":") + 1), VERSION);
});

Deno.test("agent pod: probes, node name, scheduling, updates, resources", async (t) => {
  const ports = agentContainer.ports ?? [];
  const portNumber = (p: number | string | undefined) => {
    if (typeof p === "number") return p;
    const named = ports.find((x) => x.name === p);
    assert.ok(named, `probe port ${p} is not a declared container port`);
    return named.containerPort;
  };

  await t.step("probes hit /healthz and /readyz on the metrics port", () => {
    const port = metricsPort(flags["metrics-addr"]);
    assert.equal(port, metricsPort(DEFAULTS.metricsAddr));
    const probes = {
      liveness: [agentContainer.livenessProbe, "/healthz"],
      readiness: [agentContainer.readinessProbe, "/readyz"],
      startup: [agentContainer.startupProbe, "/healthz"],
    } as const;
    for (const [what, [probe, path]] of Object.entries(probes)) {
      assert.ok(probe?.httpGet, `${what} probe must be an HTTP GET`);
      assert.equal(probe.httpGet.path, path, `${what} probe path`);
      assert.equal(portNumber(probe.httpGet.port), port, `${what} probe port`);
    }
    const annotations = agent.spec?.template.metadata?.annotations ?? {};
    assert.equal(annotations["prometheus.io/port"], String(port));
  });

  await t.step("NODE_NAME comes from spec.nodeName and feeds --node-name", () => {
    assert.equal(DAEMON_FLAGS["node-name"].env, "NODE_NAME");
    const env = agentContainer.env?.find((e) => e.name === "NODE_NAME");
    assert.equal(env?.valueFrom?.fieldRef?.fieldPath, "spec.nodeName");
    assert.equal(env.value, undefined);
    assert.equal(flags["node-name"], "node-under-test");
  });

  await t.step("runs on every node, first among equals, in the host network", () => {
    assertTolerateEverything(agentSpec, "agent");
    assert.equal(agentSpec.priorityClassName, "system-node-critical");
    assert.equal(agentSpec.hostNetwork, true);
    assert.notEqual(agentSpec.hostPID, true, "pod namespaces are entered by path: no host PID namespace");
  });

  await t.step("rolling update one node at a time, with time to stop", () => {
    assert.deepEqual(agent.spec?.updateStrategy, {
      type: "RollingUpdate",
      rollingUpdate: { maxUnavailable: 1 },
    });
    const grace = agentSpec.terminationGracePeriodSeconds;
    assert.ok(grace !== undefined && grace >= 10 && grace <= 120, `terminationGracePeriodSeconds ${grace}`);
    const selector = agent.spec?.selector.matchLabels ?? {};
    const labels = agent.spec?.template.metadata?.labels ?? {};
    for (const [k, v] of Object.entries(selector)) assert.equal(labels[k], v, `template lacks label ${k}`);
  });

  await t.step("requests and limits for CPU and memory", () => {
    const r = agentContainer.resources;
    for (const kind of ["requests", "limits"] as const) {
      for (const res of ["cpu", "memory"]) assert.ok(r?.[kind]?.[res], `${kind}.${res} missing`);
    }
  });
});

Deno.test("uninstall manifest: runs `merbridge uninstall` on every node, never beside a running agent", async (t) => {
  const ds = only<DaemonSet>(uninstallObjs, "DaemonSet");
  const spec = podSpec(ds);
  const init = container(spec, "uninstall", true);
  const cmd = COMMANDS.find((c) => c.name === "uninstall");
  assert.ok(cmd);

  await t.step("its pods need no CNI ADD: they start while the plugin is chained and the agent gone", () => {
    assert.equal(spec.hostNetwork, true);
  });

  await t.step("arguments parse as the uninstall command's", () => {
    assert.deepEqual(init.command, ["/usr/local/bin/merbridge"]);
    assert.equal(init.args?.[0], "uninstall");
    const f = parseFlags(cmd.flags, init.args!.slice(1));
    assert.equal(f.force, false, "--force would skip the running-daemon check");
  });

  await t.step("it reaches the same host directories as the agent", () => {
    const f = parseFlags(cmd.flags, init.args!.slice(1));
    assert.equal(f["bpf-pin-path"], flags["bpf-pin-path"]);
    for (const key of ["bpf-pin-path", "run-dir", "state-dir", "cni-bin-dir", "cni-config-dir"] as const) {
      assert.equal(f[key], flags[key], `--${key} differs from the agent's`);
      assertSameOnHost(spec, init, f[key] as string, `--${key}`);
    }
    for (const dir of flags["netns-dirs"].split(",")) assertSameOnHost(spec, init, dir, "netns dir");
  });

  await t.step("the run and state directories are not mount points, so they can be removed", () => {
    for (const dir of [flags["run-dir"], flags["state-dir"]]) {
      const m = resolveOnHost(spec, init, dir)!.mount;
      assert.notEqual(canonical(m.mountPath), canonical(dir), `${dir} is a mount point in the uninstall pod`);
    }
  });

  await t.step("kept off nodes where an agent pod exists, on every node otherwise", () => {
    const anti = spec.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? [];
    const agentLabels = agent.spec?.template.metadata?.labels ?? {};
    assert.ok(
      anti.some((term) =>
        term.topologyKey === "kubernetes.io/hostname" &&
        Object.entries(term.labelSelector?.matchLabels ?? {}).every(([k, v]) => agentLabels[k] === v) &&
        Object.keys(term.labelSelector?.matchLabels ?? {}).length > 0
      ),
      "needs a required anti-affinity to the agent's pods per node",
    );
    const ownLabels = ds.spec?.template.metadata?.labels ?? {};
    const selector = agent.spec?.selector.matchLabels ?? {};
    assert.ok(
      Object.entries(selector).some(([k, v]) => ownLabels[k] !== v),
      "the agent's selector must not match the uninstall pods",
    );
    assertTolerateEverything(spec, "uninstall");
    assert.equal(spec.automountServiceAccountToken, false);
    assert.equal(init.securityContext?.privileged, true);
  });
});

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  op: string;
  args: string;
  line: number;
}

function dockerInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let buf = "";
  let start = 0;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (buf === "" && (line === "" || line.startsWith("#"))) return;
    if (line.startsWith("#")) return; // comment lines inside a continued instruction
    if (buf === "") start = i + 1;
    if (line.endsWith("\\")) {
      buf += line.slice(0, -1) + " ";
      return;
    }
    buf += line;
    const m = /^(\S+)\s*(.*)$/s.exec(buf)!;
    out.push({ op: m[1]!.toUpperCase(), args: m[2]!.replace(/\s+/g, " ").trim(), line: start });
    buf = "";
  });
  return out;
}

Deno.test("Dockerfile: pinned Deno, objects built before the compile, a slim runtime with libbpf", async (t) => {
  const text = read("deploy/Dockerfile");
  const ins = dockerInstructions(text);
  const froms = ins.filter((i) => i.op === "FROM");
  assert.equal(froms.length, 2, "a build stage and a runtime stage");
  const [buildFrom, runFrom] = froms as [Instruction, Instruction];
  const buildStage = ins.filter((i) => i.line >= buildFrom.line && i.line < runFrom.line);
  const runStage = ins.filter((i) => i.line >= runFrom.line);
  const runs = (stage: Instruction[]) => stage.filter((i) => i.op === "RUN").map((i) => i.args);

  await t.step("stages", () => {
    assert.match(buildFrom.args, /^debian:12 AS build$/i);
    assert.equal(runFrom.args, "debian:12-slim");
  });

  await t.step("the Deno of scripts/setup.sh, from npm", () => {
    const pinned = /^DENO_VERSION="([^"]+)"$/m.exec(read("scripts/setup.sh"))?.[1];
    assert.ok(pinned, "scripts/setup.sh pins DENO_VERSION");
    const arg = buildStage.find((i) => i.op === "ARG" && i.args.startsWith("DENO_VERSION="));
    assert.equal(arg?.args, `DENO_VERSION=${pinned}`);
    const install = runs(buildStage).find((r) => r.includes("npm install")) ?? "";
    assert.ok(install.includes('"deno@${DENO_VERSION}"'), "deno comes from the npm package at that version");
    assert.ok(install.includes('grep -q "^deno ${DENO_VERSION} "'), "the installed version is checked");
  });

  await t.step("build packages, then BPF objects, then the compile", () => {
    const apt = runs(buildStage).find((r) => r.includes("apt-get install")) ?? "";
    for (const p of ["clang-19", "llvm-19", "libbpf-dev", "bpftool"]) {
      assert.ok(apt.split(" ").includes(p), p);
    }
    const buildRuns = runs(buildStage);
    const bpf = buildRuns.findIndex((r) => r.includes("bash bpf/build.sh"));
    const compile = buildRuns.findIndex((r) => r.includes("deno task compile"));
    assert.ok(bpf >= 0 && compile > bpf, "bash bpf/build.sh must run before deno task compile");
    const copySrc = buildStage.findIndex((i) => i.op === "COPY" && i.args === ". .");
    const bpfAt = buildStage.findIndex((i) => i.op === "RUN" && i.args.includes("bash bpf/build.sh"));
    assert.ok(copySrc >= 0 && copySrc < bpfAt, "the sources are copied before the build");
  });

  await t.step("the compile task writes what the runtime stage copies", () => {
    const task = (JSON.parse(read("deno.json")) as { tasks: Record<string, string> }).tasks.compile ?? "";
    assert.match(task, /deno compile .*--include bpf\/build .*--output build\/merbridge main\.ts/);
    const copies = runStage.filter((i) => i.op === "COPY").map((i) => i.args);
    assert.ok(copies.includes("--from=build /src/build/merbridge /usr/local/bin/merbridge"));
    const objects = copies.find((c) => c.includes("bpf/build/*.bpf.o"));
    assert.ok(objects, "the BPF objects ship as files");
    const objDir = objects.split(" ").at(-1)!.replace(/\/$/, "");
    assert.ok(runStage.some((i) => i.op === "ENV" && i.args === `MERBRIDGE_BPF_DIR=${objDir}`));
  });

  await t.step("runtime: libbpf1 only, the executable as entry point, the daemon by default", () => {
    const apt = runs(runStage).find((r) => r.includes("apt-get install")) ?? "";
    assert.ok(apt.split(" ").includes("libbpf1"));
    assert.ok(!/clang|bpftool|libbpf-dev|npm/.test(apt), "no build tools in the runtime image");
    assert.equal(runStage.find((i) => i.op === "ENTRYPOINT")?.args, '["merbridge"]');
    assert.equal(runStage.find((i) => i.op === "CMD")?.args, '["daemon"]');
  });

  await t.step("the build context leaves out the local toolchain and build output", () => {
    const ignore = read("deploy/Dockerfile.dockerignore").split("\n").map((l) => l.trim());
    for (const p of [".tools", ".git", "build", "bpf/build/*", "!bpf/build/vmlinux.h"]) {
      assert.ok(ignore.includes(p), `Dockerfile.dockerignore lacks ${p}`);
    }
  });
});
