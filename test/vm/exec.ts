/**
 * Small helpers to run host commands for the guest lab (setup and tests).
 *
 * @module
 */

/** A host command exited with a non-zero status or could not be started. */
export class CommandError extends Error {
  /** Exit code of the command, or null when it could not be started. */
  readonly code: number | null;
  /** What the command wrote to stderr (trimmed, at most 4 KiB). */
  readonly stderr: string;

  constructor(argv: readonly string[], code: number | null, stderr: string) {
    const shown = stderr.length > 4096 ? stderr.slice(-4096) : stderr;
    super(
      `Command failed (${code === null ? "not started" : `exit ${code}`}): ${argv.join(" ")}` +
        (shown.trim() ? `\n${shown.trim()}` : ""),
    );
    this.name = "CommandError";
    this.code = code;
    this.stderr = shown.trim();
  }
}

/** Output of a finished command. */
export interface CommandOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options for {@linkcode runCommand}. */
export interface RunOptions {
  /** Bytes written to the command's stdin. */
  stdin?: Uint8Array;
  /** Working directory. */
  cwd?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
}

/**
 * Runs `argv` to completion and returns its exit code and output; never throws for a non-zero
 * exit code, only when the program cannot be started.
 */
export async function runCommand(
  argv: readonly string[],
  options: RunOptions = {},
): Promise<CommandOutput> {
  const [program, ...args] = argv;
  if (program === undefined) throw new TypeError("Command is empty.");
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args,
      cwd: options.cwd,
      env: options.env,
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    throw new CommandError(argv, null, err instanceof Error ? err.message : String(err));
  }
  const feed = async (data: Uint8Array): Promise<void> => {
    const writer = child.stdin.getWriter();
    try {
      await writer.write(data);
      await writer.close();
    } catch {
      // the command stopped reading; its exit code tells what happened
    }
  };
  // Feed stdin while draining stdout, so a command that writes before it has read all its input
  // cannot deadlock against a full pipe.
  const [out] = await Promise.all([
    child.output(),
    options.stdin ? feed(options.stdin) : Promise.resolve(),
  ]);
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs `argv` and returns its stdout; throws {@linkcode CommandError} on a non-zero exit. */
export async function runChecked(
  argv: readonly string[],
  options: RunOptions = {},
): Promise<string> {
  const out = await runCommand(argv, options);
  if (out.code !== 0) throw new CommandError(argv, out.code, out.stderr || out.stdout);
  return out.stdout;
}

/** Whether `name` is an executable found on `PATH` (or an existing absolute path). */
export async function which(name: string): Promise<string | null> {
  const dirs = name.includes("/")
    ? [""]
    : (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":");
  for (const dir of dirs) {
    const path = dir === "" ? name : `${dir}/${name}`;
    try {
      const st = await Deno.stat(path);
      if (st.isFile && st.mode !== null && (st.mode & 0o111) !== 0) return path;
    } catch {
      // not here; keep looking
    }
  }
  return null;
}
