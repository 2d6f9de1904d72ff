/** approve / revoke: the admin's consent for a Flatpak app's extension, without installing it. */
import {usageError} from '../errors.js'
import {looksLikeAppId} from '../flatpak/installations.js'
import type {Emit, StepRecord} from './events.js'
import {applyChanges, managedName, openSession, preflight} from './install.js'
import {DEFAULT_PATHS, type Paths, writeState} from './state.js'

export interface ApprovalResult {
  appId: string
  approved: boolean
  /** revoke: the extension that was uninstalled with the approval, if any. */
  uninstalled: string | null
  /** Extras granted with the approval. */
  allow: string[]
  steps: StepRecord[]
}

function checkAppId(appId: string): void {
  if (!looksLikeAppId(appId)) throw usageError('INVALID_APP_ID', `'${appId}' is not a Flatpak app id.`, 'App ids are reverse-DNS names such as org.gnome.Sysprof.')
}

/** Approves `appId`; `allow` (when given) replaces the extras granted with the approval. */
export async function approve(appId: string, emit: Emit, allow?: string[], paths: Paths = DEFAULT_PATHS): Promise<ApprovalResult> {
  checkAppId(appId)
  const steps: StepRecord[] = []
  const session = await openSession(paths, emit, steps, 25, 120_000)
  try {
    const previous = session.state.approvals[appId]
    session.state.approvals[appId] = {appId, approvedAt: previous?.approvedAt ?? new Date().toISOString(), allow: allow ?? previous?.allow}
    writeState(paths, session.state)
    return {appId, approved: true, uninstalled: null, allow: session.state.approvals[appId].allow ?? [], steps}
  } finally {
    session.lock.release()
  }
}

/** Withdraws consent; an extension already merged for the app is uninstalled with it. */
export async function revoke(appId: string, emit: Emit, paths: Paths = DEFAULT_PATHS): Promise<ApprovalResult> {
  checkAppId(appId)
  const steps: StepRecord[] = []
  const probe = await preflight(emit, steps)
  const session = await openSession(paths, emit, steps, 25, 120_000, probe)
  try {
    delete session.state.approvals[appId]
    writeState(paths, session.state)
    const name = managedName(session.state, appId)
    if (name !== undefined) {
      const [outcome] = await applyChanges(session.ctx, session.state, probe, [{kind: 'remove', name}])
      if (!outcome.ok && outcome.error) throw outcome.error
    }
    return {appId, approved: false, uninstalled: name ?? null, allow: [], steps}
  } finally {
    session.lock.release()
  }
}
