import assert from "node:assert/strict";
import { LibcError } from "../../src/ffi/errors.ts";
import {
  acceptFd,
  AF_INET,
  bindInet4,
  closeFd,
  connectInet4,
  getPid,
  getsockoptInt,
  ifNameToIndex,
  ioctlPtr,
  listenFd,
  O_DIRECTORY,
  O_RDONLY,
  openFd,
  parseSockaddrIn4,
  setsockoptInt,
  SO_REUSEADDR,
  SOCK_STREAM,
  sockaddrIn4,
  socketFd,
  sockNameInet4,
  SOL_SOCKET,
  statfsType,
} from "../../src/ffi/libc.ts";
import { thrown } from "./helpers.ts";

Deno.test("libc wrappers", async (t) => {
  await t.step("getPid is this process", () => {
    assert.equal(getPid(), Deno.pid);
  });

  await t.step("openFd/closeFd on a directory; failures throw LibcError with the errno", () => {
    const fd = openFd("/proc", O_RDONLY | O_DIRECTORY);
    assert.ok(fd >= 0);
    closeFd(fd);
    const missing = thrown(() => openFd("/nonexistent/dir", O_RDONLY));
    assert.ok(missing instanceof LibcError);
    assert.equal(missing.code, "ENOENT");
    assert.match(missing.message, /^open\(\/nonexistent\/dir\): No such file or directory \(errno 2\)$/);
    const notDir = thrown(() => openFd("/proc/self/status", O_RDONLY | O_DIRECTORY));
    assert.ok(notDir instanceof LibcError);
    assert.equal(notDir.code, "ENOTDIR");
    const twice = thrown(() => closeFd(fd));
    assert.ok(twice instanceof LibcError);
    assert.equal(twice.code, "EBADF");
  });

  await t.step("sockaddr_in encoding: family little-endian, port and address in network order", () => {
    const sa = sockaddrIn4("10.1.2.3", 0x1f90);
    assert.deepEqual(Array.from(sa.subarray(0, 8)), [AF_INET, 0, 0x1f, 0x90, 10, 1, 2, 3]);
    assert.equal(sa.length, 16);
    assert.deepEqual(parseSockaddrIn4(sa), { address: "10.1.2.3", port: 8080 });
    assert.throws(() => sockaddrIn4("10.1.2", 1), TypeError);
    assert.throws(() => sockaddrIn4("10.1.2.256", 1), TypeError);
    assert.throws(() => sockaddrIn4("127.0.0.1", 70000), RangeError);
  });

  await t.step("a TCP round trip through socket/setsockopt/bind/listen/connect/accept", async () => {
    const listener = socketFd(AF_INET, SOCK_STREAM);
    const client = socketFd(AF_INET, SOCK_STREAM);
    let accepted = -1;
    try {
      setsockoptInt(listener, SOL_SOCKET, SO_REUSEADDR, 1);
      assert.equal(getsockoptInt(listener, SOL_SOCKET, SO_REUSEADDR), 1);
      bindInet4(listener, "127.0.0.1", 0);
      listenFd(listener, 4);
      const { address, port } = sockNameInet4(listener);
      assert.equal(address, "127.0.0.1");
      assert.ok(port > 0);
      // A loopback connect completes against the listen backlog, so blocking calls cannot hang.
      connectInet4(client, "127.0.0.1", port);
      accepted = acceptFd(listener);
      assert.ok(accepted >= 0);
      assert.equal(sockNameInet4(accepted).port, port);
      // The same port again while in use: EADDRINUSE, as a typed error.
      const again = socketFd(AF_INET, SOCK_STREAM);
      try {
        const err = thrown(() => bindInet4(again, "127.0.0.1", port));
        assert.ok(err instanceof LibcError);
        assert.equal(err.code, "EADDRINUSE");
      } finally {
        closeFd(again);
      }
    } finally {
      if (accepted >= 0) closeFd(accepted);
      closeFd(client);
      closeFd(listener);
    }
    await Promise.resolve();
  });

  await t.step("ifNameToIndex finds lo and names the missing interface otherwise", () => {
    assert.ok(ifNameToIndex("lo") >= 1);
    const err = thrown(() => ifNameToIndex("nosuchif0"));
    assert.ok(err instanceof LibcError);
    assert.equal(err.code, "ENODEV");
    assert.match(err.message, /if_nametoindex\(nosuchif0\)/);
  });

  await t.step("ioctlPtr passes the buffer and reports errors (FIONREAD on a socket)", () => {
    const FIONREAD = 0x541b;
    const fd = socketFd(AF_INET, SOCK_STREAM);
    try {
      const out = new Uint8Array(4).fill(0xff);
      assert.equal(ioctlPtr(fd, FIONREAD, out), 0);
      assert.deepEqual(Array.from(out), [0, 0, 0, 0]);
      const err = thrown(() => ioctlPtr(fd, 0x89ff, new Uint8Array(64)));
      assert.ok(err instanceof LibcError);
    } finally {
      closeFd(fd);
    }
  });

  await t.step("statfsType reports the filesystem magic", () => {
    assert.equal(statfsType("/proc"), 0x9fa0n);
    const err = thrown(() => statfsType("/nonexistent/x"));
    assert.ok(err instanceof LibcError);
    assert.equal(err.code, "ENOENT");
  });
});
