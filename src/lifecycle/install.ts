/**
 * install / uninstall: plan (pure) then apply (the only code that changes the
 * host). Every change is recorded as pending in the state before it starts, so
 * a failure is rolled back here and a crash is rolled back by the next run.
 */
import {mkdirSync, rmSync} from 'node:fs'
import {reloadConfig, ping, type PingFailure} from '../dbus/bus-calls.js'
import {HelperError} from '../errors.js'
import {actionKnown, polkitActive, reloadPolkit} from '../polkit/polkit.js'
import {daemonReload, isActive, stop} from '../systemd/systemctl.js'
import {mergedExtensions, refresh} from '../systemd/sysext.js'
import type {Declarations} from '../sysext/declarations.js'
import {type Emit, type StepName, type StepRecord, step} from './events.js'
import {symlinkAtomic} from '../fs-atomic.js'
import {type InstallAction, type InstallPlan, planInstall} from './install-plan.js'
import {imageEntries, unsafeAncestor} from './links.js'
import {createSysusers} from './sysusers.js'
import {type HostProbe, probeHost, probeWarnings} from './preflight.js'
import {writeRelease} from '../sysext/release-writer.js'
import {stageCopy} from '../sysext/tree-copy.js'
import {
  DEFAULT_PATHS, type ExtensionSource, type Lock, type ManagedExtension, type Paths, type PendingChange, type State,
  type TargetKind, acquireLock, grantedExtras, readState, stageRoot, writeState,
} from './state.js'
import {type Validated, type ValidateOptions, validate} from '../sysext/validate.js'
import type {Tree} from '../sysext/tree.js'

export interface InstallOptions extends ValidateOptions {
  targetKind?: TargetKind
  dryRun?: boolean
  verify?: boolean
  keepOnFailure?: boolean
  /** Merge a staged copy even when the tree could be linked in place. */
  forceStage?: boolean
  /** Seconds for each activation check and for systemd-sysext. */
  timeoutS?: number
  lockTimeoutMs?: number
  paths?: Paths
}

