/** list and status: what sysext-helper manages, checked live. Reads only. */
import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {HelperError} from '../errors.js'
import {polkitInstalled} from '../polkit/polkit.js'
import {isActive, isEnabled} from '../systemd/systemctl.js'
import {listImages, mergedExtensions} from '../systemd/sysext.js'
import {type Verification, forgetGone, goneAfterReboot, managedName, verificationProblem, verifyExtension} from './install.js'
import {type ImageEntry, imageEntries} from './links.js'
import {type Drift, compareManifest, describeDrift} from './manifest.js'
import {DEFAULT_PATHS, type ManagedExtension, type Paths, type State, type TargetKind, acquireLock, readState} from './state.js'

/**
 * Runtime records of an earlier boot are gone with /run: as root they are dropped
 * from the state here (under the lock) and named once; otherwise only named.
 */
async function dropGone(paths: Paths, state: State, only?: (e: ManagedExtension) => boolean): Promise<string[]> {
  const gone = Object.values(state.extensions).filter((e) => (only ? only(e) : true) && goneAfterReboot(e)).map((e) => e.name)
  if (gone.length === 0 || process.getuid?.() !== 0) return gone
  let lock
  try {
    lock = await acquireLock(paths, 2000)
  } catch {
    return gone
  }
  try {
    return forgetGone(paths, readState(paths), gone)
  } finally {
    lock.release()
  }
}

/** The live content of a record compared with what was validated, or null when there is nothing to compare. */
export function liveDrift(record: ManagedExtension): Drift | null {
  if (!record.manifest || !existsSync(record.linkTarget)) return null
  return compareManifest(record.manifest, record.linkTarget)
}

function fixCommand(record: ManagedExtension): string {
  const source = record.source.appId ?? record.source.path
  return `sysext-helper install ${source}${record.source.appId ? '' : ` --name ${record.name}`}${record.target !== 'local' ? ` --target ${record.target}` : ''}`
}

/** An image that systemd-sysext picks before ours (same name, earlier directory), e.g. a mask to /dev/null. */
function shadowedBy(paths: Paths, record: ManagedExtension): ImageEntry | undefined {
  const entries = imageEntries(paths, record.name)
  const ours = entries.findIndex((e) => e.path === record.link)
  return entries.slice(0, ours === -1 ? entries.length : ours).find((e) => e.path !== record.link)
}
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
  /** Live content differs from what was validated (null: foreign, or nothing recorded to compare). */
  drifted: boolean | null
}

export interface Listing {
  extensions: ListedExtension[]
  /** Flatpak apps that ship an extension nobody approved (not merged). */
  unapprovedApps: Array<{appId: string; installation: string}>
  /** Runtime extensions of an earlier boot, gone since the reboot (dropped from the state now). */
  goneAfterReboot: string[]
}

/** Managed extensions, the foreign images systemd-sysext sees, and unapproved Flatpak apps. */
export async function listExtensions(paths: Paths = DEFAULT_PATHS): Promise<Listing> {
  let state = readState(paths)
  const gone = await dropGone(paths, state)
  if (gone.length > 0) state = readState(paths)
  for (const name of gone) delete state.extensions[name]
  const foreignImages = await listImages().catch(() => [])
  const merged = new Set([...mergedExtensions('/usr'), ...mergedExtensions('/opt')])
  const extensions: ListedExtension[] = Object.values(state.extensions).map((e) => ({
    name: e.name, managed: true, source: e.source.path, target: e.target, path: e.link, merged: merged.has(e.name),
    hash: e.hash, appId: e.source.appId ?? null, commit: e.source.commit ?? null, allow: e.allow ?? [], drifted: liveDrift(e)?.drifted ?? null,
  }))
  for (const image of foreignImages) {
    if (state.extensions[image.name]) continue
    extensions.push({name: image.name, managed: false, source: null, target: null, path: image.path, merged: merged.has(image.name), hash: null, appId: null, commit: null, allow: [], drifted: null})
  }
  const unapprovedApps = computePlan({}, paths, state).unapproved.map((a) => ({appId: a.appId, installation: a.installation.path}))
  return {extensions: extensions.sort((a, b) => a.name.localeCompare(b.name)), unapprovedApps, goneAfterReboot: gone}
}

export interface ExtensionStatus {
  name: string
  healthy: boolean
  record: ManagedExtension
  linkOk: boolean
  problems: string[]
  verification: Verification
  units: Array<{unit: string; active: boolean}>
  /** Live content compared with the manifest recorded at install (null: none recorded). */
  drift: Drift | null
  /** The command that puts it right, when unhealthy. */
  fix?: string
}

export async function extensionStatus(nameOrApp: string, paths: Paths = DEFAULT_PATHS, timeoutS = 25): Promise<ExtensionStatus> {
  const state = readState(paths)
  // Only the record asked about: the others are named by the run that drops them (list, or any mutating command).
  const gone = await dropGone(paths, state, (e) => e.name === nameOrApp || e.source.appId === nameOrApp)
  const goneName = gone[0]
  if (goneName)
    throw new HelperError('STATUS_GONE_AFTER_REBOOT', `${goneName} was installed to ${paths.targets.runtime} (runtime target) in an earlier boot; /run does not survive a reboot, so it is gone and no longer managed.`, {
      hint: `Install it again (${fixCommand(state.extensions[goneName])}); use --target local or persistent to keep it across reboots.`,
      data: {goneAfterReboot: goneName},
    })
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
  const fix = fixCommand(record)
  if (!linkOk) problems.push(`${record.link} does not point to ${record.linkTarget} (or the target is gone)`)
  if (!verification.merged) {
    const shadow = shadowedBy(paths, record)
    const boot = record.target === 'runtime' ? undefined : await isEnabled('systemd-sysext.service').catch(() => undefined)
    if (shadow)
      problems.push(`not merged: ${shadow.path}${shadow.target ? ` (-> ${shadow.target})` : ` (${shadow.type})`} shadows ${record.link}: systemd-sysext takes the first image of a name (/etc/extensions, then /run/extensions, then /var/lib/extensions), and that one is not merged either. Remove ${shadow.path} if that is not intended, then run '${fix}'`)
    else if (linkOk && boot && !boot.enabled)
      problems.push(`not merged: systemd-sysext.service is ${boot.state}, so nothing merged it at boot. Fix: 'systemctl enable --now systemd-sysext.service' (or '${fix}', which enables it)`)
    else if (linkOk)
      problems.push(`not merged although ${record.link} is in place: systemd-sysext refused it or was not run since it was linked. See 'journalctl -b -t systemd-sysext' and 'systemd-sysext list'; fix: '${fix}'`)
  } else {
    const v = verificationProblem(verification)
    if (v) problems.push(v)
  }
  const drift = liveDrift(record)
  if (drift?.drifted)
    problems.push(`the live content (${record.linkTarget}) is not what was validated at install: ${describeDrift(drift)}. Fix: '${fix}' (validates the source again and merges a fresh copy) or 'sysext-helper uninstall ${record.name}'`)
  if (state.pending[name]) problems.push('an interrupted change is pending; any mutating command converges it')
  return {name, healthy: problems.length === 0, record, linkOk, problems, verification, units, drift, fix: problems.length ? fix : undefined}
}
