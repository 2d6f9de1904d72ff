import {Flags} from '@oclif/core'
import {usageError} from '../errors.js'
import {EXTRAS} from '../sysext/index.js'

/** Extension names become file names under /var/lib/extensions: keep them to safe characters. */
export const nameFlag = Flags.string({
  description: 'Extension name (the image name systemd-sysext sees)',
  parse: async (value) => {
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/.test(value) || value.length > 200)
      throw usageError('INVALID_NAME', `Invalid extension name '${value}'.`, 'Use letters, digits and . _ + - (e.g. the app id).')
    return value
  },
})

/** --allow EXTRA (repeatable): what the admin grants one extension beyond its own on-demand service. */
export const allowFlag = Flags.string({
  description: `Grant this extension an extra (repeatable): ${Object.entries(EXTRAS).map(([k, v]) => `${k}: ${v}`).join('; ')}`,
  multiple: true,
  // One value per --allow: a path after it stays the argument.
  multipleNonGreedy: true,
  options: Object.keys(EXTRAS),
})
