/** D-Bus server addresses: parse, pick a unix socket, and the well-known defaults. */
import {HelperError} from '../errors.js'

export type BusKind = 'system' | 'session'

export const SYSTEM_BUS_DEFAULT = 'unix:path=/var/run/dbus/system_bus_socket'

/** The address of the system or session bus, from the environment or the default. */
export function busAddress(kind: BusKind, env: NodeJS.ProcessEnv = process.env): string {
  if (kind === 'system') return env.DBUS_SYSTEM_BUS_ADDRESS || SYSTEM_BUS_DEFAULT
  const address = env.DBUS_SESSION_BUS_ADDRESS
  if (!address) {
    throw new HelperError('DBUS_NO_SESSION_BUS', 'No session bus: DBUS_SESSION_BUS_ADDRESS is not set.', {
      hint: 'Run inside a desktop session, or pass --address.',
      step: 'connect',
    })
  }
  return address
}

function unescape(value: string): string {
  return value.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)))
}

/**
 * The socket path to connect to for `address` (a `;`-separated list): the first
 * `unix:path=` or `unix:abstract=` entry. Abstract names get a leading NUL,
 * as Node and usocket expect.
 */
export function socketPath(address: string): string {
  for (const entry of address.split(';')) {
    const colon = entry.indexOf(':')
    if (colon < 0 || entry.slice(0, colon) !== 'unix') continue
    const params = new Map<string, string>()
    for (const pair of entry.slice(colon + 1).split(',')) {
      const eq = pair.indexOf('=')
      if (eq > 0) params.set(pair.slice(0, eq), unescape(pair.slice(eq + 1)))
    }
    const path = params.get('path')
    if (path) return path
    const abstract = params.get('abstract')
    if (abstract) return `\0${abstract}`
  }
  throw new HelperError('DBUS_BAD_ADDRESS', `Bus address '${address}' has no unix:path= or unix:abstract= entry.`, {
    hint: 'Pass an address such as unix:path=/run/dbus/system_bus_socket.',
    step: 'connect',
    exit: 2,
  })
}
