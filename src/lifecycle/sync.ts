/**
 * sync: reconcile the host with the system Flatpak installations. Approved apps
 * whose deploy changed are re-staged, approved apps that are gone are removed,
 * unapproved apps that ship extensions are only reported. All changes share one
 * refresh; a sync with nothing to do takes no lock and touches nothing.
 */
import {existsSync} from 'node:fs'
import {HelperError} from '../errors.js'
import type {Finding} from '../sysext/findings.js'
import {type AppDeploy, type FlatpakEnv, appsIn, systemInstallations} from '../flatpak/installations.js'
import {type ApprovalPolicy, policyApproves, readPolicy} from '../flatpak/policy.js'
import type {Emit, StepRecord} from './events.js'
import {type Change, type ChangeOutcome, applyChanges, openSession, preflight, validateAndPlan} from './install.js'
import {DEFAULT_PATHS, type Paths, type State, grantedExtras, readState} from './state.js'

export interface SyncPlan {
  /** Approved apps to install or update, with why they are approved. */
  install: Array<{app: AppDeploy; approvedBy: string; reason: 'new' | 'deploy changed'}>
  /** Managed Flatpak extensions whose app is gone or no longer ships an extension. */
  remove: Array<{name: string; appId: string; reason: string}>
  /** Apps shipping an extension that nobody approved. */
  unapproved: AppDeploy[]
  unchanged: string[]
}

/** The first installation holding an app wins, as in flatpak's own lookup order. */
function uniqueApps(installations: AppDeploy[][]): AppDeploy[] {
  const seen = new Map<string, AppDeploy>()
  for (const apps of installations) for (const app of apps) if (!seen.has(app.appId)) seen.set(app.appId, app)
  return [...seen.values()]
}

/** Pure: what sync would change, from the apps found, which of them ship extensions, the state and the policy. */
export function planSync(apps: AppDeploy[], shipsExtension: (app: AppDeploy) => boolean, state: State, policy: ApprovalPolicy): SyncPlan {
  const plan: SyncPlan = {install: [], remove: [], unapproved: [], unchanged: []}
  const managedByApp = new Map(Object.values(state.extensions).filter((e) => e.source.appId).map((e) => [e.source.appId as string, e]))
  for (const app of apps) {
    if (!shipsExtension(app)) continue
    const approvedBy = state.approvals[app.appId] ? 'approved by an admin' : policyApproves(policy, app)
    const managed = managedByApp.get(app.appId)
    if (!approvedBy) {
      if (!managed) plan.unapproved.push(app)
      continue
    }
    if (!managed) plan.install.push({app, approvedBy, reason: 'new'})
    else if (managed.source.commit !== app.commit || managed.source.installation !== app.installation.path) plan.install.push({app, approvedBy, reason: 'deploy changed'})
    else plan.unchanged.push(managed.name)
  }
  const present = new Map(apps.map((a) => [a.appId, a]))
  for (const [appId, entry] of managedByApp) {
    const app = present.get(appId)
    if (!app) plan.remove.push({name: entry.name, appId, reason: `${appId} is no longer installed`})
    else if (!shipsExtension(app)) plan.remove.push({name: entry.name, appId, reason: `${appId} no longer ships an extension`})
  }
  return plan
}

export interface SyncOptions extends FlatpakEnv {
  /** Only this installation (a path). */
  installationPath?: string
  paths?: Paths
  timeoutS?: number
  lockTimeoutMs?: number
  dryRun?: boolean
}

export interface SyncResult {
  /** What the reconciliation found to do (with --dry-run: what it would do). */
  planned: {install: Array<{appId: string; reason: string; approvedBy: string}>; remove: Array<{name: string; reason: string}>}
  changed: boolean
  installed: string[]
  updated: string[]
  removed: string[]
  /** Changes that failed; `findings` are the validation errors that refused an install or update (the merged version stays). */
  failed: Array<{name: string; code: string; message: string; hint?: string; findings?: Finding[]}>
  unapproved: Array<{appId: string; installation: string}>
  unchanged: string[]
  steps: StepRecord[]
}

