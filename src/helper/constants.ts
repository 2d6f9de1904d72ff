/** The helper service's stable names (versioned: a new interface gets a new number). */
export const HELPER_BUS_NAME = 'io.github.sysext_helper.Monitor1'
export const HELPER_OBJECT_PATH = '/io/github/sysext_helper/Monitor1'
export const HELPER_INTERFACE = 'io.github.sysext_helper.Monitor1'
export const HELPER_POLKIT_ACTION = 'io.github.sysext-helper.monitor'

export const HelperErrors = {
  /** The user dismissed the authentication dialog (polkit.dismissed); the CLI exits 126. */
  Dismissed: 'io.github.sysext_helper.Monitor1.Error.Dismissed',
  /** Too many captures for this uid or in total. */
  LimitsExceeded: 'io.github.sysext_helper.Monitor1.Error.LimitsExceeded',
  /** The capture could not start (BecomeMonitor failed, bad fd, ...). */
  Failed: 'io.github.sysext_helper.Monitor1.Error.Failed',
  AccessDenied: 'org.freedesktop.DBus.Error.AccessDenied',
  InvalidArgs: 'org.freedesktop.DBus.Error.InvalidArgs',
} as const

/**
 * Options accepted in Start's a{sv}, with their D-Bus signature. Unknown keys
 * are refused: a client that sets a key expects it to be honoured.
 */
export const HELPER_OPTIONS = {
  MatchRules: 'as',
  Duration: 'u', // seconds
  MaxBytes: 't',
  InitialState: 'b',
  BufferSize: 'u',
  OnOverflow: 's', // 'drop' | 'abort'
} as const

export type HelperOptionKey = keyof typeof HELPER_OPTIONS
