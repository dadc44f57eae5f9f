// `merbridge <subcommand> [flags]`: finds the subcommand, parses its flags strictly, sets up logging,
// runs it. Usage errors exit 2 with a message naming the problem; other failures exit 1.
import { helpText, UsageError } from "./args.ts";
import type { CommandEntry } from "./command.ts";
import { setupLogging, shutdownLogging } from "../log/logger.ts";
import { COMMANDS } from "./commands.ts";

function topHelp(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return `usage: merbridge <command> [flags]\n\neBPF traffic interception for service-mesh sidecars.\n\ncommands:\n${
    COMMANDS.map((c) => `  ${c.name.padEnd(w)}${c.summary}`).join("\n")
  }\n\nRun 'merbridge <command> --help' for a command's flags. Invoked as 'merbridge-cni' (or with CNI_COMMAND\nset) the executable is the CNI plugin.\n`;
}

function findCommand(args: string[]): { cmd: CommandEntry; rest: string[] } | undefined {
  // Two-word commands ("maps dump") first.
  for (const c of COMMANDS) {
    const words = c.name.split(" ");
    if (words.every((w, i) => args[i] === w)) return { cmd: c, rest: args.slice(words.length) };
  }
  return undefined;
}

export async function runCli(args: string[]): Promise<number> {
  if (args.length === 0 || args[0] === "help" || args[0] === "--help" || args[0] === "-h") {
    (args.length === 0 ? console.error : console.log)(topHelp());
    return args.length === 0 ? 2 : 0;
  }
  if (args[0] === "--version") args = ["version"];
  const found = findCommand(args);
  if (!found) {
    console.error(`merbridge: unknown command ${JSON.stringify(args[0])}\n\n${topHelp()}`);
    return 2;
  }
  const { cmd, rest } = found;
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(helpText(`merbridge ${cmd.usage ?? cmd.name + " [flags]"}`, cmd.summary, cmd.flags));
    return 0;
  }
  let invocation;
  try {
    invocation = cmd.parse(rest, Deno.env.toObject());
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`merbridge ${cmd.name}: ${e.message}\nRun 'merbridge ${cmd.name} --help' for its flags.`);
      return 2;
    }
    throw e;
  }
  setupLogging(invocation.logging);
  try {
    return await invocation.run();
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`merbridge ${cmd.name}: ${e.message}`);
      return 2;
    }
    console.error(`merbridge ${cmd.name}: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  } finally {
    shutdownLogging();
  }
}
