// The subcommand table.
import { command, type CommandEntry } from "./command.ts";
import { daemonCommand } from "./commands/daemon.ts";
import { mapsDumpCommand, podsCommand, statusCommand, versionCommand } from "./commands/inspect.ts";
import { installCniCommand, uninstallCniCommand, uninstallCommand } from "./commands/node.ts";
import { explainCommand, monitorCommand } from "./commands/observe.ts";

export const COMMANDS: readonly CommandEntry[] = [
  command(daemonCommand),
  command(statusCommand),
  command(podsCommand),
  command(mapsDumpCommand),
  command(explainCommand),
  command(monitorCommand),
  command(uninstallCommand),
  command(installCniCommand),
  command(uninstallCniCommand),
  command(versionCommand),
];
