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

/** The install service: a sandboxed app asks for its own extension, the admin consents. */
export const MANAGER_BUS_NAME = 'io.github.sysext_helper.Manager1'
export const MANAGER_OBJECT_PATH = '/io/github/sysext_helper/Manager1'
export const MANAGER_INTERFACE = 'io.github.sysext_helper.Manager1'
/** A Flatpak app asks for its own extension (auth_admin). */
export const MANAGER_ACTION_APP = 'io.github.sysext-helper.install-app'
/** A process that is not a Flatpak app names an app id (auth_admin, never granted to the app action's rules). */
export const MANAGER_ACTION_ANY = 'io.github.sysext-helper.install-any'

export const ManagerErrors = {
  /** The admin dismissed the authentication dialog (polkit.dismissed). */
  Dismissed: 'io.github.sysext_helper.Manager1.Error.Dismissed',
  /** The caller is not a Flatpak app (or its identity could not be pinned) and named no app id. */
  NotAnApp: 'io.github.sysext_helper.Manager1.Error.NotAnApp',
  /** The admin's policy (/etc/sysext-helper/policy.conf) turned app requests off. */
  Disabled: 'io.github.sysext_helper.Manager1.Error.Disabled',
  /** Validation or confinement refused the tree; the error data lists the findings. */
  Refused: 'io.github.sysext_helper.Manager1.Error.Refused',
  /** The app ships no extension tree (files/lib/extensions). */
  NoExtension: 'io.github.sysext_helper.Manager1.Error.NoExtension',
  /** The extension changed between the dialog and the install (a Flatpak update?): nothing was installed; ask again. */
  Changed: 'io.github.sysext_helper.Manager1.Error.Changed',
  /** Too many calls waiting. */
  LimitsExceeded: 'io.github.sysext_helper.Manager1.Error.LimitsExceeded',
  Failed: 'io.github.sysext_helper.Manager1.Error.Failed',
  AccessDenied: 'org.freedesktop.DBus.Error.AccessDenied',
  InvalidArgs: 'org.freedesktop.DBus.Error.InvalidArgs',
} as const
