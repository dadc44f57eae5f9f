// Where cgroup v2 is mounted differs between hosts (unified /sys/fs/cgroup on most nodes, the hybrid
// layout's /sys/fs/cgroup/unified elsewhere), so it is read from mountinfo rather than assumed.

export class CgroupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CgroupError";
  }
}

/** Mount points of cgroup2 filesystems, from a /proc/<pid>/mountinfo text. */
export function cgroup2MountsFrom(mountinfo: string): string[] {
  const out: string[] = [];
  for (const line of mountinfo.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const fsType = line.slice(sep + 3).split(" ")[0];
    if (fsType !== "cgroup2") continue;
    const mountPoint = line.slice(0, sep).split(" ")[4];
    if (mountPoint) {
      out.push(mountPoint.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8))));
    }
  }
  return out;
}

/** The cgroup2 mount of this process's mount namespace; throws naming what was read when there is none. */
export function cgroup2Root(mountinfoPath = "/proc/self/mountinfo"): string {
  const mounts = cgroup2MountsFrom(Deno.readTextFileSync(mountinfoPath));
  const first = mounts.sort((a, b) => a.length - b.length)[0];
  if (!first) throw new CgroupError(`no cgroup2 filesystem is mounted (read ${mountinfoPath})`);
  return first;
}

/** Checks that `path` is a directory on a cgroup2 filesystem. */
export function assertCgroup2Dir(path: string): void {
  const roots = cgroup2MountsFrom(Deno.readTextFileSync("/proc/self/mountinfo"));
  const real = Deno.realPathSync(path);
  if (!roots.some((r) => real === r || real.startsWith(r.endsWith("/") ? r : r + "/"))) {
    throw new CgroupError(
      `${path} is not inside a cgroup2 mount (cgroup2 is mounted at ${roots.join(", ")})`,
    );
  }
  if (!Deno.statSync(real).isDirectory) throw new CgroupError(`${path} is not a directory`);
}