/** The sync plan for the host as it is now (also used by list to show unapproved apps). */
export function computePlan(options: SyncOptions, paths: Paths, state: State): SyncPlan {
  const installations = systemInstallations(options).filter((i) => options.installationPath === undefined || i.path === options.installationPath)
  if (options.installationPath !== undefined && installations.length === 0)
    throw new HelperError('FLATPAK_UNKNOWN_INSTALLATION', `'${options.installationPath}' is not a system Flatpak installation.`, {hint: 'Pass one of the paths in /etc/flatpak/installations.d or /var/lib/flatpak.'})
  const apps = uniqueApps(installations.map(appsIn))
  const plan = planSync(apps, (app) => existsSync(app.extensions), state, readPolicy(paths.policyFile))
  // With --installation, apps of other installations are not judged gone.
  if (options.installationPath !== undefined) plan.remove = plan.remove.filter((r) => state.extensions[r.name]?.source.installation === options.installationPath)
  return plan
}

export async function sync(options: SyncOptions, emit: Emit): Promise<SyncResult> {
  const paths = options.paths ?? DEFAULT_PATHS
  const steps: StepRecord[] = []
  const result: SyncResult = {planned: {install: [], remove: []}, changed: false, installed: [], updated: [], removed: [], failed: [], unapproved: [], unchanged: [], steps}
  const state = readState(paths)
  let plan = computePlan(options, paths, state)
  const report = (p: SyncPlan): void => {
    result.planned = {
      install: p.install.map((i) => ({appId: i.app.appId, reason: i.reason, approvedBy: i.approvedBy})),
      remove: p.remove.map((r) => ({name: r.name, reason: r.reason})),
    }
    result.unapproved = p.unapproved.map((a) => ({appId: a.appId, installation: a.installation.path}))
    result.unchanged = p.unchanged
    for (const a of p.unapproved)
      emit({type: 'warning', message: `${a.appId} (${a.installation.path}) ships a system extension that is not approved; it is not merged.`, hint: `To approve and install it: sysext-helper install ${a.appId}`})
  }
  const pendingWork = (p: SyncPlan): boolean => p.install.length > 0 || p.remove.length > 0
  if (options.dryRun || (!pendingWork(plan) && Object.keys(state.pending).length === 0)) {
    report(plan)
    return result
  }

  const probe = await preflight(emit, steps)
  const session = await openSession(paths, emit, steps, options.timeoutS ?? 25, options.lockTimeoutMs ?? 120_000, probe)
  try {
    // Plan again under the lock (another run may have synced meanwhile), and again after
    // applying: flatpak may have deployed once more while we worked. Bounded, so a
    // failing app cannot keep us looping.
    for (let round = 0; round < 3; round++) {
      plan = computePlan(options, paths, session.state)
      if (round === 0) report(plan)
      const failedBefore = new Set(result.failed.map((f) => f.name))
      plan.install = plan.install.filter((i) => !failedBefore.has(i.app.appId))
      plan.remove = plan.remove.filter((r) => !failedBefore.has(r.name))
      if (!pendingWork(plan)) break
      const changes: Change[] = []
      for (const {app} of plan.install) {
        try {
          const {validated, plan: installPlan} = await validateAndPlan(app.appId, {installationPath: app.installation.path, allow: grantedExtras(session.state, app.appId)}, session.state, paths,
            session.state.extensions[app.appId]?.target ?? 'local', emit, steps)
          if (installPlan.action !== 'unchanged') changes.push({kind: 'install', plan: installPlan, tree: validated.tree})
        } catch (error) {
          const e = error instanceof HelperError ? error : new HelperError('SYNC_FAILED', (error as Error).message, {cause: error})
          const findings = e.data?.findings as Finding[] | undefined
          result.failed.push({name: app.appId, code: e.code, message: `${e.message}${session.state.extensions[app.appId] ? ' The merged version stays as it is.' : ''}`, hint: e.hint, findings})
        }
      }
      for (const r of plan.remove) changes.push({kind: 'remove', name: r.name})
      if (changes.length === 0) break
      const outcomes: ChangeOutcome[] = await applyChanges(session.ctx, session.state, probe, changes)
      result.changed = true
      for (const o of outcomes) {
        if (!o.ok) {
          result.failed.push({name: o.name, code: o.error?.code ?? 'SYNC_FAILED', message: `${o.error?.message ?? 'failed'}${o.outcome ? ` The change was ${o.outcome}.` : ''}`, hint: o.error?.hint})
          continue
        }
        const list = o.kind === 'remove' ? result.removed : plan.install.find((i) => i.app.appId === o.name)?.reason === 'new' ? result.installed : result.updated
        if (!list.includes(o.name)) list.push(o.name)
      }
    }
    return result
  } finally {
    session.lock.release()
  }
}
