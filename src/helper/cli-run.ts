/**
 * The Manager does what an admin's `sysext-helper install APP-ID` does by
 * running exactly that command (`--json`) as a child: one implementation of
 * install, validation and confinement, and the service itself never links the
 * lifecycle (the dependency rules keep the privileged services apart from it).
 */
import {execFile} from 'node:child_process'

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
export function runCli(cli: CliCommand, args: string[]): Promise<CliOutcome> {
  return new Promise((resolve) => {
    execFile(
      cli.node,
      [cli.script, ...args, '--json'],
      {timeout: cli.timeoutMs, maxBuffer: 16 * 1024 * 1024, env: {PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', HOME: '/root', OCLIF_SKIP_NEW_VERSION_CHECK: 'true'}},
      (err, stdout, stderr) => {
        let parsed: Record<string, unknown> | undefined
        try {
          parsed = JSON.parse(stdout) as Record<string, unknown>
        } catch {
          parsed = undefined
        }
        if (parsed && typeof parsed.error === 'object' && parsed.error !== null) return resolve({ok: false, error: parsed.error as CliError})
        if (parsed && !err) return resolve({ok: true, result: parsed})
        const tail = `${stderr}`.trim().split('\n').slice(-2).join(' ')
        resolve({ok: false, error: {code: 'MANAGER_CLI_FAILED', message: `'sysext-helper ${args.join(' ')}' failed${err ? ` (${err.message.split('\n')[0]})` : ''}: ${tail || 'no JSON on its output'}`}})
      },
    )
  })
}
