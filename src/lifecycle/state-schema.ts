/**
 * The state file's schema, checked on every read. Every path a later run would
 * delete, replace or link is confined to what sysext-helper owns: the stage root
 * (its direct children named NAME-…) and TARGET/NAME in the three extension
 * directories. Anything else is refused (STATE_INVALID) before the host is touched.
 */
import {EXTRAS, isExtra} from '../sysext/index.js'
import {basename, dirname, isAbsolute, join, normalize} from 'node:path'
import {HelperError} from '../errors.js'
type TargetKind = 'runtime' | 'local' | 'persistent'
/** The directories a state file may name (state.ts's Paths; kept structural so the two modules don't import each other). */
export interface ConfinedPaths {
  stateDir: string
  targets: Record<TargetKind, string>
}
type Paths = ConfinedPaths

const KINDS: TargetKind[] = ['runtime', 'local', 'persistent']

/** Extension (and image) names: one path component, as systemd-sysext sees them. */
export function validExtensionName(name: unknown): name is string {
  return typeof name === 'string' && name.length > 0 && name.length <= 255 && !name.includes('/') && !name.includes('\0') &&
    name !== '.' && name !== '..' && !name.startsWith('.') && !name.endsWith('.raw')
}

/** A stage directory of extension `name`: STAGE_ROOT/NAME-SOMETHING, nothing deeper, nothing else. */
export function isStageDir(paths: Paths, name: string, dir: unknown): dir is string {
  if (typeof dir !== 'string' || !isAbsolute(dir) || normalize(dir) !== dir) return false
  const base = basename(dir)
  return dirname(dir) === join(paths.stateDir, 'stage') && base.startsWith(`${name}-`) && base.length > name.length + 1 && !base.includes('\0')
}

/** The link sysext-helper makes for `name` in one of the extension directories. */
export function isManagedLink(paths: Paths, name: string, link: unknown): link is string {
  return typeof link === 'string' && KINDS.some((k) => link === join(paths.targets[k], name))
}

class Checker {
  constructor(readonly file: string) {}

  fail(field: string, problem: string): never {
    throw new HelperError('STATE_INVALID', `State file '${this.file}': ${field} ${problem}; sysext-helper will not act on it.`, {
      file: this.file,
      data: {field},
      hint: `Restore it from a backup or move it aside (mv ${this.file} ${this.file}.broken) and re-run; extensions it listed then show up as foreign and can be installed again.`,
    })
  }

  object(field: string, v: unknown): Record<string, unknown> {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, `must be an object (found ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v})`)
    return v as Record<string, unknown>
  }

  string(field: string, v: unknown): string {
    if (typeof v !== 'string') this.fail(field, `must be a string (found ${v === null ? 'null' : typeof v})`)
    return v as string
  }

  optString(field: string, v: unknown): void {
    if (v !== undefined) this.string(field, v)
  }

  bool(field: string, v: unknown): void {
    if (typeof v !== 'boolean') this.fail(field, `must be true or false (found ${JSON.stringify(v)})`)
  }

  strings(field: string, v: unknown): string[] {
    if (!Array.isArray(v)) this.fail(field, 'must be a list of strings')
    ;(v as unknown[]).forEach((s, i) => this.string(`${field}[${i}]`, s))
    return v as string[]
  }

  /** An optional list of extras granted to an extension (confinement's EXTRAS). */
  extras(field: string, v: unknown): void {
    if (v === undefined) return
    this.strings(field, v).forEach((x, i) => {
      if (!isExtra(x)) this.fail(`${field}[${i}]`, `is not an extra sysext-helper knows (${Object.keys(EXTRAS).join(', ')}; found ${JSON.stringify(x)})`)
    })
  }

  absolute(field: string, v: unknown): string {
    const s = this.string(field, v)
    if (!isAbsolute(s) || normalize(s) !== s || s.includes('\0')) this.fail(field, `must be a normalized absolute path (found ${JSON.stringify(s)})`)
    return s
  }
}

