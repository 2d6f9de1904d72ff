/**
 * Shared command behaviour: --json, and one mapping from errors to what the
 * user sees (message, hint, exit code). Commands stay thin: parse, call, render.
 */
import {Command} from '@oclif/core'
import {HelperError} from '../errors.js'
import {renderError} from './render.js'

/**
 * oclif's parse errors (unknown flag, missing argument) are usage errors. Their
 * message spans lines ("Missing 1 required arg:" then the argument): keep what
 * names the problem, drop oclif's own "See more help" line.
 */
function toHelperError(err: unknown, command: string): HelperError {
  if (err instanceof HelperError) return err
  const e = err as Error & {oclif?: {exit?: number}; parse?: unknown}
  if (e && typeof e === 'object' && ('parse' in e || e.oclif?.exit === 2 || /Unexpected argument|Missing required|Nonexistent flag|Expected --/.test(e.message ?? ''))) {
    const text = (e.message ?? String(err)).split(/\n\s*(?:See more help|Note:)/)[0]
    const lines = text.split('\n').map((l) => l.trim()).filter(Boolean)
    return new HelperError('USAGE', lines.join(' ').replace(/: (\S+)\s{2,}/, ': $1 — '), {exit: 2, hint: `See 'sysext-helper ${command} --help'.`, cause: err})
  }
  return new HelperError('INTERNAL', `Unexpected failure: ${e?.message ?? String(err)}`, {
    hint: 'This is a bug in sysext-helper; rerun with DEBUG=sysext-helper for details and report it.',
    cause: err,
  })
}

export abstract class BaseCommand extends Command {
  static enableJsonFlag = true

  protected async catch(err: Error & {oclif?: {exit?: number}}): Promise<never> {
    if (err.oclif?.exit !== undefined && err.name === 'ExitError') throw err
    const error = toHelperError(err, this.id?.replace(/:/g, ' ') ?? '')
    if (process.env.DEBUG?.includes('sysext-helper') && error.cause) console.error(error.cause)
    process.exitCode = error.exit
    if (this.jsonEnabled()) this.logJson({error: error.toJSON()})
    else process.stderr.write(renderError(error))
    // ExitError makes oclif exit with our code without printing anything more.
    return this.exit(error.exit)
  }
}
