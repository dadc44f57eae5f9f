// The subcommand table.
import type { Command } from "./command.ts";
import { daemonCommand } from "./commands/daemon.ts";
import { mapsDumpCommand, podsCommand, statusCommand, versionCommand } from "./commands/inspect.ts";
import { installCniCommand, uninstallCniCommand, uninstallCommand } from "./commands/node.ts";

export const COMMANDS: readonly Command[] = [
  daemonCommand,
  statusCommand,
  podsCommand,
  mapsDumpCommand,
  uninstallCommand,
  installCniCommand,
  uninstallCniCommand,
  versionCommand,
] as Command[];
