// Routes libbpf's own messages (warnings, the verifier log of a rejected program, debug chatter)
// into the "merbridge.libbpf" logger instead of libbpf's default of printing to stderr by itself.
// libbpf hands us a printf format and a va_list; libc's vsnprintf renders them.
//
// library.ts installs the callback as soon as it opens libbpf, so no message can reach stderr by
// libbpf's default path before we route it.
import { getLogger } from "../log/logger.ts";
import { LibbpfPrintLevel, type LibbpfSymbols } from "./libbpf_symbols.ts";
import type { LibcSymbols } from "./libc_symbols.ts";

export type LibbpfLevel = "warning" | "info" | "debug";

export interface LibbpfMessage {
  level: LibbpfLevel;
  text: string;
}

const PRINT_FN = {
  parameters: [
    "u32", // enum libbpf_print_level level
    "pointer", // const char *format
    "pointer", // va_list ap
  ],
  result: "i32",
} as const satisfies Deno.UnsafeCallbackDefinition;

// vsnprintf consumes the va_list it is given, so a second pass (when the text outgrew the first
// buffer) needs an untouched one. va_copy is a plain memory copy of the va_list object on these
// ABIs; on others we skip the copy and render once into a large buffer.
const VA_LIST_SIZE: Partial<Record<typeof Deno.build.arch, number>> = { x86_64: 24, aarch64: 32 };
const FIRST_PASS_SIZE = 4096;
const SINGLE_PASS_SIZE = 1 << 22;

const decoder = new TextDecoder();
const logger = getLogger("libbpf");
const collectors: LibbpfMessage[][] = [];
let callback: Deno.UnsafeCallback<typeof PRINT_FN> | undefined;
let vsnprintf: LibcSymbols["vsnprintf"] | undefined;
const firstPass = new Uint8Array(FIRST_PASS_SIZE);

function levelOf(level: number): LibbpfLevel {
  if (level === LibbpfPrintLevel.WARN) return "warning";
  if (level === LibbpfPrintLevel.INFO) return "info";
  return "debug";
}

function render(print: LibcSymbols["vsnprintf"], format: Deno.PointerObject, ap: Deno.PointerValue): string {
  const vaSize = VA_LIST_SIZE[Deno.build.arch];
  if (vaSize === undefined || ap === null) {
    const buf = new Uint8Array(SINGLE_PASS_SIZE);
    const n = print(buf, BigInt(buf.length), format, ap);
    return n < 0
      ? Deno.UnsafePointerView.getCString(format)
      : decoder.decode(buf.subarray(0, Math.min(n, buf.length - 1)));
  }
  const apCopy = new Uint8Array(vaSize);
  apCopy.set(new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ap, vaSize)));
  const n = print(firstPass, BigInt(firstPass.length), format, Deno.UnsafePointer.of(apCopy));
  if (n < 0) return Deno.UnsafePointerView.getCString(format);
  if (n < firstPass.length) return decoder.decode(firstPass.subarray(0, n));
  const big = new Uint8Array(n + 1);
  print(big, BigInt(big.length), format, ap);
  return decoder.decode(big.subarray(0, n));
}

function onPrint(level: number, format: Deno.PointerValue, ap: Deno.PointerValue): number {
  // An exception must not unwind into libbpf's C frames.
  try {
    if (format === null || vsnprintf === undefined) return 0;
    const message: LibbpfMessage = { level: levelOf(level), text: render(vsnprintf, format, ap).trimEnd() };
    for (const sink of collectors) sink.push(message);
    if (quiet > 0) logger.debug("{message}", { message: message.text });
    else if (message.level === "warning") logger.warn("{message}", { message: message.text });
    else if (message.level === "info") logger.info("{message}", { message: message.text });
    else logger.debug("{message}", { message: message.text });
  } catch {
    // Losing one diagnostic line is better than crashing the process from inside libbpf.
  }
  return 0;
}

/** Installs the print callback into `bpf` (once per process; later calls do nothing). */
export function installLibbpfPrint(bpf: LibbpfSymbols, c: LibcSymbols): void {
  if (callback) return;
  vsnprintf = c.vsnprintf;
  const cb = new Deno.UnsafeCallback(PRINT_FN, onPrint);
  bpf.libbpf_set_print(cb.pointer);
  // libbpf keeps the pointer for the life of the process, so the callback is never closed.
  callback = cb;
}

/**
 * Runs `fn` and also appends every libbpf message printed meanwhile to `sink`, so a failure can
 * carry libbpf's explanation (e.g. the verifier log) in the error itself.
 */
let quiet = 0;

/**
 * Runs `fn` with libbpf's messages logged at debug level: for calls whose failure is expected and
 * handled by the caller (creating a qdisc that exists, removing a filter that is gone), where
 * libbpf's own warning would only alarm an operator.
 */
export function quietLibbpf<T>(fn: () => T): T {
  quiet++;
  try {
    return fn();
  } finally {
    quiet--;
  }
}

export function collectLibbpfMessages<T>(sink: LibbpfMessage[], fn: () => T): T {
  collectors.push(sink);
  try {
    return fn();
  } finally {
    collectors.splice(collectors.lastIndexOf(sink), 1);
  }
}
