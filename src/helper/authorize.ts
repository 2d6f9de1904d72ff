/** polkit, for the helper service (system mode only); the caller's identity is in caller-identity.ts. */
import dbus from 'dbus-next'
import {HELPER_POLKIT_ACTION} from './constants.js'

export type Authorization = 'authorized' | 'denied' | 'dismissed'

/** CheckAuthorization on subject system-bus-name = `sender`, allowing interaction (an agent may ask for a password). */
export async function checkAuthorization(bus: dbus.MessageBus, sender: string): Promise<Authorization> {
  const reply = await bus.call(
    new dbus.Message({
      destination: 'org.freedesktop.PolicyKit1',
      path: '/org/freedesktop/PolicyKit1/Authority',
      interface: 'org.freedesktop.PolicyKit1.Authority',
      member: 'CheckAuthorization',
      signature: '(sa{sv})sa{ss}us',
      body: [['system-bus-name', {name: new dbus.Variant('s', sender)}], HELPER_POLKIT_ACTION, {}, 1, ''],
    }),
  )
  const [authorized, , details] = (reply?.body[0] ?? [false, false, {}]) as [boolean, boolean, Record<string, string>]
  if (authorized) return 'authorized'
  return details['polkit.dismissed'] ? 'dismissed' : 'denied'
}
