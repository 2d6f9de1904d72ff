/** list and status: what sysext-helper manages, checked live. Reads only. */
import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {HelperError} from '../errors.js'
import {polkitInstalled} from '../polkit/polkit.js'
import {isActive} from '../systemd/systemctl.js'
import {listImages, mergedExtensions} from '../systemd/sysext.js'
import {type Verification, managedName, verificationProblem, verifyExtension} from './install.js'
import {imageEntries} from './links.js'
import {DEFAULT_PATHS, type ManagedExtension, type Paths, type TargetKind, readState} from './state.js'
import {computePlan} from './sync.js'

export interface ListedExtension {
  name: string
  managed: boolean
  source: string | null
  target: TargetKind | null
  path: string
  merged: boolean
  hash: string | null
  appId: string | null
  commit: string | null
  /** Extras granted to a managed extension (install/approve --allow). */
  allow: string[]
}

export interface Listing {
  extensions: ListedExtension[]
  /** Flatpak apps that ship an extension nobody approved (not merged). */
  unapprovedApps: Array<{appId: string; installation: string}>
}

/** Managed extensions, the foreign images systemd-sysext sees, and unapproved Flatpak apps. */
export async function listExtensions(paths: Paths = DEFAULT_PATHS): Promise<Listing> {
  const state = readState(paths)
  const foreignImages = await listImages().catch(() => [])
  const merged = new Set([...mergedExtensions('/usr'), ...mergedExtensions('/opt')])
  const extensions: ListedExtension[] = Object.values(state.extensions).map((e) => ({
    name: e.name, managed: true, source: e.source.path, target: e.target, path: e.link, merged: merged.has(e.name),
    hash: e.hash, appId: e.source.appId ?? null, commit: e.source.commit ?? null, allow: e.allow ?? [],
  }))
  for (const image of foreignImages) {
    if (state.extensions[image.name]) continue
    extensions.push({name: image.name, managed: false, source: null, target: null, path: image.path, merged: merged.has(image.name), hash: null, appId: null, commit: null, allow: []})
  }
  const unapprovedApps = computePlan({}, paths, state).unapproved.map((a) => ({appId: a.appId, installation: a.installation.path}))
  return {extensions: extensions.sort((a, b) => a.name.localeCompare(b.name)), unapprovedApps}
}

export interface ExtensionStatus {
  name: string
  healthy: boolean
  record: ManagedExtension
  linkOk: boolean
  problems: string[]
  verification: Verification
  units: Array<{unit: string; active: boolean}>
}

export async function extensionStatus(nameOrApp: string, paths: Paths = DEFAULT_PATHS, timeoutS = 25): Promise<ExtensionStatus> {
  const state = readState(paths)
  const name = managedName(state, nameOrApp)
  if (name === undefined)
    throw new HelperError('STATUS_NOT_MANAGED', `${nameOrApp} is not managed by sysext-helper.`, {hint: "See 'sysext-helper list' for managed and foreign extensions."})
  const record = state.extensions[name]
  const link = imageEntries(paths, name).find((e) => e.path === record.link)
  const linkOk = link?.type === 'symlink' && link.target === record.linkTarget && existsSync(record.linkTarget)
  const polkit = await polkitInstalled().catch(() => false)
  const verification = await verifyExtension(record, timeoutS, {usr: existsSync(join(record.linkTarget, 'usr')), polkit})
  const units = []
  for (const unit of record.units) if (!unit.includes('@.')) units.push({unit, active: await isActive(unit)})
  const problems: string[] = []
  if (!linkOk) problems.push(`${record.link} does not point to ${record.linkTarget} (or the target is gone)`)
  const v = verificationProblem(verification)
  if (v) problems.push(v)
  if (state.pending[name]) problems.push('an interrupted change is pending; any mutating command converges it')
  return {name, healthy: problems.length === 0, record, linkOk, problems, verification, units}
}
