/**
 * Shared command behaviour: --json, and one mapping from errors to what the
 * user sees (message, hint, exit code). Commands stay thin: parse, call, render.
 */
import {Command} from '@oclif/core'
import {HelperError} from '../errors.js'
import {renderError} from './render.js'

/** oclif's parse errors (unknown flag, missing argument) are usage errors. */
function toHelperError(err: unknown): HelperError {
  if (err instanceof HelperError) return err
  const e = err as Error & {oclif?: {exit?: number}; parse?: unknown}
  if (e && typeof e === 'object' && ('parse' in e || e.oclif?.exit === 2 || /Unexpected argument|Missing required|Nonexistent flag|Expected --/.test(e.message ?? '')))
    return new HelperError('USAGE', (e.message ?? String(err)).split('\n')[0], {exit: 2, hint: 'See --help.', cause: err})
  return new HelperError('INTERNAL', `Unexpected failure: ${e?.message ?? String(err)}`, {
    hint: 'This is a bug in sysext-helper; rerun with DEBUG=sysext-helper for details and report it.',
    cause: err,
  })
}

export abstract class BaseCommand extends Command {
  static enableJsonFlag = true

  protected async catch(err: Error & {oclif?: {exit?: number}}): Promise<never> {
    if (err.oclif?.exit !== undefined && err.name === 'ExitError') throw err
    const error = toHelperError(err)
    if (process.env.DEBUG?.includes('sysext-helper') && error.cause) console.error(error.cause)
    process.exitCode = error.exit
    if (this.jsonEnabled()) this.logJson({error: error.toJSON()})
    else process.stderr.write(renderError(error))
    // ExitError makes oclif exit with our code without printing anything more.
    return this.exit(error.exit)
  }
}
