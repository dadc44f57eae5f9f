// The parts of the CNI specification the plugin speaks: the versions it accepts, the well-known
// error codes and the error document runtimes read from stdout.

/** The plugin's type name: the runtime runs the executable with this name from its CNI bin dir. */
export const PLUGIN_TYPE = "merbridge-cni";

/** The spec version the plugin reports in VERSION output and in errors it cannot attribute to a config. */
export const LATEST_CNI_VERSION = "1.1.0";

/** Chaining (prevResult) exists since 0.3.0, so older configs cannot carry this plugin. */
export const SUPPORTED_CNI_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;

export type CniVersion = (typeof SUPPORTED_CNI_VERSIONS)[number];

export function isSupportedCniVersion(v: unknown): v is CniVersion {
  return typeof v === "string" && (SUPPORTED_CNI_VERSIONS as readonly string[]).includes(v);
}

/** Well-known error codes (CNI spec, "Error" section); 1-99 are reserved by the spec. */
export const CniErrorCode = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnv: 4,
  ioFailure: 5,
  decodeFailure: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  /** STATUS only: the plugin cannot serve ADD right now. */
  pluginNotAvailable: 50,
  /** Plugin-specific (100 and up): a failure inside the plugin no other code describes. */
  internal: 100,
} as const;

/** A failure to be reported to the runtime as the spec's error document. */
export class CniError extends Error {
  override readonly name = "CniError";
  constructor(readonly code: number, msg: string, readonly details?: string) {
    super(msg);
  }
}

/** The error document: `{cniVersion, code, msg, details?}`. */
export function errorDocument(cniVersion: string, err: CniError): string {
  const doc: Record<string, unknown> = { cniVersion, code: err.code, msg: err.message };
  if (err.details) doc.details = err.details;
  return JSON.stringify(doc);
}

/** The VERSION command's answer. */
export function versionDocument(): string {
  return JSON.stringify({ cniVersion: LATEST_CNI_VERSION, supportedVersions: [...SUPPORTED_CNI_VERSIONS] });
}
