import {type Finding, error, warning} from '../findings.js'
import {mergedEntries} from '../tree.js'
import type {RuleContext, RuleSet} from './context.js'

const S_ISUID = 0o4000
const S_ISGID = 0o2000

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0')
}

function check(ctx: RuleContext): Finding[] {
  const findings: Finding[] = []
  for (const entry of mergedEntries(ctx.tree)) {
    if (entry.readError !== undefined) {
      findings.push(error('file-unreadable', entry.path, `${entry.path} cannot be read (${entry.readError}).`,
        'Make the file readable by root; nothing unreadable can be validated, so nothing is merged.'))
    }
    if (entry.type === 'symlink') continue
    if (entry.type === 'other') {
      findings.push(error('file-special', entry.path,
        `${entry.path} is a device node, FIFO or socket; merged into /usr it would give every user access to it.`,
        'Remove it from the tree.'))
      continue
    }
    if (entry.mode & (S_ISUID | S_ISGID))
      findings.push(error('file-setuid', entry.path,
        `${entry.path} is ${entry.mode & S_ISUID ? 'setuid' : 'setgid'} (mode ${octal(entry.mode)}); merged into /usr any user could run it with raised privileges.`,
        'Drop the bit (chmod u-s,g-s); let a D-Bus service checked by polkit do the privileged part.'))
    if (entry.mode & 0o022)
      findings.push(error('file-writable', entry.path,
        `${entry.path} is ${entry.mode & 0o002 ? 'world' : 'group'}-writable (mode ${octal(entry.mode)}); whoever can write it can change what root runs.`,
        'chmod go-w it (0755 for directories and executables, 0644 for data).'))
    if (entry.uid !== 0) {
      // Report a foreign-owned subtree once, at its top, not once per file.
      const parent = ctx.tree.entries.get(entry.path.slice(0, Math.max(0, entry.path.lastIndexOf('/'))))
      if (parent && parent.uid === entry.uid) continue
      const inside = [...ctx.tree.entries.keys()].filter((p) => p.startsWith(`${entry.path}/`)).length
      const message = `${entry.path}${inside > 0 ? ` (and ${inside} entries inside)` : ''} is owned by uid ${entry.uid}, not root; that user can change it after it is merged.`
      findings.push(ctx.origin === 'flatpak'
        ? error('file-owner', entry.path, `${message} Flatpak deploys are root-owned, so this one was tampered with.`, 'Reinstall the app (flatpak install --reinstall) and validate again.')
        : warning('file-owner', entry.path, message, 'Install from a root-owned copy (sysext-helper install stages one), or chown -R root:root the tree.'))
    }
  }
  return findings
}

export const filesRules: RuleSet = {
  rules: {
    'file-unreadable': 'A file or directory in the tree cannot be read.',
    'file-special': 'A device node, FIFO or socket in the tree.',
    'file-setuid': 'A setuid or setgid file.',
    'file-writable': 'A group- or world-writable file or directory.',
    'file-owner': 'A file not owned by root (warning for a path, error in a Flatpak deploy).',
  },
  check,
}
