// Attaches the inbound interception programs to one pod's interface, inside the pod's network
// namespace: XDP (a pinned link, so it survives the daemon and is detached by removing the pin) or TC
// ingress, plus TC egress for the replies. Also owns the interface's tx checksum offload setting, which
// it turns off (unless told otherwise) and puts back on detach.
import { attachXdp, BpfLink, type XdpLinkMode } from "../bpf/link.ts";
import { xdpQuery } from "../bpf/xdp.ts";
import type { ProgramFd } from "../bpf/prog_attach.ts";
import { ensureBpffsDir, isPinned, removePinTree } from "../bpf/pins.ts";
import { tcAttach, tcDetach, tcEnsureHook } from "../bpf/tc.ts";
import { ifNameToIndex } from "../ffi/libc.ts";
import { interfaceDriver, setTxChecksum, txChecksumEnabled } from "../netns/interface.ts";
import { withNetns } from "../netns/netns.ts";
import { pathExists } from "../util/fs.ts";

export type IngressHook = "xdp" | "tc";

/** Our TC filters' identity on a pod interface ("MB"); chosen to stay clear of priority 1 others use. */
export const TC_HANDLE = 0x4d42;
export const TC_PRIORITY = 0x4d42;

/** Loaded now or reopened from their pins: only the fds matter here. */
export interface IngressPrograms {
  xdp: ProgramFd;
  tcIngress: ProgramFd;
  tcEgress: ProgramFd;
}

export interface IngressTarget {
  netnsPath: string;
  ifName: string;
  /** bpffs directory owned by this attachment (the XDP link is pinned in it). */
  pinDir: string;
}

export interface IngressResult {
  ifindex: number;
  /** We switched tx checksum offload off and must switch it back on detach. */
  txChanged: boolean;
}

/** "auto": generic on a veth (native XDP there costs the peer its GSO), native on anything else. */
export type XdpModeOption = XdpLinkMode | "auto";

export function resolveXdpMode(option: XdpModeOption, driver: string): XdpLinkMode {
  if (option !== "auto") return option;
  return driver === "veth" ? "generic" : "native";
}

export interface IngressOptions {
  hook: IngressHook;
  hardwareChecksum: boolean;
  /** How the XDP program runs (hook "xdp"); default "auto". */
  xdpMode?: XdpModeOption;
  /**
   * An earlier attach (another daemon, before a restart with --hardware-checksum=true) switched tx
   * offload off: switch it back on now instead of leaving the pod on the slower setting.
   */
  txChangedEarlier?: boolean;
}

function detachPinnedXdp(pin: string): void {
  using link = BpfLink.openPinned(pin);
  link.detach();
  link.unpin();
}

export function attachIngress(
  t: IngressTarget,
  progs: IngressPrograms,
  opts: IngressOptions,
): IngressResult {
  ensureBpffsDir(t.pinDir);
  const xdpPin = `${t.pinDir}/xdp`;
  return withNetns(t.netnsPath, () => {
    const ifindex = ifNameToIndex(t.ifName);
    let txChanged = opts.txChangedEarlier ?? false;
    let switchedOff = false;
    if (!opts.hardwareChecksum && txChecksumEnabled(t.ifName)) {
      setTxChecksum(t.ifName, false);
      txChanged = true;
      switchedOff = true;
    } else if (opts.hardwareChecksum && txChanged) {
      if (!txChecksumEnabled(t.ifName)) setTxChecksum(t.ifName, true);
      txChanged = false;
    }
    try {
      return attachPrograms(t, progs, opts, ifindex, xdpPin, txChanged);
    } catch (e) {
      // The caller never learns that offload was switched off by an attach that failed.
      if (switchedOff) {
        try {
          setTxChecksum(t.ifName, true);
        } catch { /* the interface went away */ }
      }
      throw e;
    }
  });
}

function attachPrograms(
  t: IngressTarget,
  progs: IngressPrograms,
  opts: IngressOptions,
  ifindex: number,
  xdpPin: string,
  txChanged: boolean,
): IngressResult {
  tcEnsureHook(ifindex);
  tcAttach({
    ifindex,
    direction: "egress",
    prog: progs.tcEgress,
    handle: TC_HANDLE,
    priority: TC_PRIORITY,
    replace: true,
  });
  if (opts.hook === "xdp") {
    tcDetach({ ifindex, direction: "ingress", handle: TC_HANDLE, priority: TC_PRIORITY });
    const mode = resolveXdpMode(opts.xdpMode ?? "auto", interfaceDriver(t.ifName));
    const current = isPinned(xdpPin) ? xdpQuery(ifindex).attachMode : undefined;
    if (current === (mode === "native" ? "drv" : "skb")) {
      using link = BpfLink.openPinned(xdpPin);
      link.update(progs.xdp);
    } else {
      // Another mode (a restart with another --xdp-mode) needs another link. Detach explicitly:
      // the kernel frees an unpinned link later, and the interface takes one XDP mode at a time.
      if (isPinned(xdpPin)) detachPinnedXdp(xdpPin);
      using _link = attachXdp(progs.xdp, ifindex, xdpPin, mode);
    }
  } else {
    if (isPinned(xdpPin)) detachPinnedXdp(xdpPin);
    tcAttach({
      ifindex,
      direction: "ingress",
      prog: progs.tcIngress,
      handle: TC_HANDLE,
      priority: TC_PRIORITY,
      replace: true,
    });
  }
  return { ifindex, txChanged };
}

/**
 * Removes what attachIngress added. Works when the namespace is already gone (the pin is removed; the
 * filters went with the interface).
 */
export function detachIngress(t: IngressTarget, restoreTx: boolean): void {
  removePinTree(t.pinDir);
  if (!pathExists(t.netnsPath)) return;
  try {
    withNetns(t.netnsPath, () => {
      let ifindex: number;
      try {
        ifindex = ifNameToIndex(t.ifName);
      } catch {
        return; // interface already gone
      }
      for (const direction of ["ingress", "egress"] as const) {
        tcDetach({ ifindex, direction, handle: TC_HANDLE, priority: TC_PRIORITY });
      }
      if (restoreTx) setTxChecksum(t.ifName, true);
    });
  } catch (e) {
    // A namespace being torn down can vanish between the check and setns.
    if (pathExists(t.netnsPath)) throw e;
  }
}
