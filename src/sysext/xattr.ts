/**
 * The one extended attribute systemd-sysext reads: `user.extension-release.strict`
 * on release files (the fallback for a renamed image, os-util.c
 * open_extension_release). Node has no xattr API, and reading it through /proc is
 * not possible, so the value comes from `getfattr` (Debian's `attr` package) and,
 * where that is not installed, from python3's os.getxattr (present on most hosts
 * that run this tool's tests). One process for all release files of a tree.
 */
import {runSyncQuiet} from '../exec.js'

export const STRICT_XATTR = 'user.extension-release.strict'

/** Per path: the attribute's value, or null when the file has none. undefined: no reader available. */
export type XattrValues = Map<string, string | null>

function viaGetfattr(paths: string[]): XattrValues | undefined {
  const r = runSyncQuiet('getfattr', ['-h', '--absolute-names', '-e', 'hex', '-n', STRICT_XATTR, '--', ...paths])
  if (!r) return undefined
  const values: XattrValues = new Map(paths.map((p) => [p, null]))
  let current: string | undefined
  for (const line of r.stdout.split('\n')) {
    const file = /^# file: (.*)$/.exec(line)
    if (file) current = file[1]
    const value = new RegExp(`^${STRICT_XATTR.replace(/[.-]/g, '\\$&')}=0x([0-9a-f]*)$`).exec(line)
    if (value && current !== undefined) values.set(current, Buffer.from(value[1], 'hex').toString('latin1'))
    else if (line === `${STRICT_XATTR}=""` && current !== undefined) values.set(current, '')
  }
  return values
}

const PY = `import json, os, sys
out = {}
for p in sys.argv[1:]:
    try:
        out[p] = os.getxattr(p, ${JSON.stringify(STRICT_XATTR)}, follow_symlinks=False).decode('latin1')
    except OSError:
        out[p] = None
print(json.dumps(out))`

function viaPython(paths: string[]): XattrValues | undefined {
  const r = runSyncQuiet('python3', ['-c', PY, ...paths])
  if (!r || r.exitCode !== 0) return undefined
  try {
    return new Map(Object.entries(JSON.parse(r.stdout) as Record<string, string | null>))
  } catch {
    return undefined
  }
}

/** `user.extension-release.strict` of each path, or undefined when no reader is installed. */
export function readStrictXattrs(paths: string[]): XattrValues | undefined {
  if (paths.length === 0) return new Map()
  return viaGetfattr(paths) ?? viaPython(paths)
}

/** systemd's parse_boolean(); undefined when the value is not a boolean. */
export function parseBoolean(value: string): boolean | undefined {
  const v = value.toLowerCase()
  if (['1', 'yes', 'y', 'true', 't', 'on'].includes(v)) return true
  if (['0', 'no', 'n', 'false', 'f', 'off'].includes(v)) return false
  return undefined
}
