/** Adapter over polkit: is it running, reload it after actions changed, does it know an action. */
import {run} from '../exec.js'
import {isActive, reloadOrRestart, show} from '../systemd/systemctl.js'

export const POLKIT_UNIT = 'polkit.service'

export async function polkitActive(): Promise<boolean> {
  return isActive(POLKIT_UNIT)
}

/** polkit is usually D-Bus activated: installed but not running until first used. */
export async function polkitInstalled(): Promise<boolean> {
  return (await show(POLKIT_UNIT, ['LoadState'])).LoadState === 'loaded'
}

export async function polkitVersion(): Promise<string | undefined> {
  try {
    const {stdout} = await run('pkaction', ['--version'])
    return /(\d[\d.]*)/.exec(stdout)?.[1]
  } catch {
    return undefined
  }
}

/**
 * polkit reads actions at start; newer versions reload on SIGHUP (systemctl
 * reload), older ones need a restart.
 */
export async function reloadPolkit(): Promise<'reloaded' | 'restarted'> {
  return reloadOrRestart(POLKIT_UNIT)
}

export async function actionKnown(actionId: string): Promise<boolean> {
  const {exitCode} = await run('pkaction', ['--action-id', actionId], {okCodes: [0, 1]})
  return exitCode === 0
}
