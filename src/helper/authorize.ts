/** polkit, for the helper services (system mode only); the caller's identity is in caller-identity.ts. */
import dbus from 'dbus-next'
import {HELPER_POLKIT_ACTION} from './constants.js'

export type Authorization = 'authorized' | 'denied' | 'dismissed'

/**
 * CheckAuthorization of `action` on subject system-bus-name = `sender`,
 * allowing interaction (an agent may ask for a password). `details` reach
 * the action's message ($(key) in <message>) and the JS rules (action.lookup);
 * polkit refuses keys starting with `polkit.` from an unprivileged caller,
 * and we only pass our own.
 */
export async function checkAuthorization(bus: dbus.MessageBus, sender: string, action = HELPER_POLKIT_ACTION, details: Record<string, string> = {}): Promise<Authorization> {
  const reply = await bus.call(
    new dbus.Message({
      destination: 'org.freedesktop.PolicyKit1',
      path: '/org/freedesktop/PolicyKit1/Authority',
      interface: 'org.freedesktop.PolicyKit1.Authority',
      member: 'CheckAuthorization',
      signature: '(sa{sv})sa{ss}us',
      body: [['system-bus-name', {name: new dbus.Variant('s', sender)}], action, details, 1, ''],
    }),
  )
  const [authorized, , result] = (reply?.body[0] ?? [false, false, {}]) as [boolean, boolean, Record<string, string>]
  if (authorized) return 'authorized'
  return result['polkit.dismissed'] ? 'dismissed' : 'denied'
}