export interface Verification {
  merged: boolean
  busNames: Array<{name: string; ok: boolean; failure?: PingFailure}>
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
  source: ExtensionSource
  hash: string
  releaseGenerated: boolean
  declarations: Declarations
  verification?: Verification
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
async function reloadAll(probe: HostProbe | undefined, opts: {reloadManager: boolean; polkit: boolean}): Promise<string> {
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

export async function verifyExtension(entry: Pick<ManagedExtension, 'name' | 'busNames' | 'polkitActions'>, timeoutS: number, opts: {usr: boolean; polkit: boolean}): Promise<Verification> {
  // Independent checks run together: activation and polkit start-up overlap.
  const [busNames, polkitActions] = await Promise.all([
    Promise.all(entry.busNames.map(async ({name, unit}) => {
      const failure = await ping(name, timeoutS, unit)
      return failure ? {name, ok: false, failure} : {name, ok: true}
    })),
    Promise.all((opts.polkit ? entry.polkitActions : []).map(async (id) => ({id, ok: await actionKnown(id)}))),
  ])
  return {merged: isMerged(entry.name, {usr: opts.usr}), busNames, polkitActions}
}

export function verificationProblem(v: Verification): string | undefined {
  if (!v.merged) return 'it is not listed as merged after systemd-sysext refresh'
  const bus = v.busNames.find((b) => !b.ok)
  if (bus) return `${bus.name} did not answer Peer.Ping: ${bus.failure?.detail} (${bus.failure?.cause}). ${bus.failure?.diagnosis}`
  const action = v.polkitActions.find((a) => !a.ok)
  if (action) return `polkit does not know action ${action.id} after reloading`
  return undefined
}

/** Put every touched link back as it was, drop a stage created by the change. */
function undo(pending: PendingChange, state: State): void {
  for (const {link, target} of pending.restore) {
    if (target === null) rmSync(link, {force: true})
    else symlinkAtomic(target, link)
  }
  const referenced = Object.values(state.extensions).some((e) => e.stage === pending.newStage)
  if (pending.newStage && !referenced) rmSync(pending.newStage, {recursive: true, force: true})
}

/**
 * Converges changes left pending by a run that was killed: installs are rolled
 * back, uninstalls are finished. Called under the lock by every mutating command.
 */
export async function recoverPending(ctx: Context, state: State, probe: HostProbe | undefined): Promise<string[]> {
  const names = Object.keys(state.pending)
  if (names.length === 0) return []
  await step(ctx.emit, ctx.steps, 'recover', `Recovering from an interrupted run (${names.join(', ')})`, async () => {
    for (const name of names) {
      const pending = state.pending[name]
      if (pending.op === 'install') undo(pending, state)
      else finishUninstallFiles(ctx.paths, state, name)
      delete state.pending[name]
    }
    writeState(ctx.paths, state)
    await refresh(ctx.timeoutS * 1000 + 60_000)
    await reloadAll(probe, {reloadManager: false, polkit: true})
  })
  return names
}

function finishUninstallFiles(paths: Paths, state: State, name: string): void {
  const entry = state.extensions[name]
  if (entry) {
    for (const e of imageEntries(paths, name)) if (e.type === 'symlink' && e.target === entry.linkTarget) rmSync(e.path, {force: true})
    if (entry.stage) rmSync(entry.stage, {recursive: true, force: true})
    delete state.extensions[name]
  }
}

export interface Session {
  ctx: Context
  state: State
  lock: Lock
}

/** Lock, read state, recover anything pending. Every mutating command starts here. */
export async function openSession(paths: Paths, emit: Emit, steps: StepRecord[], timeoutS: number, lockTimeoutMs: number, probe?: HostProbe): Promise<Session> {
  if (process.getuid?.() !== 0)
    throw new HelperError('NOT_ROOT', 'Changing system extensions needs root.', {step: 'preflight', hint: 'Run it with sudo (or use --dry-run to see the plan).'})
  const ctx: Context = {paths, emit, steps, timeoutS}
  const lock = await acquireLock(paths, lockTimeoutMs, (holder) => emit({type: 'info', message: `Waiting for another sysext-helper run (pid ${holder}) to finish...`}))
  try {
    const state = readState(paths)
    await recoverPending(ctx, state, probe)
    return {ctx, state, lock}
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

/** The validate step and the pure plan, from the host as it is now. */
export async function validateAndPlan(target: string, options: ValidateOptions & {forceStage?: boolean}, state: State, paths: Paths, targetKind: TargetKind, emit: Emit, steps: StepRecord[]): Promise<{validated: Validated; plan: InstallPlan}> {
  const validated = await step(emit, steps, 'validate', `Validating ${target}`, () => validate(target, options),
    (v) => `${v.report.findings.length} finding${v.report.findings.length === 1 ? '' : 's'}`)
  const plan = planInstall({
    validated,
    state,
    paths,
    targetKind,
    entries: validated.report.name ? imageEntries(paths, validated.report.name) : [],
    merged: mergedExtensions('/usr').concat(mergedExtensions('/opt')),
    unsafe: validated.target.origin === 'path' ? unsafeAncestor(validated.report.path) : undefined,
    forceStage: options.forceStage,
  })
  return {validated, plan}
}

export async function install(target: string, options: InstallOptions, emit: Emit): Promise<InstallResult> {
  const paths = options.paths ?? DEFAULT_PATHS
  const steps: StepRecord[] = []
  const timeoutS = options.timeoutS ?? 25
  const targetKind = options.targetKind ?? 'local'

  const probe = options.dryRun ? undefined : await preflight(emit, steps)

  const session = options.dryRun ? undefined : await openSession(paths, emit, steps, timeoutS, options.lockTimeoutMs ?? 120_000, probe)
  try {
    const state = session?.state ?? readState(paths)
    // Extras are granted per extension: given now, or as recorded when it was installed or approved.
    const allow = options.allow ?? grantedExtras(state, options.name ?? target)
    const {validated, plan} = await validateAndPlan(target, {...options, allow}, state, paths, targetKind, emit, steps)
    const warnings = [...plan.warnings.map((f) => ({message: f.message.startsWith(f.file) ? f.message : `${f.file}: ${f.message}`, hint: f.hint})), ...(probe ? probeWarnings(probe, targetKind) : [])]
    for (const w of warnings) emit({type: 'warning', ...w})
    const result: InstallResult = {
      name: plan.name, action: plan.action, dryRun: options.dryRun === true, target: plan.target, link: plan.link,
      linkTarget: plan.linkTarget, mode: plan.mode, stageReasons: plan.stageReasons, source: plan.source, hash: plan.hash,
      releaseGenerated: plan.releaseGenerated,
      declarations: plan.declarations, warnings, steps,
    }
    if (options.dryRun || !session || !probe) return result
    if (plan.action !== 'unchanged') {
      const [outcome] = await applyChanges(session.ctx, state, probe, [{kind: 'install', plan, tree: validated.tree}], options)
      if (!outcome.ok) throw annotate(outcome.error, plan, outcome.outcome ?? 'not rolled back')
      result.verification = outcome.verification
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
export async function applyChanges(ctx: Context, state: State, probe: HostProbe, changes: Change[], options: {verify?: boolean; keepOnFailure?: boolean} = {}): Promise<ChangeOutcome[]> {
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
      restore: [{link: plan.link, target: plan.previousLink?.target ?? null}, ...plan.staleLinks.map((l) => ({link: l.link, target: l.target}))],
    })
    outcomes.set(plan.name, {name: plan.name, kind: 'install', ok: true})
  }
  for (const {name} of removals) {
    pendings.set(name, {name, op: 'uninstall', restore: [], startedAt, pid: process.pid})
    outcomes.set(name, {name, kind: 'remove', ok: true})
  }
  for (const [name, pending] of pendings) state.pending[name] = pending
  writeState(paths, state)

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

  for (const {plan, tree} of installs) {
    // A running service of the previous version keeps its old code: stop it so the next activation runs the new one.
    const previousUnits = plan.action === 'update' ? plan.previous?.units ?? [] : []
    if (previousUnits.length > 0)
      await shared([plan.name], 'stop', label('Stopping units of the previous version', plan.name, batch), () => stopRunning(previousUnits),
        (r) => (r.length ? r.join(', ') : 'none running'))
    const newStage = plan.newStage
    if (newStage)
      await shared([plan.name], 'stage', label(`Staging a copy in ${newStage}`, plan.name, batch), () => {
        rmSync(newStage, {recursive: true, force: true})
        mkdirSync(stageRoot(paths), {recursive: true, mode: 0o700})
        const staged = stageCopy(tree, newStage)
        if (plan.release) writeRelease({...tree, root: newStage}, plan.release)
        return staged
      }, (s) => `${s.linked} linked, ${s.copied} copied${plan.release ? ', release file generated' : ''}`)
    if (plan.action !== 'repair' && outcomes.get(plan.name)?.ok)
      await shared([plan.name], 'link', label(`Linking ${plan.link}`, plan.name, batch), () => {
        mkdirSync(paths.targets[plan.target], {recursive: true, mode: 0o755})
        symlinkAtomic(plan.linkTarget, plan.link)
        for (const stale of plan.staleLinks) rmSync(stale.link, {force: true})
      }, () => `-> ${plan.linkTarget}`)
  }
  for (const {name} of removals) {
    const entry = state.extensions[name]
    const o = outcomes.get(name) as ChangeOutcome
    o.stoppedUnits = await shared([name], 'stop', label("Stopping the extension's units", name, batch), () => stopRunning(entry.units),
      (r) => (r.length ? r.join(', ') : 'none running'))
    o.removedLinks = imageEntries(paths, name).filter((e) => e.type === 'symlink' && e.target === entry.linkTarget).map((e) => e.path)
    await shared([name], 'unlink', label(`Removing ${o.removedLinks.join(', ') || 'the link'}`, name, batch), () => {
      for (const link of o.removedLinks ?? []) rmSync(link, {force: true})
    })
  }

  const polkitTouched = installs.some(({plan}) => plan.declarations.touchesPolkit || plan.previous?.touchesPolkit) ||
    removals.some(({name}) => state.extensions[name]?.touchesPolkit)
  const merging = installs.length > 0 && removals.length === 0
  await shared(changes.map(nameOf), 'refresh', merging ? 'Merging (systemd-sysext refresh)' : 'Refreshing the merge (systemd-sysext refresh)', async () => {
    await refresh(timeoutS * 1000 + 60_000)
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
        const v = await verifyExtension(entryFor(plan), timeoutS, {usr: tree.entries.has('usr'), polkit: probe.polkit.installed})
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
          undo(pendings.get(plan.name) as PendingChange, state)
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

  if (live().length + kept.length + removals.length > 0)
    await step(emit, steps, 'commit', 'Recording the changes', () => {
      for (const {plan} of [...live(), ...kept]) {
        const oldStage = plan.previous?.stage
        const entry = entryFor(plan)
        state.extensions[plan.name] = entry
        delete state.pending[plan.name]
        if (oldStage && oldStage !== entry.stage) rmSync(oldStage, {recursive: true, force: true})
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
    if (name === undefined) return await uninstallForeign(nameOrApp, paths, options, emit, steps, probe)
    const [outcome] = await applyChanges(session.ctx, state, probe, [{kind: 'remove', name}])
    if (!outcome.ok) throw outcome.error
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
    for (const l of links) rmSync(l.path, {force: true})
  })
  await step(emit, steps, 'refresh', 'Unmerging (systemd-sysext refresh)', () => refresh((options.timeoutS ?? 25) * 1000 + 60_000))
  await step(emit, steps, 'reload', 'Reloading systemd, polkit and the bus', () => reloadAll(probe, {reloadManager: false, polkit: true}), (d) => d)
  return {name, managed: false, removed: links.map((l) => l.path), stoppedUnits: [], steps}
}
