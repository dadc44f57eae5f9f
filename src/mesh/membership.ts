// Which pods belong to the mesh, and what the daemon records about each one.
//
// A pod is in the mesh when its sidecar proxy is (or was made to be) present: looking at the pod itself
// rather than at namespace labels means a pod injected before its namespace was relabelled, or one
// that opted out, is judged by what it actually runs. Native sidecars (init containers with
// restartPolicy Always) count as the proxy container.
//
// Never in the mesh: pods on the host network (their sockets are the node's own) and pods that have
// finished (phase Succeeded or Failed), whose IP may already belong to a new pod.
import type { Container, Pod } from "kubernetes-types/core/v1.d.ts";
import type { MeshMode, PodEntry } from "./types.ts";
import { podPolicy } from "./policy.ts";
import { parseIpv4 } from "./ipv4.ts";
import { formatIpv6, isV4Mapped, parseIpv6 } from "./ipv6.ts";

/** Name of each mesh's proxy container. */
export const PROXY_CONTAINER: Readonly<Record<MeshMode, string>> = {
  istio: "istio-proxy",
  linkerd: "linkerd-proxy",
  kuma: "kuma-sidecar",
  osm: "envoy",
};

const ISTIO_INJECT = "sidecar.istio.io/inject";
const ISTIO_STATUS = "sidecar.istio.io/status";
const LINKERD_PROXY_VERSION = "linkerd.io/proxy-version";
const KUMA_SIDECAR_INJECTED = "kuma.io/sidecar-injected";
const OSM_SIDECAR_INJECTION = "openservicemesh.io/sidecar-injection";
const OSM_PROXY_UUID_LABEL = "osm-proxy-uuid";

function hasProxyContainer(pod: Pod, name: string): boolean {
  const spec = pod.spec;
  if (!spec) return false;
  const named = (c: Container) => c.name === name;
  return (spec.containers ?? []).some(named) ||
    (spec.initContainers ?? []).some((c) => named(c) && c.restartPolicy === "Always");
}

/**
 * Istio's own reading of sidecar.istio.io/inject: only y/yes/true/on ask for injection, and any other
 * non-empty value is a refusal. The label form takes precedence over the annotation.
 */
function istioOptedOut(pod: Pod): boolean {
  const value = pod.metadata?.labels?.[ISTIO_INJECT] ?? pod.metadata?.annotations?.[ISTIO_INJECT];
  if (value === undefined) return false;
  const v = value.trim().toLowerCase();
  return v !== "" && !["y", "yes", "true", "on"].includes(v);
}

function osmInjectionRequested(pod: Pod): boolean {
  const v = pod.metadata?.annotations?.[OSM_SIDECAR_INJECTION]?.trim().toLowerCase();
  return v === "enabled" || v === "yes" || v === "true";
}

/** Whether `pod` takes part in the `mode` mesh on this node. */
export function isInMesh(pod: Pod, mode: MeshMode): boolean {
  if (pod.spec?.hostNetwork === true) return false;
  const phase = pod.status?.phase;
  if (phase === "Succeeded" || phase === "Failed") return false;

  const annotations = pod.metadata?.annotations ?? {};
  const proxy = hasProxyContainer(pod, PROXY_CONTAINER[mode]);
  switch (mode) {
    case "istio":
      // A running proxy container is decisive; the opt-out only matters for pods without one.
      if (proxy) return true;
      if (istioOptedOut(pod)) return false;
      return Object.hasOwn(annotations, ISTIO_STATUS);
    case "linkerd":
      return proxy || Object.hasOwn(annotations, LINKERD_PROXY_VERSION);
    case "kuma":
      return proxy || annotations[KUMA_SIDECAR_INJECTED]?.trim().toLowerCase() === "true";
    case "osm":
      // "envoy" is too common a container name to be proof on its own.
      return proxy &&
        (Object.hasOwn(pod.metadata?.labels ?? {}, OSM_PROXY_UUID_LABEL) || osmInjectionRequested(pod));
  }
}

/** The pod's primary IPv4: status.podIP when IPv4, else the first IPv4 of status.podIPs, else "". */
export function podIPv4(pod: Pod): string {
  const candidates = [pod.status?.podIP, ...(pod.status?.podIPs ?? []).map((p) => p.ip)];
  for (const ip of candidates) {
    if (ip !== undefined && parseIpv4(ip) !== null) return ip;
  }
  return "";
}

/** The pod's IPv6: status.podIP when IPv6, else the first IPv6 of status.podIPs, else "". */
export function podIPv6(pod: Pod): string {
  const candidates = [pod.status?.podIP, ...(pod.status?.podIPs ?? []).map((p) => p.ip)];
  for (const ip of candidates) {
    const b = ip === undefined ? null : parseIpv6(ip);
    if (b && !isV4Mapped(b)) return formatIpv6(b);
  }
  return "";
}

/** What the daemon records about `pod`. The policy is decoded even for pods outside the mesh, so the
 * pods listing can show what would apply; only `inMesh` pods are written to the datapath. */
export function podEntry(pod: Pod, mode: MeshMode): PodEntry {
  const meta = pod.metadata ?? {};
  const { policy, warnings } = podPolicy(meta.annotations ?? {}, mode);
  return {
    // The API server fills in "default"; pods read from files may leave it out.
    namespace: meta.namespace ?? "default",
    name: meta.name ?? "",
    uid: meta.uid ?? "",
    ip: podIPv4(pod),
    ip6: podIPv6(pod),
    inMesh: isInMesh(pod, mode),
    policy,
    warnings,
  };
}
