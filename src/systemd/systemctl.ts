/** Adapter over systemctl for the few manager operations sysext-helper needs. */
import {run} from '../exec.js'

export async function daemonReload(): Promise<void> {
  await run('systemctl', ['daemon-reload'], {timeoutMs: 90_000})
}

export async function isActive(unit: string): Promise<boolean> {
  const {stdout} = await run('systemctl', ['is-active', unit], {okCodes: [0, 1, 2, 3, 4]})
  return stdout.trim() === 'active' || stdout.trim() === 'reloading'
}

export async function show(unit: string, properties: string[]): Promise<Record<string, string>> {
  return (await showUnits([unit], properties))[0]
}

/** Properties of several units from one systemctl call (its output is one block per unit, in order). */
export async function showUnits(units: string[], properties: string[]): Promise<Array<Record<string, string>>> {
  const {stdout} = await run('systemctl', ['show', ...units, ...properties.map((p) => `--property=${p}`)])
  return stdout.split(/\n\n/).map((block) => {
    const out: Record<string, string> = {}
    for (const line of block.split('\n')) {
      const eq = line.indexOf('=')
      if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1)
    }
    return out
  })
}

/** Stops units and waits for them (systemctl stop blocks until the job finishes). */
export async function stop(units: string[]): Promise<void> {
  if (units.length > 0) await run('systemctl', ['stop', ...units], {timeoutMs: 120_000})
}

/** `systemctl reload`, falling back to restart for daemons that can't reload. Returns what was done. */
export async function reloadOrRestart(unit: string): Promise<'reloaded' | 'restarted'> {
  try {
    await run('systemctl', ['reload', unit], {timeoutMs: 60_000})
    return 'reloaded'
  } catch {
    await run('systemctl', ['restart', unit], {timeoutMs: 60_000})
    return 'restarted'
  }
}

/** `systemctl is-enabled`: enabled (or static/alias/generated: started at boot without us) or not. */
export async function isEnabled(unit: string): Promise<{enabled: boolean; state: string}> {
  const {stdout} = await run('systemctl', ['is-enabled', unit], {okCodes: [0, 1, 2, 3, 4]})
  const state = stdout.trim() || 'unknown'
  return {enabled: ['enabled', 'enabled-runtime', 'static', 'alias', 'generated', 'indirect'].includes(state) && state !== 'indirect', state}
}

export async function enable(unit: string): Promise<void> {
  await run('systemctl', ['enable', unit], {timeoutMs: 60_000})
}
