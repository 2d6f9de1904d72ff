/**
 * install / uninstall: plan (pure) then apply (the only code that changes the
 * host). Every change is recorded as pending in the state before it starts, so
 * a failure is rolled back here and a crash is rolled back by the next run.
 */
import {chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {randomBytes} from 'node:crypto'
import {nameOwnerPid, reloadConfig, ping, type PingFailure} from '../dbus/bus-calls.js'
import {HelperError, fsError} from '../errors.js'
import {actionKnown, polkitActive, reloadPolkit} from '../polkit/polkit.js'
import {daemonReload, enable, isActive, isEnabled, stop} from '../systemd/systemctl.js'
import {mergedExtensions, refresh} from '../systemd/sysext.js'
import type {Declarations} from '../sysext/declarations.js'
import {type Emit, type StepName, type StepRecord, step} from './events.js'
import {symlinkAtomic} from '../fs-atomic.js'
import {type InstallAction, type InstallPlan, planInstall} from './install-plan.js'
import {imageEntries} from './links.js'
import {compareManifest, describeDrift, takeManifest} from './manifest.js'
import {createSysusers} from './sysusers.js'
import {SELF_NAME} from './image.js'
import {REMOVED, applyPackageManagers, ensurePackageManagers} from './package-managers.js'
import {type HostProbe, probeHost, probeWarnings} from './preflight.js'
import {bootId, processStartS, processUnit, uptimeS} from './processes.js'
import {writeReleaseAt} from '../sysext/release-writer.js'
import {type SourceOwner, type SourceTrust, copyTree, inspectSource, stageHint} from '../sysext/tree-copy.js'
import {isManagedLink, isStageDir} from './state-schema.js'
import {
  DEFAULT_PATHS, type ExtensionSource, type Lock, type ManagedExtension, type Paths, type PendingChange, type State,
  type TargetKind, acquireLock, cleanLeftovers, grantedExtras, readState, stageRoot, writeState,
} from './state.js'
import {type Validated, type ValidateOptions, resolveTarget, validateTree} from '../sysext/validate.js'
import {type Tree, assertTreeRoot, scanTree} from '../sysext/tree.js'

export interface InstallOptions extends ValidateOptions {
  targetKind?: TargetKind
  dryRun?: boolean
  verify?: boolean
  keepOnFailure?: boolean
  /** Merge a staged copy even when the tree could be linked in place. */
  forceStage?: boolean
  /** Enable systemd-sysext.service for local/persistent targets (default true). */
  enableBoot?: boolean
  /** Seconds for each activation check and for systemd-sysext. */
  timeoutS?: number
  lockTimeoutMs?: number
  paths?: Paths
  /**
   * Refuse, before anything changes, unless the validated tree has this content
   * hash (the `hash` of an earlier dry run): what was shown for consent is what is merged.
   */
  expectHash?: string
}

export interface Verification {
  merged: boolean
  busNames: Array<{name: string; ok: boolean; failure?: PingFailure}>
  /** Who answered each bus name: PID and unit (checked against the declared unit, and to be newer than the merge). */
  answeredBy?: Array<{name: string; pid?: number; unit?: string}>
  polkitActions: Array<{id: string; ok: boolean}>
}

export interface InstallResult {
  name: string
  action: InstallAction
  dryRun: boolean
  target: TargetKind
  link: string
  linkTarget: string
  mode: 'in-place' | 'stage'
  stageReasons: string[]
  /** Who read the source (uid), when it was copied. */
  readAs?: number
  source: ExtensionSource
  hash: string
  releaseGenerated: boolean
  declarations: Declarations
  verification?: Verification
  /** systemd-sysext.service was enabled by this install (it merges the extension at boot). */
  bootEnabled?: boolean
  warnings: Array<{message: string; hint: string}>
  steps: StepRecord[]
}

interface Context {
  paths: Paths
  emit: Emit
  steps: StepRecord[]
  timeoutS: number
}

/** Reload what reads the merged files: PID 1, polkit (when its files changed), the bus. */
export async function reloadAll(probe: HostProbe | undefined, opts: {reloadManager: boolean; polkit: boolean}): Promise<string> {
  const done: string[] = []
  const systemdVersion = probe?.systemdVersion ?? 0
  if (!(opts.reloadManager && systemdVersion >= 255)) {
    await daemonReload()
    done.push('daemon-reload')
  }
  if (opts.polkit && (await polkitActive())) done.push(`polkit ${await reloadPolkit()}`)
  await reloadConfig()
  done.push('ReloadConfig')
  return done.join(', ')
}

function isMerged(name: string, tree: {usr: boolean}): boolean {
  return mergedExtensions(tree.usr ? '/usr' : '/opt').includes(name)
}

/**
 * Who answers `name` after a successful Ping: the process must run in the unit the
 * service file names (SystemdService=) and, when `since` (uptime seconds at the
 * merge) is given, must have started after the merge: an old process that kept
 * the name (an orphan of an earlier version) is not the extension that was merged.
 */
async function checkOwner(name: string, unit: string | undefined, since: number | undefined): Promise<{pid?: number; unit?: string; failure?: PingFailure}> {
  const pid = await nameOwnerPid(name)
  if (pid === undefined) return {}
  const owner = processUnit(pid)
  if (unit && owner && owner !== unit)
    return {pid, unit: owner, failure: {cause: 'stale-owner', detail: `${name} is owned by PID ${pid} in ${owner}, not by ${unit}`,
      diagnosis: `Another process holds the name. Stop it ('systemctl stop ${owner}') and install again.`}}
  const started = processStartS(pid)
  if (since !== undefined && started !== undefined && started < since - 0.05)
    return {pid, unit: owner, failure: {cause: 'stale-owner', detail: `${name} is answered by PID ${pid}${owner ? ` (${owner})` : ''}, started before the merge`,
      diagnosis: `An old process still holds the name and runs code that is no longer merged. Stop it (${owner ? `systemctl stop ${owner}` : `kill ${pid}`}) and install again.`}}
  return {pid, unit: owner}
}

export async function verifyExtension(entry: Pick<ManagedExtension, 'name' | 'busNames' | 'polkitActions'>, timeoutS: number, opts: {usr: boolean; polkit: boolean; since?: number}): Promise<Verification> {
  const answeredBy: NonNullable<Verification['answeredBy']> = []
  // Independent checks run together: activation and polkit start-up overlap.
  const [busNames, polkitActions] = await Promise.all([
    Promise.all(entry.busNames.map(async ({name, unit}) => {
      const failure = await ping(name, timeoutS, unit)
      if (failure) return {name, ok: false, failure}
      const owner = await checkOwner(name, unit, opts.since)
      answeredBy.push({name, pid: owner.pid, unit: owner.unit})
      return owner.failure ? {name, ok: false, failure: owner.failure} : {name, ok: true}
    })),
    Promise.all((opts.polkit ? entry.polkitActions : []).map(async (id) => ({id, ok: await actionKnown(id)}))),
  ])
  return {merged: isMerged(entry.name, {usr: opts.usr}), busNames, polkitActions, answeredBy}
}

export function verificationProblem(v: Verification): string | undefined {
  if (!v.merged) return 'it is not listed as merged after systemd-sysext refresh'
  const bus = v.busNames.find((b) => !b.ok)
  if (bus) return `${bus.name} did not answer Peer.Ping: ${bus.failure?.detail} (${bus.failure?.cause}). ${bus.failure?.diagnosis}`
  const action = v.polkitActions.find((a) => !a.ok)
  if (action) return `polkit does not know action ${action.id} after reloading`
  return undefined
}

/** Removes `link` when it is a symlink sysext-helper manages for `name` (never a directory or file). */
function removeLink(paths: Paths, name: string, link: string): void {
  if (!isManagedLink(paths, name, link)) throw new HelperError('STATE_INVALID', `Refusing to remove ${link}: not a link sysext-helper manages for ${name}.`, {file: link})
  let st
  try {
    st = lstatSync(link)
  } catch {
    return
  }
  if (st.isSymbolicLink()) rmSync(link, {force: true})
}

/** Removes a stage of `name` (only STAGE_ROOT/NAME-…, only a real directory). */
export function removeStage(paths: Paths, name: string, dir: string | undefined): void {
  if (dir === undefined) return
  if (!isStageDir(paths, name, dir)) throw new HelperError('STATE_INVALID', `Refusing to remove ${dir}: not a stage of ${name} under ${stageRoot(paths)}.`, {file: dir})
  let st
  try {
    st = lstatSync(dir)
  } catch {
    return
  }
  if (st.isDirectory()) rmSync(dir, {recursive: true, force: true})
}

/** Put every touched link back as it was, drop a stage created by the change. */
function undo(paths: Paths, pending: PendingChange, state: State): void {
  for (const {link, target} of pending.restore) {
    if (target === null) removeLink(paths, pending.name, link)
    else if (isManagedLink(paths, pending.name, link)) symlinkAtomic(target, link)
  }
  const referenced = Object.values(state.extensions).some((e) => e.stage === pending.newStage)
  if (pending.newStage && !referenced) removeStage(paths, pending.name, pending.newStage)
}

/**
 * Converges changes left pending by a run that was killed: installs are rolled
 * back, uninstalls are finished. Called under the lock by every mutating command.
 */
export async function recoverPending(ctx: Context, state: State, probe: HostProbe | undefined): Promise<Recovered[]> {
  const names = Object.keys(state.pending)
  if (names.length === 0) return []
  const recovered: Recovered[] = []
  await step(ctx.emit, ctx.steps, 'recover', `Recovering from an interrupted run (${names.join(', ')})`, async () => {
    for (const name of names) {
      const pending = state.pending[name]
      // The interrupted change may have started its units (verify activates them), and an
      // interrupted uninstall had not stopped them yet: whatever runs is stopped, so the
      // next activation runs what is merged after this recovery.
      const units = [...new Set([...(pending.units ?? []), ...(state.extensions[name]?.units ?? [])])]
      const stoppedUnits = await stopRunning(units)
      const appId = state.extensions[name]?.source.appId
      if (pending.op === 'install') undo(ctx.paths, pending, state)
      else finishUninstallFiles(ctx.paths, state, name)
      delete state.pending[name]
      recovered.push({name, op: pending.op, stoppedUnits, appId})
    }
    writeState(ctx.paths, state)
    await refresh(ctx.timeoutS * 1000 + 60_000)
    await reloadAll(probe, {reloadManager: false, polkit: true})
  }, () => recovered.map((r) => `${r.op} of ${r.name} ${r.op === 'install' ? 'rolled back' : 'finished'}${r.stoppedUnits.length ? `, stopped ${r.stoppedUnits.join(', ')}` : ''}`).join('; '))
  return recovered
}

function finishUninstallFiles(paths: Paths, state: State, name: string): void {
  const entry = state.extensions[name]
  if (entry) {
    for (const e of imageEntries(paths, name)) if (e.type === 'symlink' && e.target === entry.linkTarget) removeLink(paths, name, e.path)
    removeStage(paths, name, entry.stage)
    delete state.extensions[name]
  }
}

/**
 * Runtime-target records (/run/extensions) of an earlier boot: /run is gone, so is
 * the extension. They are dropped (with their stage) and reported once.
 */
export function goneAfterReboot(record: ManagedExtension): boolean {
  if (record.target !== 'runtime' || !record.bootId || record.bootId === bootId()) return false
  try {
    lstatSync(record.link)
    return false
  } catch {
    return true
  }
}

export function forgetGone(paths: Paths, state: State, only?: string[]): string[] {
  const gone = Object.values(state.extensions).filter((e) => (!only || only.includes(e.name)) && !state.pending[e.name] && goneAfterReboot(e)).map((e) => e.name)
  for (const name of gone) {
    removeStage(paths, name, state.extensions[name].stage)
    delete state.extensions[name]
  }
  if (gone.length > 0) writeState(paths, state)
  return gone
}

export interface Session {
  ctx: Context
  state: State
  lock: Lock
  /** Changes of killed runs that this session finished (uninstall) or rolled back (install). */
  recovered: Recovered[]
}

export interface Recovered {
  name: string
  op: PendingChange['op']
  stoppedUnits: string[]
  appId?: string
}

/** Lock, read state, recover anything pending. Every mutating command starts here. */
export async function openSession(paths: Paths, emit: Emit, steps: StepRecord[], timeoutS: number, lockTimeoutMs: number, probe?: HostProbe): Promise<Session> {
  if (process.getuid?.() !== 0)
    throw new HelperError('NOT_ROOT', 'Changing system extensions needs root.', {step: 'preflight', hint: 'Run it with sudo (or use --dry-run to see the plan).'})
  const ctx: Context = {paths, emit, steps, timeoutS}
  const lock = await acquireLock(paths, lockTimeoutMs, (holder) => emit({type: 'info', message: `Waiting for another sysext-helper run (pid ${holder}) to finish...`}))
  try {
    cleanLeftovers(paths)
    const state = readState(paths)
    for (const name of forgetGone(paths, state))
      emit({type: 'info', message: `${name} was installed to ${paths.targets.runtime} (runtime) in an earlier boot; it is gone since the reboot and no longer managed.`})
    const recovered = await recoverPending(ctx, state, probe)
    return {ctx, state, lock, recovered}
  } catch (error) {
    lock.release()
    throw error
  }
}

/** The preflight step: probe the host, refuse without a system bus. */
export async function preflight(emit: Emit, steps: StepRecord[]): Promise<HostProbe> {
  const probe = await step(emit, steps, 'preflight', 'Checking the host', probeHost,
    (p) => `systemd ${p.systemdVersion}, ${p.bus.implementation}, polkit ${p.polkit.installed ? p.polkit.version ?? 'installed' : 'missing'}, SELinux ${p.selinux}`)
  if (!probe.bus.reachable)
    throw new HelperError('BUS_UNREACHABLE', 'The system bus is not reachable.', {step: 'preflight', hint: 'systemctl status dbus.service'})
  return probe
}

/** Whether the tree ships some extension-release file (an in-place candidate needs one). */
function hasReleaseFile(root: string): boolean {
  try {
    return readdirSync(join(root, 'usr/lib/extension-release.d')).some((n) => n.startsWith('extension-release.'))
  } catch {
    return false
  }
}

/** The stage root: root-owned, 0700, a real directory (nobody else may reach a copy in progress). */
function ensureStageRoot(paths: Paths): string {
  const dir = stageRoot(paths)
  let st
  try {
    mkdirSync(dir, {recursive: true, mode: 0o700})
    st = lstatSync(dir)
    if (st.isDirectory() && (st.mode & 0o777) !== 0o700) chmodSync(dir, 0o700)
  } catch (error) {
    throw fsError('STAGE_FAILED', 'Cannot create the stage directory', dir, error, stageHint((error as NodeJS.ErrnoException).code, join(dir, 'x')))
  }
  if (!st.isDirectory() || st.uid !== (process.getuid?.() ?? 0))
    throw new HelperError('STAGE_FAILED', `${dir} is not a directory owned by root.`, {step: 'stage', file: dir, hint: 'Move it aside and run the command again.'})
  return dir
}

/**
 * Copies the source into a fresh directory under the stage root (see tree-copy:
 * read once, as the owner, no symlink followed); returns its path and who owned
 * what. The stage step: a failure here changed nothing on the host.
 */
async function stageSource(resolvedPath: string, trust: SourceTrust, parent: string, emit: Emit, steps: StepRecord[]) {
  const incoming = join(parent, `.incoming-${process.pid}-${randomBytes(4).toString('hex')}`)
  const copied = await step(emit, steps, 'stage', `Copying ${resolvedPath} into a root-owned stage (read as uid ${trust.reader.uid})`,
    () => copyTree(resolvedPath, incoming, trust), (r) => `${r.copied} copied, ${r.linked} hard-linked`)
  return {incoming, owners: copied.owners}
}

/**
 * The stage and validate steps and the pure plan, from the host as it is now.
 * A tree that only root can change (all root-owned, up to /), with a release
 * file, from a path, is judged and linked in place; everything else is copied
 * first and the copy is what is judged, hashed and merged.
 */
export async function validateAndPlan(target: string, options: ValidateOptions & {forceStage?: boolean; dryRun?: boolean; expectHash?: string}, state: State, paths: Paths, targetKind: TargetKind, emit: Emit, steps: StepRecord[]): Promise<{validated: Validated; plan: InstallPlan}> {
  const resolved = resolveTarget(target, options)
  assertTreeRoot(resolved.path)
  const trust = inspectSource(resolved.path)
  const inPlace = resolved.origin === 'path' && trust.allRoot && !options.forceStage && hasReleaseFile(resolved.path)
  let parent: string | undefined
  let incoming: string | undefined
  let owners: Map<string, SourceOwner> | undefined
  const dropIncoming = (): void => {
    if (incoming) rmSync(incoming, {recursive: true, force: true})
    if (options.dryRun && parent) rmSync(parent, {recursive: true, force: true})
    incoming = undefined
  }
  const copy = async (): Promise<void> => {
    parent = options.dryRun ? mkdtempSync(join(tmpdir(), 'sysext-helper-dry-')) : ensureStageRoot(paths)
    ;({incoming, owners} = await stageSource(resolved.path, trust, parent, emit, steps))
  }
  try {
    const judge = async (): Promise<{validated: Validated; plan: InstallPlan}> => {
      const validated = await step(emit, steps, 'validate', `Validating ${incoming ? `the staged copy of ${target}` : target}`,
        () => validateTree(scanTree(incoming ?? resolved.path), resolved, options, owners),
        (v) => `${v.report.findings.length} finding${v.report.findings.length === 1 ? '' : 's'}`)
      const name = validated.report.name
      const previous = name ? state.extensions[name] : undefined
      const drift = previous?.manifest && existsSync(previous.linkTarget) ? compareManifest(previous.manifest, previous.linkTarget) : undefined
      const plan = planInstall({
        validated,
        state,
        paths,
        targetKind,
        entries: name ? imageEntries(paths, name) : [],
        merged: mergedExtensions('/usr').concat(mergedExtensions('/opt')),
        trust,
        incoming,
        drift,
        forceStage: options.forceStage,
      })
      return {validated, plan}
    }
    if (!inPlace) await copy()
    let result: {validated: Validated; plan: InstallPlan}
    try {
      result = await judge()
    } catch (error) {
      if (!(error instanceof HelperError && error.code === 'INSTALL_NEEDS_STAGE') || incoming) throw error
      await copy()
      result = await judge()
    }
    if (options.expectHash !== undefined && result.plan.hash !== options.expectHash) {
      throw new HelperError('TREE_CHANGED', `The content of ${target} is not the one that was validated before (content hash ${result.plan.hash.slice(0, 16)}…, expected ${options.expectHash.slice(0, 16)}…); nothing was changed.`, {
        step: 'validate',
        hint: 'It changed in between (a Flatpak update?): look at it again (--dry-run) and ask again.',
      })
    }
    if (!result.plan.newStage || options.dryRun) dropIncoming()
    return result
  } catch (error) {
    dropIncoming()
    throw error
  }
}

export async function install(target: string, options: InstallOptions, emit: Emit): Promise<InstallResult> {
  const paths = options.paths ?? DEFAULT_PATHS
  const steps: StepRecord[] = []
  const timeoutS = options.timeoutS ?? 25
  const targetKind = options.targetKind ?? 'local'

  // What the arguments name is checked before the host: a typo is reported as a typo anywhere.
  assertTreeRoot(resolveTarget(target, options).path)
  const probe = options.dryRun ? undefined : await preflight(emit, steps)

  const session = options.dryRun ? undefined : await openSession(paths, emit, steps, timeoutS, options.lockTimeoutMs ?? 120_000, probe)
  try {
    const state = session?.state ?? readState(paths)
    // Extras are granted per extension: given now, or as recorded when it was installed or approved.
    const allow = options.allow ?? grantedExtras(state, options.name ?? target)
    const {validated, plan} = await validateAndPlan(target, {...options, allow}, state, paths, targetKind, emit, steps)
    if (options.dryRun && plan.newStage) plan.incoming = undefined
    const drifted = plan.drift?.drifted && plan.previous
      ? [{message: `The live content of ${plan.name} (${plan.previous.linkTarget}) is not the one that was validated at install (${describeDrift(plan.drift)}); it is replaced by ${plan.mode === 'stage' ? 'a fresh, validated copy' : 'the source as validated now'}.`, hint: `'sysext-helper status ${plan.name}' reports drift from now on.`}]
      : []
    const warnings = [...drifted, ...plan.warnings.map((f) => ({message: f.message.startsWith(f.file) ? f.message : `${f.file}: ${f.message}`, hint: f.hint})), ...(probe ? probeWarnings(probe, targetKind) : [])]
    for (const w of warnings) emit({type: 'warning', ...w})
    const result: InstallResult = {
      name: plan.name, action: plan.action, dryRun: options.dryRun === true, target: plan.target, link: plan.link,
      linkTarget: plan.linkTarget, mode: plan.mode, stageReasons: plan.stageReasons, readAs: plan.mode === 'stage' ? plan.readAs : undefined, source: plan.source, hash: plan.hash,
      releaseGenerated: plan.releaseGenerated,
      declarations: plan.declarations, warnings, steps,
    }
    if (options.dryRun || !session || !probe) return result
    // Before the merge: with the mutable mode set up, this install's refresh already keeps /usr writable.
    await ensurePackageManagers(emit, probe.systemdVersion)
    if (plan.action !== 'unchanged') {
      const [outcome] = await applyChanges(session.ctx, state, probe, [{kind: 'install', plan, tree: validated.tree}], options)
      if (!outcome.ok) throw annotate(outcome.error, plan, outcome.outcome ?? 'not rolled back')
      result.verification = outcome.verification
      result.bootEnabled = outcome.bootEnabled
    }
    // Installing a Flatpak app by its id is the admin's consent: sync keeps it up to date from now on.
    const approval = plan.source.appId ? state.approvals[plan.source.appId] : undefined
    if (plan.source.appId && (!approval || String(approval.allow ?? []) !== String(plan.allow))) {
      state.approvals[plan.source.appId] = {appId: plan.source.appId, approvedAt: approval?.approvedAt ?? new Date().toISOString(), allow: plan.allow}
      writeState(paths, state)
    }
    return result
  } finally {
    session?.lock.release()
  }
}

/** One change in a batch: install or update one extension, or remove one. */
export type Change =
  | {kind: 'install'; plan: InstallPlan; tree: Tree}
  | {kind: 'remove'; name: string}

export interface ChangeOutcome {
  name: string
  kind: Change['kind']
  ok: boolean
  verification?: Verification
  stoppedUnits?: string[]
  removedLinks?: string[]
  error?: HelperError
  /** What happened to a failed install: rolled back or kept. */
  outcome?: string
  /** systemd-sysext.service was enabled for it. */
  bootEnabled?: boolean
}

function entryFor(plan: InstallPlan): ManagedExtension {
  return {
    name: plan.name, source: plan.source, target: plan.target, link: plan.link, linkTarget: plan.linkTarget,
    stage: plan.mode === 'stage' ? plan.linkTarget : undefined, releaseGenerated: plan.releaseGenerated,
    hash: plan.hash, installedAt: new Date().toISOString(), busNames: plan.declarations.busNames, units: plan.declarations.units,
    polkitActions: plan.declarations.polkitActions, touchesPolkit: plan.declarations.touchesPolkit, reloadManager: plan.reloadManager,
    allow: plan.allow,
  }
}

const label = (base: string, name: string, batch: boolean): string => (batch ? `${base} (${name})` : base)

/**
 * Applies a batch of changes with one refresh and one reload for all of them
 * (sync changes several extensions at once). Each change is recorded as pending
 * first; an install that fails is undone (or kept with keepOnFailure) and the
 * host is refreshed once more. Returns an outcome per change.
 */
export async function applyChanges(ctx: Context, state: State, probe: HostProbe, changes: Change[], options: {verify?: boolean; keepOnFailure?: boolean; enableBoot?: boolean} = {}): Promise<ChangeOutcome[]> {
  const {emit, steps, paths, timeoutS} = ctx
  const batch = changes.length > 1
  const outcomes = new Map<string, ChangeOutcome>()
  const installs = changes.filter((c): c is Extract<Change, {kind: 'install'}> => c.kind === 'install')
  const removals = changes.filter((c): c is Extract<Change, {kind: 'remove'}> => c.kind === 'remove')
  const pendings = new Map<string, PendingChange>()
  const startedAt = new Date().toISOString()
  for (const {plan} of installs) {
    pendings.set(plan.name, {
      name: plan.name, op: 'install', startedAt, pid: process.pid, newStage: plan.newStage,
      units: [...new Set([...plan.declarations.units, ...(plan.previous?.units ?? [])])],
      restore: [{link: plan.link, target: plan.previousLink?.target ?? null}, ...plan.staleLinks.map((l) => ({link: l.link, target: l.target}))],
    })
    outcomes.set(plan.name, {name: plan.name, kind: 'install', ok: true})
  }
  for (const {name} of removals) {
    pendings.set(name, {name, op: 'uninstall', restore: [], startedAt, pid: process.pid, units: state.extensions[name]?.units ?? []})
    outcomes.set(name, {name, kind: 'remove', ok: true})
  }
  for (const [name, pending] of pendings) state.pending[name] = pending
  try {
    writeState(paths, state)
  } catch (error) {
    // Nothing was changed yet: drop the copies made for this batch and report the write.
    for (const name of pendings.keys()) delete state.pending[name]
    for (const {plan} of installs) if (plan.incoming) rmSync(plan.incoming, {recursive: true, force: true})
    const e = error as HelperError
    throw new HelperError(e.code, `${e.message} Nothing was changed: the change is recorded before the host is touched.`, {step: 'record', file: e.file, hint: e.hint, cause: error})
  }

  const live = () => installs.filter((c) => outcomes.get(c.plan.name)?.ok)
  const fail = (name: string, error: unknown): void => {
    const o = outcomes.get(name) as ChangeOutcome
    o.ok = false
    o.error = error instanceof HelperError ? error : new HelperError('INSTALL_FAILED', (error as Error).message, {cause: error})
  }
  /** A step shared by several changes: its failure fails each of `names`. */
  const shared = async <T>(names: string[], name: StepName, text: string, fn: () => Promise<T> | T, detail?: (v: T) => string | undefined): Promise<T | undefined> => {
    try {
      return await step(emit, steps, name, text, fn, detail)
    } catch (error) {
      for (const n of names) fail(n, error)
      return undefined
    }
  }

  for (const {plan} of installs) {
    // Whatever runs of this name's units (the previous version, or an orphan of an earlier
    // install) keeps its old code: stop it, so the next activation runs what gets merged now.
    const units = [...new Set([...plan.declarations.units, ...(plan.previous?.units ?? [])])]
    if (units.length > 0)
      await shared([plan.name], 'stop', label(plan.action === 'update' ? 'Stopping units of the previous version' : "Stopping the extension's units", plan.name, batch), () => stopRunning(units),
        (r) => (r.length ? r.join(', ') : 'none running'))
    if (plan.action !== 'repair' && outcomes.get(plan.name)?.ok)
      await shared([plan.name], 'link', label(`Linking ${plan.link}`, plan.name, batch), () => {
        const {incoming, newStage} = plan
        if (newStage && incoming) {
          // The validated copy becomes the stage (same filesystem: a rename, nothing re-read).
          try {
            renameSync(incoming, newStage)
          } catch (error) {
            throw fsError('STAGE_FAILED', 'Cannot place the staged copy', newStage, error, stageHint((error as NodeJS.ErrnoException).code, newStage))
          }
          if (plan.release) writeReleaseAt(newStage, plan.release)
        }
        mkdirSync(paths.targets[plan.target], {recursive: true, mode: 0o755})
        symlinkAtomic(plan.linkTarget, plan.link)
        for (const stale of plan.staleLinks) removeLink(paths, plan.name, stale.link)
      }, () => `-> ${plan.linkTarget}`)
  }
  for (const {name} of removals) {
    const entry = state.extensions[name]
    const o = outcomes.get(name) as ChangeOutcome
    o.stoppedUnits = await shared([name], 'stop', label("Stopping the extension's units", name, batch), () => stopRunning(entry.units),
      (r) => (r.length ? r.join(', ') : 'none running'))
    o.removedLinks = imageEntries(paths, name).filter((e) => e.type === 'symlink' && e.target === entry.linkTarget).map((e) => e.path)
    await shared([name], 'unlink', label(`Removing ${o.removedLinks.join(', ') || 'the link'}`, name, batch), () => {
      for (const link of o.removedLinks ?? []) removeLink(paths, name, link)
    })
  }

  const polkitTouched = installs.some(({plan}) => plan.declarations.touchesPolkit || plan.previous?.touchesPolkit) ||
    removals.some(({name}) => state.extensions[name]?.touchesPolkit)
  const merging = installs.length > 0 && removals.length === 0
  const mergedSince = uptimeS()
  await shared(changes.map(nameOf), 'refresh', merging ? 'Merging (systemd-sysext refresh)' : 'Refreshing the merge (systemd-sysext refresh)', async () => {
    const refreshed = await refresh(timeoutS * 1000 + 60_000)
    if (refreshed.fallback)
      emit({type: 'warning', message: `The writable merge (--mutable=auto) failed, so /usr was merged read-only: ${refreshed.fallback}`, hint: "Package managers cannot write /usr now. See 'journalctl -b -t systemd-sysext' and 'sysext-helper doctor'; to use package-manager hooks instead, add MECHANISM=hooks to /etc/sysext-helper/package-managers.conf and run 'sysext-helper package-managers --enable'."})
    const merged = [...mergedExtensions('/usr'), ...mergedExtensions('/opt')]
    for (const {plan} of live())
      if (!merged.includes(plan.name))
        fail(plan.name, new HelperError('SYSEXT_NOT_MERGED', `systemd-sysext refresh did not merge ${plan.name}.`, {
          step: 'refresh', hint: "Check 'journalctl -b -t systemd-sysext' and 'systemd-sysext list'; another extension may make the merge fail.",
        }))
    for (const {name} of removals)
      if (merged.includes(name)) fail(name, new HelperError('SYSEXT_STILL_MERGED', `${name} is still merged after systemd-sysext refresh.`, {step: 'refresh', hint: 'systemd-sysext list; journalctl -b -t systemd-sysext'}))
    if (installs.length === 1 && !outcomes.get(installs[0].plan.name)?.ok) throw outcomes.get(installs[0].plan.name)?.error
    await createSysusers(live().map(({tree}) => tree))
  })
  const reloadManager = removals.length === 0 && installs.every(({plan}) => plan.reloadManager)
  await shared(changes.map(nameOf), 'reload', 'Reloading systemd, polkit and the bus', () => reloadAll(probe, {reloadManager, polkit: polkitTouched}), (d) => d)

  if (options.verify !== false)
    for (const {plan, tree} of live()) {
      await shared([plan.name], 'verify', label('Verifying activation', plan.name, batch), async () => {
        const v = await verifyExtension(entryFor(plan), timeoutS, {usr: tree.entries.has('usr'), polkit: probe.polkit.installed, since: mergedSince})
        const problem = verificationProblem(v)
        if (problem) throw new HelperError('INSTALL_VERIFY_FAILED', `${plan.name} was merged, but ${problem}`, {step: 'verify', data: {verification: v}})
        ;(outcomes.get(plan.name) as ChangeOutcome).verification = v
        return v
      }, (v) => `${v.busNames.length} bus name${v.busNames.length === 1 ? '' : 's'} answered, ${v.polkitActions.length} polkit action${v.polkitActions.length === 1 ? '' : 's'} known`)
    }

  const failedInstalls = installs.filter(({plan}) => !outcomes.get(plan.name)?.ok)
  const undone = options.keepOnFailure ? [] : failedInstalls
  if (undone.length > 0) {
    try {
      await step(emit, steps, 'rollback', 'Rolling back', async () => {
        for (const {plan} of undone) {
          undo(paths, pendings.get(plan.name) as PendingChange, state)
          if (plan.incoming) rmSync(plan.incoming, {recursive: true, force: true})
          delete state.pending[plan.name]
        }
        writeState(paths, state)
        await refresh(timeoutS * 1000 + 60_000)
        await reloadAll(probe, {reloadManager: false, polkit: polkitTouched})
      })
      for (const {plan} of undone) (outcomes.get(plan.name) as ChangeOutcome).outcome = 'rolled back: the host is as it was before'
    } catch (rollbackError) {
      for (const {plan} of undone)
        (outcomes.get(plan.name) as ChangeOutcome).outcome = `ROLLBACK FAILED (${(rollbackError as Error).message}); the next sysext-helper run will retry it`
    }
  }
  const kept = options.keepOnFailure ? failedInstalls : []
  for (const {plan} of kept) (outcomes.get(plan.name) as ChangeOutcome).outcome = 'kept (--keep-on-failure): the failed version stays linked and merged for inspection'

  // Targets that survive a reboot are merged again at boot only by systemd-sysext.service.
  const lasting = live().filter(({plan}) => plan.target !== 'runtime')
  if (options.enableBoot !== false && lasting.length > 0) {
    const current = await isEnabled('systemd-sysext.service').catch(() => ({enabled: false, state: 'unknown'}))
    if (!current.enabled)
      await shared(lasting.map(({plan}) => plan.name), 'enable', 'Enabling systemd-sysext.service (merges the extensions again at every boot)', async () => {
        await enable('systemd-sysext.service')
        for (const {plan} of lasting) (outcomes.get(plan.name) as ChangeOutcome).bootEnabled = true
      }, () => `was ${current.state}; --no-enable skips this`)
  }

  if (live().length + kept.length + removals.length > 0)
    await step(emit, steps, 'commit', 'Recording the changes', () => {
      for (const {plan} of [...live(), ...kept]) {
        const oldStage = plan.previous?.stage
        const entry = entryFor(plan)
        entry.manifest = takeManifest(entry.linkTarget)
        entry.bootId = bootId()
        entry.enableBoot = plan.target !== 'runtime' && options.enableBoot !== false
        state.extensions[plan.name] = entry
        delete state.pending[plan.name]
        if (oldStage && oldStage !== entry.stage) removeStage(paths, plan.name, oldStage)
      }
      // A removal is finished even when a step failed: the link is gone, and the next refresh unmerges it.
      for (const {name} of removals) {
        finishUninstallFiles(paths, state, name)
        delete state.pending[name]
      }
      writeState(paths, state)
    })
  return [...outcomes.values()]
}

/** Stops the active ones among `units` (templates skipped) and waits; returns what was stopped. */
async function stopRunning(units: string[]): Promise<string[]> {
  const running: string[] = []
  for (const unit of units) if (!unit.includes('@.') && (await isActive(unit))) running.push(unit)
  await stop(running)
  return running
}

function nameOf(change: Change): string {
  return change.kind === 'install' ? change.plan.name : change.name
}

function annotate(error: unknown, plan: InstallPlan, outcome: string): HelperError {
  const base = error instanceof HelperError ? error : new HelperError('INSTALL_FAILED', (error as Error).message, {cause: error})
  const unit = plan.declarations.busNames.find((b) => b.unit)?.unit
  return new HelperError(base.code, `Installing ${plan.name} failed at ${base.step ?? 'an unknown step'}: ${base.message} The change was ${outcome}.`, {
    step: base.step,
    hint: base.hint ?? (unit ? `journalctl -b -u ${unit}` : "journalctl -b -t systemd-sysext"),
    data: {...base.data, outcome},
    cause: error,
  })
}

export interface UninstallOptions {
  force?: boolean
  timeoutS?: number
  lockTimeoutMs?: number
  paths?: Paths
}

export interface UninstallResult {
  name: string
  managed: boolean
  removed: string[]
  stoppedUnits: string[]
  steps: StepRecord[]
  /** The uninstall was one that a killed run had started; the recover step finished it. */
  recovered?: boolean
}

/** NAME, or an app id recorded as an extension's source. */
export function managedName(state: State, nameOrApp: string): string | undefined {
  if (state.extensions[nameOrApp]) return nameOrApp
  return Object.values(state.extensions).find((e) => e.source.appId === nameOrApp)?.name
}

export async function uninstall(nameOrApp: string, options: UninstallOptions, emit: Emit): Promise<UninstallResult> {
  const paths = options.paths ?? DEFAULT_PATHS
  const steps: StepRecord[] = []
  const timeoutS = options.timeoutS ?? 25
  const probe = await preflight(emit, steps)
  const session = await openSession(paths, emit, steps, timeoutS, options.lockTimeoutMs ?? 120_000, probe)
  try {
    const {state} = session
    const name = managedName(state, nameOrApp)
    // A re-run of an uninstall that was killed: the recovery above finished it.
    const finished = session.recovered.find((r) => r.op === 'uninstall' && (r.name === nameOrApp || r.appId === nameOrApp))
    if (name === undefined && finished)
      return {name: finished.name, managed: true, removed: [], stoppedUnits: finished.stoppedUnits, steps, recovered: true}
    if (name === undefined) return await uninstallForeign(nameOrApp, paths, options, emit, steps, probe)
    const [outcome] = await applyChanges(session.ctx, state, probe, [{kind: 'remove', name}])
    if (!outcome.ok) throw outcome.error
    // The package-manager integration goes with sysext-helper's own extension.
    if (name === SELF_NAME) await step(emit, steps, 'cleanup', 'Removing the package-manager integration', () => applyPackageManagers({decision: REMOVED}), (r) => r.removed.join(', ') || 'none present')
    const removed = outcome.removedLinks ?? []
    const stoppedUnits = outcome.stoppedUnits ?? []
    return {name, managed: true, removed, stoppedUnits, steps}
  } finally {
    session.lock.release()
  }
}

async function uninstallForeign(name: string, paths: Paths, options: UninstallOptions, emit: Emit, steps: StepRecord[], probe: HostProbe): Promise<UninstallResult> {
  const entries = imageEntries(paths, name)
  if (!options.force) {
    const managed = Object.keys(readState(paths).extensions)
    throw new HelperError('UNINSTALL_NOT_MANAGED',
      entries.length > 0
        ? `${name} is present (${entries.map((e) => e.path).join(', ')}) but not managed by sysext-helper.`
        : `No extension named ${name} is installed.`,
      {hint: entries.length > 0 ? `Pass --force to remove a symlink that sysext-helper did not create. Managed: ${managed.join(', ') || 'none'}.` : `Managed extensions: ${managed.join(', ') || 'none'} (see 'sysext-helper list').`})
  }
  const links = entries.filter((e) => e.type === 'symlink')
  if (links.length === 0)
    throw new HelperError('UNINSTALL_NOT_A_LINK', `${name} is not a symlink (${entries.map((e) => `${e.path}: ${e.type}`).join(', ') || 'absent'}); sysext-helper removes only links.`, {
      hint: 'Remove the image by hand if it should go, then run systemd-sysext refresh.',
    })
  await step(emit, steps, 'unlink', `Removing ${links.map((l) => l.path).join(', ')}`, () => {
    for (const l of links) if (lstatSync(l.path).isSymbolicLink()) rmSync(l.path, {force: true})
  })
  await step(emit, steps, 'refresh', 'Unmerging (systemd-sysext refresh)', () => refresh((options.timeoutS ?? 25) * 1000 + 60_000))
  await step(emit, steps, 'reload', 'Reloading systemd, polkit and the bus', () => reloadAll(probe, {reloadManager: false, polkit: true}), (d) => d)
  return {name, managed: false, removed: links.map((l) => l.path), stoppedUnits: [], steps}
}
