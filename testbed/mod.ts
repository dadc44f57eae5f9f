// The testbed: throwaway nodes and pods out of network namespaces, veths and child cgroups, the real CNI
// chain, the real daemon, the test peers (nettool.py, among them the Envoy-like sidecar) and our datapath
// loaded in process. The kernel tests, the benchmark and the demo all build on it; everything it makes is
// registered on a Scope (an AsyncDisposableStack) and taken down in reverse order, on failure too.
export * from "./cli.ts";
export * from "./cni.ts";
export * from "./daemon.ts";
export * from "./datapath.ts";
export * from "./istio_iptables.ts";
export * from "./netns.ts";
export * from "./peers.ts";
export * from "./pods.ts";
export * from "./proc.ts";
export * from "./root.ts";
export * from "./scope.ts";
export * from "./world.ts";
