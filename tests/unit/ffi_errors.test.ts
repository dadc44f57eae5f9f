import assert from "node:assert/strict";
import { Errno, errnoFromName, errnoName } from "../../src/ffi/errno.ts";
import {
  BpfError,
  checkLibbpf,
  checkLibbpfPtr,
  checkLibc,
  describeLibbpfError,
  describeLibcError,
  hasErrno,
  LibcError,
} from "../../src/ffi/errors.ts";
import { libbpf, libc } from "../../src/ffi/library.ts";
import { cString } from "../../src/ffi/native.ts";
import { thrown } from "./helpers.ts";

Deno.test("errno names", async (t) => {
  await t.step("kernel, kernel-internal and libbpf codes have their symbolic names", () => {
    assert.equal(errnoName(2), "ENOENT");
    assert.equal(errnoName(-17), "EEXIST");
    assert.equal(errnoName(95), "EOPNOTSUPP");
    assert.equal(errnoName(524), "ENOTSUPP");
    assert.equal(errnoName(4007), "LIBBPF_ERRNO__VERIFY");
  });
  await t.step("unknown numbers still produce a stable code", () => {
    assert.equal(errnoName(3999), "E3999");
  });
  await t.step("names map back to numbers", () => {
    assert.equal(errnoFromName("EBUSY"), Errno.EBUSY);
    assert.equal(errnoFromName("ENOSPC"), 28);
    assert.equal(errnoFromName("NOPE"), undefined);
  });
});

Deno.test("BpfError and LibcError formatting", async (t) => {
  await t.step("message is '<op>: <text> (errno N)' with the code attached", () => {
    const err = new BpfError("bpf_obj_get(/sys/fs/bpf/x)", -2);
    assert.equal(err.message, "bpf_obj_get(/sys/fs/bpf/x): No such file or directory (errno 2)");
    assert.equal(err.name, "BpfError");
    assert.equal(err.op, "bpf_obj_get(/sys/fs/bpf/x)");
    assert.equal(err.errno, 2);
    assert.equal(err.code, "ENOENT");
    assert.ok(err instanceof Error);
  });

  await t.step("libbpf's own codes get libbpf's text", () => {
    const err = new BpfError("bpf_object__load(x.o)", 4007);
    assert.equal(err.code, "LIBBPF_ERRNO__VERIFY");
    assert.match(err.message, /^bpf_object__load\(x\.o\): .*verifier.* \(errno 4007\)$/i);
    assert.equal(describeLibbpfError(-4007), err.description);
  });

  await t.step("detail goes on its own line, the log is kept aside", () => {
    const err = new BpfError("bpf_object__load(x.o)", 13, {
      detail: "prog 'p': R0 invalid mem access",
      log: "full log",
    });
    assert.equal(
      err.message,
      "bpf_object__load(x.o): Permission denied (errno 13)\nprog 'p': R0 invalid mem access",
    );
    assert.equal(err.log, "full log");
    assert.equal(err.detail, "prog 'p': R0 invalid mem access");
  });

  await t.step("a description override replaces the library text", () => {
    const err = new LibcError("setns(5, 0x40000000)", 22, { description: "not a network namespace" });
    assert.equal(err.message, "setns(5, 0x40000000): not a network namespace (errno 22)");
    assert.equal(err.code, "EINVAL");
  });

  await t.step("LibcError uses strerror", () => {
    const err = new LibcError("open(/nope)", 2);
    assert.equal(err.message, "open(/nope): No such file or directory (errno 2)");
    assert.equal(err.name, "LibcError");
    assert.equal(describeLibcError(13), "Permission denied");
  });

  await t.step("errno 0 is reported as such rather than as success", () => {
    assert.match(new BpfError("x", 0).message, /failed without setting errno \(errno 0\)/);
  });

  await t.step("hasErrno matches both classes by number, in either sign", () => {
    assert.ok(hasErrno(new BpfError("x", 2), Errno.ENOENT));
    assert.ok(hasErrno(new LibcError("x", 17), -Errno.EEXIST));
    assert.ok(!hasErrno(new LibcError("x", 17), Errno.ENOENT));
    assert.ok(!hasErrno(new Error("ENOENT"), Errno.ENOENT));
  });
});

Deno.test("return-code checks", async (t) => {
  await t.step("checkLibbpf passes non-negative values and throws on -errno", () => {
    assert.equal(checkLibbpf("op", 7), 7);
    const err = thrown(() => checkLibbpf("bpf_map_update_elem(m)", -17));
    assert.ok(err instanceof BpfError);
    assert.equal(err.code, "EEXIST");
  });

  await t.step("checkLibbpfPtr reads errno of a failed pointer call", () => {
    const err = thrown(() =>
      checkLibbpfPtr(
        "bpf_object__open_file(/nonexistent)",
        libbpf().bpf_object__open_file(cString("/nonexistent/x.bpf.o"), null),
      )
    );
    assert.ok(err instanceof BpfError);
    assert.equal(err.code, "ENOENT");
    assert.equal(err.op, "bpf_object__open_file(/nonexistent)");
  });

  await t.step("checkLibc reads errno of a failed -1 call", () => {
    const err = thrown(() => checkLibc("close(-1)", libc().close(-1)));
    assert.ok(err instanceof LibcError);
    assert.equal(err.code, "EBADF");
  });
});