/** Checks a parsed state file; returns it typed, or throws STATE_INVALID naming the field. */
export function checkState<S>(raw: unknown, paths: Paths, file: string): S {
  const c = new Checker(file)
  const top = c.object('the top level', raw)
  if (top.version !== undefined && top.version !== 1) c.fail('version', `must be 1 (found ${JSON.stringify(top.version)})`)
  // Absent maps are empty (a fresh or older file); present ones must be objects: null is not "empty".
  const extensions = c.object('extensions', 'extensions' in top ? top.extensions : {})
  const pending = c.object('pending', 'pending' in top ? top.pending : {})
  const approvals = c.object('approvals', 'approvals' in top ? top.approvals : {})
  const stageRoot = join(paths.stateDir, 'stage')

  for (const [key, value] of Object.entries(extensions)) {
    const f = `extensions[${JSON.stringify(key)}]`
    if (!validExtensionName(key)) c.fail(f, 'is not a valid extension name')
    const e = c.object(f, value)
    if (e.name !== key) c.fail(`${f}.name`, `must equal its key ${JSON.stringify(key)}`)
    if (!KINDS.includes(e.target as TargetKind)) c.fail(`${f}.target`, `must be one of ${KINDS.join(', ')}`)
    const link = join(paths.targets[e.target as TargetKind], key)
    if (e.link !== link) c.fail(`${f}.link`, `must be ${link} (found ${JSON.stringify(e.link)})`)
    const linkTarget = c.absolute(`${f}.linkTarget`, e.linkTarget)
    if (e.stage !== undefined) {
      if (!isStageDir(paths, key, e.stage)) c.fail(`${f}.stage`, `must be a directory ${stageRoot}/${key}-… (found ${JSON.stringify(e.stage)})`)
      if (e.stage !== linkTarget) c.fail(`${f}.linkTarget`, 'must equal its stage')
    } else if (linkTarget === stageRoot || linkTarget.startsWith(`${stageRoot}/`)) {
      if (!isStageDir(paths, key, linkTarget)) c.fail(`${f}.linkTarget`, `points into ${stageRoot} but is not a stage of ${key}`)
    }
    const source = c.object(`${f}.source`, e.source)
    if (source.kind !== 'path' && source.kind !== 'flatpak') c.fail(`${f}.source.kind`, 'must be path or flatpak')
    c.absolute(`${f}.source.path`, source.path)
    for (const k of ['appId', 'installation', 'commit']) c.optString(`${f}.source.${k}`, source[k])
    c.string(`${f}.hash`, e.hash)
    c.string(`${f}.installedAt`, e.installedAt)
    c.optString(`${f}.bootId`, e.bootId)
    for (const k of ['releaseGenerated', 'touchesPolkit', 'reloadManager']) c.bool(`${f}.${k}`, e[k])
    if (e.enableBoot !== undefined) c.bool(`${f}.enableBoot`, e.enableBoot)
    if (!Array.isArray(e.busNames)) c.fail(`${f}.busNames`, 'must be a list')
    ;(e.busNames as unknown[]).forEach((b, i) => {
      const o = c.object(`${f}.busNames[${i}]`, b)
      c.string(`${f}.busNames[${i}].name`, o.name)
      c.optString(`${f}.busNames[${i}].unit`, o.unit)
    })
    c.strings(`${f}.units`, e.units).forEach((u, i) => {
      if (u.includes('/') || u === '' || u.startsWith('-')) c.fail(`${f}.units[${i}]`, `is not a unit name (${JSON.stringify(u)})`)
    })
    c.strings(`${f}.polkitActions`, e.polkitActions)
    c.extras(`${f}.allow`, e.allow)
    if (e.manifest !== undefined) {
      const m = c.object(`${f}.manifest`, e.manifest)
      c.string(`${f}.manifest.hash`, m.hash)
      if (!Array.isArray(m.entries)) c.fail(`${f}.manifest.entries`, 'must be a list')
      ;(m.entries as unknown[]).forEach((row, i) => {
        if (!Array.isArray(row) || row.length !== 8 || typeof row[0] !== 'string' || typeof row[1] !== 'string' || row.slice(2).some((n) => typeof n !== 'number'))
          c.fail(`${f}.manifest.entries[${i}]`, 'must be [path, type, mode, uid, size, mtimeMs, ctimeMs, ino]')
      })
    }
  }

  for (const [key, value] of Object.entries(pending)) {
    const f = `pending[${JSON.stringify(key)}]`
    if (!validExtensionName(key)) c.fail(f, 'is not a valid extension name')
    const p = c.object(f, value)
    if (p.name !== key) c.fail(`${f}.name`, `must equal its key ${JSON.stringify(key)}`)
    if (p.op !== 'install' && p.op !== 'uninstall') c.fail(`${f}.op`, 'must be install or uninstall')
    if (!Array.isArray(p.restore)) c.fail(`${f}.restore`, 'must be a list')
    const known = (extensions[key] as Record<string, unknown> | undefined)?.linkTarget
    ;(p.restore as unknown[]).forEach((r, i) => {
      const o = c.object(`${f}.restore[${i}]`, r)
      if (!isManagedLink(paths, key, o.link))
        c.fail(`${f}.restore[${i}].link`, `must be ${KINDS.map((k) => join(paths.targets[k], key)).join(' or ')} (found ${JSON.stringify(o.link)})`)
      if (o.target !== null && !isStageDir(paths, key, o.target) && o.target !== known)
        c.fail(`${f}.restore[${i}].target`, `must be null, a stage ${stageRoot}/${key}-… or the recorded link target of ${key} (found ${JSON.stringify(o.target)})`)
    })
    if (p.newStage !== undefined && !isStageDir(paths, key, p.newStage)) c.fail(`${f}.newStage`, `must be a directory ${stageRoot}/${key}-… (found ${JSON.stringify(p.newStage)})`)
    if (p.units !== undefined)
      c.strings(`${f}.units`, p.units).forEach((u, i) => {
        if (u.includes('/') || u === '' || u.startsWith('-')) c.fail(`${f}.units[${i}]`, `is not a unit name (${JSON.stringify(u)})`)
      })
    c.string(`${f}.startedAt`, p.startedAt)
    if (typeof p.pid !== 'number') c.fail(`${f}.pid`, 'must be a number')
  }

  for (const [key, value] of Object.entries(approvals)) {
    const f = `approvals[${JSON.stringify(key)}]`
    const a = c.object(f, value)
    if (a.appId !== key) c.fail(`${f}.appId`, `must equal its key ${JSON.stringify(key)}`)
    c.string(`${f}.approvedAt`, a.approvedAt)
    c.extras(`${f}.allow`, a.allow)
  }
  return {version: 1, extensions, pending, approvals} as unknown as S
}
