/**
 * The Manager does what an admin's `sysext-helper install APP-ID` does by
 * running exactly that command (`--json`) as a child: one implementation of
 * install, validation and confinement, and the service itself never links the
 * lifecycle (the dependency rules keep the privileged services apart from it).
 */
import {run} from '../exec.js'

export interface CliCommand {
  /** The node binary. */
  node: string
  /** The CLI entry (cli.js in the extension, bin/run.js in a checkout). */
  script: string
  timeoutMs: number
}

export interface CliError {
  code: string
  message: string
  hint?: string
  data?: Record<string, unknown>
}

export type CliOutcome = {ok: true; result: Record<string, unknown>} | {ok: false; error: CliError}

/** Runs `sysext-helper ARGS --json`; its JSON result or error, or a Failed-shaped error when it printed none. */
export async function runCli(cli: CliCommand, args: string[]): Promise<CliOutcome> {
  let stdout: string
  let failure: Error | undefined
  try {
    ;({stdout} = await run(cli.node, [cli.script, ...args, '--json'], {timeoutMs: cli.timeoutMs, env: {OCLIF_SKIP_NEW_VERSION_CHECK: 'true'}}))
  } catch (error) {
    // A refusal exits non-zero with its JSON error on stdout.
    failure = error as Error
    stdout = String((failure.cause as {stdout?: unknown} | undefined)?.stdout ?? '')
  }
  let parsed: Record<string, unknown> | undefined
  try {
    parsed = JSON.parse(stdout) as Record<string, unknown>
  } catch {
    parsed = undefined
  }
  if (parsed && typeof parsed.error === 'object' && parsed.error !== null) return {ok: false, error: parsed.error as CliError}
  if (parsed && !failure) return {ok: true, result: parsed}
  return {ok: false, error: {code: 'MANAGER_CLI_FAILED', message: failure ? failure.message : `'sysext-helper ${args.join(' ')}' printed no JSON result.`}}
}
