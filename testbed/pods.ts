// Pod documents for the daemon's --pods-file in tests (JSON is YAML, so no templating).
import type { Pod } from "../src/pods/source.ts";

export interface TestPodSpec {
  /** Set once the pod runs; CNI tests add pods before their IP exists. */
  ip?: string;
  /** A second pod IP (status.podIPs), for dual-stack pods. */
  ip6?: string;
  annotations?: Record<string, string>;
  /** An Istio sidecar (istio-proxy container and status annotation); default true. */
  meshed?: boolean;
  node?: string;
}

export function podDoc(name: string, o: TestPodSpec = {}): Pod {
  const meshed = o.meshed ?? true;
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace: "default",
      uid: `uid-${name}`,
      annotations: { ...(meshed ? { "sidecar.istio.io/status": "{}" } : {}), ...o.annotations },
    },
    spec: {
      nodeName: o.node ?? "test-node",
      containers: [{ name: "app" }, ...(meshed ? [{ name: "istio-proxy" }] : [])],
    },
    status: o.ip
      ? { phase: "Running", podIP: o.ip, ...(o.ip6 ? { podIPs: [{ ip: o.ip }, { ip: o.ip6 }] } : {}) }
      : { phase: "Pending" },
  };
}

export function podYaml(name: string, o: TestPodSpec = {}): string {
  return `${JSON.stringify(podDoc(name, o))}\n---\n`;
}
