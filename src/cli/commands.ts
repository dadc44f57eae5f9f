// The subcommand table.
import type { Command } from "./command.ts";
import { daemonCommand } from "./commands/daemon.ts";
import { mapsDumpCommand, podsCommand, statusCommand, versionCommand } from "./commands/inspect.ts";
import { installCniCommand, uninstallCniCommand, uninstallCommand } from "./commands/node.ts";
import { explainCommand, monitorCommand } from "./commands/observe.ts";

export const COMMANDS: readonly Command[] = [
  daemonCommand,
  statusCommand,
  podsCommand,
  mapsDumpCommand,
  explainCommand,
  monitorCommand,
  uninstallCommand,
  installCniCommand,
  uninstallCniCommand,
  versionCommand,
] as Command[];
