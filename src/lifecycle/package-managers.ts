/**
 * The host's package manager keeps working while extensions are merged (issue 12).
 *
 * - systemd >= 256 with /usr on a filesystem that can be an overlay upper layer: the
 *   mutable mode. The symlink /var/lib/extensions.mutable/usr -> /usr makes every merge
 *   sysext-helper runs use `--mutable=auto` (src/systemd/sysext.ts), and a drop-in gives
 *   the boot-time systemd-sysext.service the same mode. Package managers write the real
 *   /usr through the merge; nothing is unmerged.
 * - Otherwise (systemd < 256, or /usr on overlayfs): hooks. Before the package manager
 *   runs, the hook script unmerges (with the host's own /usr/bin/systemd-sysext, so it
 *   works when sysext-helper itself is an extension) and arms a transient unit that
 *   merges again when the package manager's process ends; after it, the script merges
 *   again and runs `sysext-helper package-managers --reload` (reload + Peer.Ping).
 *
 * Every file is rendered here (the self extension ships bundles, not templates), written
 * atomically only when it differs, and removed when the mode no longer wants it, so a
 * run converges whatever an earlier, interrupted one left.
 */
import {existsSync, lstatSync, mkdirSync, readFileSync, rmSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {HelperError, fsError} from '../errors.js'
import {commandLine, run} from '../exec.js'
import {symlinkAtomic, writeFileAtomic} from '../fs-atomic.js'
import {envFields, parseEnvFile} from '../formats/env-file.js'
import {daemonReload} from '../systemd/systemctl.js'
import {MUTABLE_LINK, type MountEntry, mergedMutable, mutableConfigured, sysextVersion, usrFilesystem} from '../systemd/sysext.js'
import type {Emit} from './events.js'
import {DEFAULT_PATHS, type ManagedExtension} from './state.js'

export type PackageManagerMode = 'mutable' | 'hooks' | 'off'
export type PackageManager = 'apt' | 'dnf5' | 'dnf4' | 'pacman'

/** The admin's switch: ENABLED=no turns the integration off (self-install and install then leave it alone). */
export const CONFIG_FILE = '/etc/sysext-helper/package-managers.conf'
export const HOOK_SCRIPT = '/etc/sysext-helper/package-manager-hook'
/** Present while the hook has unmerged and not merged again; holds the package manager's "PID START". */
export const UNMERGED_MARK = '/run/sysext-helper/package-manager.unmerged'
export const SYSEXT_DROPIN = '/etc/systemd/system/systemd-sysext.service.d/sysext-helper-mutable.conf'

const HEADER = "Written by sysext-helper (issue 12: package managers keep working while extensions are merged). 'sysext-helper doctor' checks it; 'sysext-helper package-managers --disable' removes it."

/** The one script every package manager's hook calls: pre (unmerge), post (merge again), watch (the safety net). */
export function hookScript(): string {
  return `#!/bin/sh
# ${HEADER}
# pre:   unmerge before the package manager writes /usr (read-only while merged), after arming a
#        transient unit that merges again when the package manager ends, whatever happens to it.
# post:  merge again, then reload systemd, the bus and polkit and ping the managed services.
# watch: run by that unit; merges again if the package manager ended without its post hook.
# Needs nothing from the merged /usr: the host's own systemd-sysext and systemd-run only.
set -u
MARK=${UNMERGED_MARK}
LOCK=${DEFAULT_PATHS.lockFile}
SYSEXT=/usr/bin/systemd-sysext
log() { echo "sysext-helper: $*" >&2; }
merged() { [ -s /usr/.systemd-sysext/extensions ] || [ -s /opt/.systemd-sysext/extensions ]; }
# Field N of /proc/PID/stat after the command name (3 = state, 4 = ppid, 22 = start time).
stat_field() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f$(($2 - 2)); }
comm() { cat "/proc/$1/comm" 2>/dev/null; }
alive() { [ "$1" -gt 1 ] 2>/dev/null && [ "$(stat_field "$1" 22)" = "$2" ]; }
# The package manager: the first ancestor that is not a shell, and the topmost of its own
# forks (apt-get runs the hooks from a child apt-get that ends before the main one).
manager() {
  pid=$PPID
  while [ "\${pid:-0}" -gt 1 ]; do
    case "$(comm "$pid")" in
      sh|dash|bash) pid=$(stat_field "$pid" 4) ;;
      *) break ;;
    esac
  done
  [ "\${pid:-0}" -gt 1 ] || { echo 0; return; }
  name=$(comm "$pid")
  while parent=$(stat_field "$pid" 4) && [ "\${parent:-0}" -gt 1 ] && [ "$(comm "$parent")" = "$name" ]; do pid=$parent; done
  echo "$pid"
}
# sysext-helper's own lock, held in the package manager's name ("PID START", as sysext-helper
# writes it) for the whole run: an install or sync waits instead of merging again mid-run.
lock() {
  i=0
  while :; do
    echo "$1" > "$LOCK.$$" && ln "$LOCK.$$" "$LOCK" 2>/dev/null && { rm -f "$LOCK.$$"; return 0; }
    rm -f "$LOCK.$$"
    holder=$(cat "$LOCK" 2>/dev/null) || continue
    [ "$holder" = "$1" ] && return 0 # this package manager's run holds it already
    set -- "$1" $holder
    if ! alive "\${2:-0}" "\${3:-}"; then
      # A dead holder's lock: moved aside (only one taker wins), put back if it was a fresh one.
      mv "$LOCK" "$LOCK.stale.$$" 2>/dev/null || continue
      [ "$(cat "$LOCK.stale.$$")" = "$holder" ] || ln "$LOCK.stale.$$" "$LOCK" 2>/dev/null
      rm -f "$LOCK.stale.$$"
      continue
    fi
    i=$((i + 1))
    [ "$i" -le 240 ] || { log "another sysext-helper run (PID $2) still holds $LOCK after 120 s; try again when it is done."; return 1; }
    sleep 0.5
  done
}
unlock() { [ "$(cat "$LOCK" 2>/dev/null)" = "$1" ] && rm -f "$LOCK"; return 0; }
remerge() {
  out=$("$SYSEXT" refresh 2>&1) || { unlock "$1"; log "'systemd-sysext refresh' failed ($out): the extensions are not merged. Run it by hand; see 'journalctl -b -t systemd-sysext'."; return 1; }
  rm -f "$MARK"
  unlock "$1"
  if [ -x /usr/bin/sysext-helper ]; then
    /usr/bin/sysext-helper package-managers --reload >/dev/null || log "merged again, but a managed service does not answer: run 'sysext-helper list'."
  else
    systemctl daemon-reload
    busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null 2>&1 || true
  fi
}
case "\${1:-}" in
  pre)
    merged || exit 0
    pm=$(manager)
    id="$pm $(stat_field "$pm" 22)"
    lock "$id" || exit 1
    mkdir -p "\${MARK%/*}" && echo "$id" > "$MARK" || { unlock "$id"; log "cannot write $MARK"; exit 1; }
    if [ "$pm" -gt 1 ]; then
      systemd-run --quiet --no-block --collect --unit="sysext-helper-remerge-$pm" \\
        --description="Merge the system extensions again when the package manager (PID $pm) ends" \\
        ${HOOK_SCRIPT} watch $id >/dev/null 2>&1 || log "could not arm the re-merge unit; if the package manager fails, run 'systemd-sysext refresh'."
    fi
    out=$("$SYSEXT" unmerge 2>&1) || { rm -f "$MARK"; unlock "$id"; log "'systemd-sysext unmerge' failed ($out): /usr stays read-only, so the package manager would fail. See 'journalctl -b -t systemd-sysext'."; exit 1; }
    ;;
  post)
    [ -e "$MARK" ] || exit 0
    remerge "$(cat "$MARK")"
    ;;
  watch)
    while [ "$(stat_field "$2" 22)" = "$3" ]; do sleep 1; done
    # Only the run this unit was armed for: a later run has its own mark and its own unit.
    [ "$(cat "$MARK" 2>/dev/null)" = "$2 $3" ] || exit 0
    log "the package manager (PID $2) ended without merging again: merging now."
    remerge "$2 $3"
    ;;
  *) log "usage: $0 pre|post|watch PID START"; exit 2 ;;
esac
`
}

const hook = (verb: string): string => `${HOOK_SCRIPT} ${verb}`

/** Hook files per package manager: where each goes and what it holds. */
export function hookFiles(): Record<PackageManager, Array<{path: string; content: string; mode?: number}>> {
  const pacman = (when: 'Pre' | 'Post', verb: string, what: string): string => `# ${HEADER}
[Trigger]
Operation = Install
Operation = Upgrade
Operation = Remove
Type = Path
Target = usr/*
Target = opt/*

[Action]
Description = ${what}
When = ${when}Transaction
Exec = ${hook(verb)}
${when === 'Pre' ? 'AbortOnFail\n' : ''}`
  return {
    apt: [{path: '/etc/apt/apt.conf.d/05sysext-helper', content: `// ${HEADER}
// Around every dpkg run: unmerge the system extensions first, merge them again after (also when dpkg fails).
DPkg::Pre-Invoke { "${hook('pre')}"; };
DPkg::Post-Invoke { "${hook('post')}"; };
`}],
    dnf5: [{path: '/etc/dnf/libdnf5-plugins/actions.d/sysext-helper.actions', content: `# ${HEADER}
# libdnf5 actions plugin: callback:package_filter:direction:options:command
pre_transaction::::${hook('pre')}
post_transaction::::${hook('post')}
`}],
    dnf4: [
      {path: '/etc/dnf/plugins/sysext_helper.conf', content: `# ${HEADER}\n[main]\nenabled=1\n`},
      // dnf 4 loads plugins from Python's site-packages under /usr only; see README "Package managers".
      {path: '/etc/sysext-helper/dnf-plugins/sysext_helper.py', content: `# ${HEADER}
import subprocess

import dnf


class SysextHelper(dnf.Plugin):
    name = 'sysext_helper'

    def pre_transaction(self):
        subprocess.run(['${HOOK_SCRIPT}', 'pre'], check=True)

    def transaction(self):
        subprocess.run(['${HOOK_SCRIPT}', 'post'], check=False)
`},
    ],
    pacman: [
      {path: '/etc/pacman.d/hooks/00-sysext-helper-pre.hook', content: pacman('Pre', 'pre', 'Unmerging system extensions (sysext-helper)')},
      {path: '/etc/pacman.d/hooks/zz-sysext-helper-post.hook', content: pacman('Post', 'post', 'Merging system extensions again (sysext-helper)')},
    ],
  }
}

export function mutableDropIn(): string {
  const fallback = "/bin/sh -c '[ -s /usr/.systemd-sysext/extensions ] || [ -s /opt/.systemd-sysext/extensions ] || SYSTEMD_SYSEXT_MUTABLE_MODE=no systemd-sysext refresh'"
  return `# ${HEADER}
# Boot-time merges keep /usr writable, like every merge sysext-helper runs (--mutable=auto).
# Should that merge fail, a read-only one follows: the extensions are merged either way.
[Service]
Environment=SYSTEMD_SYSEXT_MUTABLE_MODE=auto
ExecStart=
ExecStart=-systemd-sysext refresh
ExecStart=${fallback}
ExecReload=
ExecReload=-systemd-sysext refresh
ExecReload=${fallback}
`
}

/** Which package managers this host has (by their binaries, under `root`). */
export function presentManagers(root = '/'): PackageManager[] {
  const has = (p: string): boolean => existsSync(join(root, p))
  const out: PackageManager[] = []
  if (has('usr/bin/apt-get') || has('usr/bin/dpkg')) out.push('apt')
  if (has('usr/bin/dnf5')) out.push('dnf5')
  if (has('usr/bin/dnf-3')) out.push('dnf4')
  if (has('usr/bin/pacman')) out.push('pacman')
  return out
}

export interface PackageManagerConfig {
  /** ENABLED=no: off. */
  enabled: boolean
  /** MECHANISM=hooks: hooks even where the mutable mode would work (e.g. where a writable merge fails). */
  forceHooks: boolean
}

/** The admin's settings in CONFIG_FILE (absent or unreadable: the defaults). */
export function readConfig(root = '/'): PackageManagerConfig {
  let text: string
  try {
    text = readFileSync(join(root, CONFIG_FILE), 'utf8')
  } catch {
    return {enabled: true, forceHooks: false}
  }
  const parsed = parseEnvFile(text)
  const fields = parsed.ok ? envFields(parsed.assignments, true) : {}
  return {enabled: !/^(no|false|0|off)$/i.test(fields.ENABLED ?? ''), forceHooks: /^hooks$/i.test(fields.MECHANISM ?? '')}
}

/** Records the admin's choice (ENABLED=yes|no) in the config file, atomically. */
export function writeConfigSwitch(enabled: boolean, root = '/'): void {
  const path = join(root, CONFIG_FILE)
  try {
    mkdirSync(dirname(path), {recursive: true, mode: 0o755})
    const mechanism = readConfig(root).forceHooks ? 'MECHANISM=hooks\n' : ''
    writeFileAtomic(path, `# ${HEADER}\n# ENABLED=no: self-install and install leave the package-manager integration off.\n# MECHANISM=hooks: unmerge around package-manager runs even where writable merges (systemd >= 256) would work.\nENABLED=${enabled ? 'yes' : 'no'}\n${mechanism}`)
  } catch (error) {
    throw fsError('PACKAGE_MANAGERS_WRITE_FAILED', 'Cannot write the package-manager switch', path, error, 'Check that /etc is writable (run as root).')
  }
}

/** What `package-managers --disable` and the removal of sysext-helper's own extension apply. */
export const REMOVED: ModeDecision = {mode: 'off', reason: 'removed on request'}

export interface ModeDecision {
  mode: PackageManagerMode
  reason: string
}

/** Pure: the mechanism for a host. */
export function decideMode(input: {systemdVersion: number; usr: MountEntry | undefined; config: PackageManagerConfig}): ModeDecision {
  if (!input.config.enabled) return {mode: 'off', reason: `turned off in ${CONFIG_FILE} (ENABLED=no): package managers cannot write /usr while an extension is merged`}
  if (input.systemdVersion < 256)
    return {mode: 'hooks', reason: `systemd ${input.systemdVersion} merges /usr read-only (--mutable needs 256): package-manager hooks unmerge around each run`}
  if (input.config.forceHooks) return {mode: 'hooks', reason: `MECHANISM=hooks in ${CONFIG_FILE}: package-manager hooks unmerge around each run (merges stay read-only)`}
  if (input.usr?.fsType === 'overlay')
    return {mode: 'hooks', reason: `/usr is on overlayfs (${input.usr.mountPoint}), which cannot be an overlay upper layer ("filesystem on /usr not supported as upperdir"): merges stay read-only and package-manager hooks unmerge around each run`}
  return {mode: 'mutable', reason: `systemd ${input.systemdVersion}: merges keep /usr writable (--mutable=auto, ${MUTABLE_LINK} -> /usr); package managers write the real /usr`}
}

interface Desired {
  files: Array<{path: string; content: string; mode?: number}>
  link: boolean
}

function desired(mode: PackageManagerMode, managers: PackageManager[]): Desired {
  if (mode === 'mutable') return {files: [{path: SYSEXT_DROPIN, content: mutableDropIn()}], link: true}
  if (mode === 'off') return {files: [], link: false}
  const all = hookFiles()
  return {files: [{path: HOOK_SCRIPT, content: hookScript(), mode: 0o755}, ...managers.flatMap((m) => all[m])], link: false}
}

/** Every file this module may write, whatever the mode. */
function everyFile(): string[] {
  return [SYSEXT_DROPIN, HOOK_SCRIPT, ...Object.values(hookFiles()).flat().map((f) => f.path)]
}

function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
}

export interface FileState {
  path: string
  /** 'ok': present as rendered; 'differs': present with other content; 'missing'; 'stale': present, not wanted in this mode. */
  state: 'ok' | 'differs' | 'missing' | 'stale'
}

export interface PackageManagerStatus extends ModeDecision {
  managers: PackageManager[]
  files: FileState[]
  /** The mutable symlink: wanted and in place. */
  linkOk: boolean
  /** Whether the /usr merge is writable right now. */
  mergedMutable: boolean
  /** Whether the hooks unmerged and did not merge again yet. */
  unmergedByHook: boolean
}

/** The mechanism for this host; `systemdVersion` when the caller has probed it already. */
export async function detectMode(root = '/', systemdVersion?: number): Promise<ModeDecision> {
  return decideMode({systemdVersion: systemdVersion ?? (await sysextVersion()), usr: usrFilesystem(), config: readConfig(root)})
}

/** What is in place compared with what the mode wants. */
export async function packageManagerStatus(root = '/'): Promise<PackageManagerStatus> {
  const decision = await detectMode(root)
  const managers = presentManagers(root)
  const want = desired(decision.mode, managers)
  const wanted = new Map(want.files.map((f) => [f.path, f.content]))
  const files: FileState[] = []
  for (const path of everyFile()) {
    const content = readOrUndefined(join(root, path))
    const w = wanted.get(path)
    if (w === undefined) {
      if (content !== undefined) files.push({path, state: 'stale'})
    } else files.push({path, state: content === undefined ? 'missing' : content === w ? 'ok' : 'differs'})
  }
  const linkPresent = mutableConfigured(join(root, MUTABLE_LINK))
  if (!want.link && linkPresent) files.push({path: MUTABLE_LINK, state: 'stale'})
  return {...decision, managers, files, linkOk: want.link === linkPresent, mergedMutable: mergedMutable(), unmergedByHook: existsSync(join(root, UNMERGED_MARK))}
}

export interface ApplyResult extends ModeDecision {
  written: string[]
  removed: string[]
}

/** Removes `root`/`path` if present; records `path`. */
function removeIfPresent(root: string, path: string, removed: string[]): void {
  const abs = join(root, path)
  try {
    lstatSync(abs)
  } catch {
    return
  }
  try {
    rmSync(abs, {force: true})
  } catch (error) {
    throw fsError('PACKAGE_MANAGERS_WRITE_FAILED', 'Cannot remove the package-manager integration file', abs, error, 'Remove it by hand, then run sysext-helper package-managers --enable.')
  }
  removed.push(path)
}

/**
 * Converges the host to a decision (default: the detected one): writes what differs, removes
 * what the mode does not want; reloads systemd when the drop-in changed. Idempotent.
 */
export async function applyPackageManagers(options: {decision?: ModeDecision; root?: string; reload?: boolean; systemdVersion?: number} = {}): Promise<ApplyResult> {
  const root = options.root ?? '/'
  const decision = options.decision ?? (await detectMode(root, options.systemdVersion))
  const want = desired(decision.mode, presentManagers(root))
  const written: string[] = []
  const removed: string[] = []
  const wanted = new Set(want.files.map((f) => f.path))
  for (const f of want.files) {
    const path = join(root, f.path)
    if (readOrUndefined(path) === f.content && (lstatSync(path).mode & 0o777) === (f.mode ?? 0o644)) continue
    try {
      mkdirSync(dirname(path), {recursive: true, mode: 0o755})
      writeFileAtomic(path, f.content, f.mode ?? 0o644)
    } catch (error) {
      throw fsError('PACKAGE_MANAGERS_WRITE_FAILED', 'Cannot write the package-manager integration file', path, error, 'Check that /etc is writable, then run sysext-helper package-managers --enable.')
    }
    written.push(f.path)
  }
  for (const path of everyFile()) if (!wanted.has(path)) removeIfPresent(root, path, removed)
  const link = join(root, MUTABLE_LINK)
  if (want.link && !mutableConfigured(link)) {
    try {
      mkdirSync(dirname(link), {recursive: true, mode: 0o755})
      if (existsSync(link) && !lstatSync(link).isSymbolicLink())
        throw new HelperError('PACKAGE_MANAGERS_LINK_TAKEN', `${MUTABLE_LINK} exists and is not a symlink: systemd-sysext would use it as the upper layer of /usr instead of the real /usr.`, {
          file: MUTABLE_LINK, hint: `Move it away (its content is what an earlier writable merge stored), then run sysext-helper package-managers --enable.`,
        })
      symlinkAtomic('/usr', link)
    } catch (error) {
      if (error instanceof HelperError) throw error
      throw fsError('PACKAGE_MANAGERS_WRITE_FAILED', 'Cannot create the mutable-mode symlink', link, error, 'Check that /var/lib is writable.')
    }
    written.push(MUTABLE_LINK)
  } else if (!want.link && mutableConfigured(link)) removeIfPresent(root, MUTABLE_LINK, removed)
  if (options.reload !== false && [...written, ...removed].includes(SYSEXT_DROPIN)) await daemonReload()
  return {...decision, written, removed}
}

export interface Shadow {
  path: string
  /** 'whiteout': a deletion recorded in the real /usr (hides the extension's file); 'copy': a file there hides the extension's. */
  kind: 'whiteout' | 'copy'
  extension: string
}

/**
 * With a writable merge the real /usr is the overlay's upper layer: a write to an
 * extension's file copies it up there and a deletion leaves a whiteout, and either hides
 * the extension's file from then on, also after an update of the extension. Looks at the
 * real /usr (a private mount namespace without the overlay) for the non-directory paths
 * the merged extensions' manifests own.
 */
export async function findShadows(extensions: ManagedExtension[]): Promise<Shadow[]> {
  const owner = new Map<string, string>()
  for (const e of extensions) for (const [path, type] of e.manifest?.entries ?? []) if (path.startsWith('usr/') && type !== 'dir') owner.set(path, e.name)
  if (owner.size === 0 || !mergedMutable()) return []
  const {stdout} = await run('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'umount -l /usr || exit 97; cd / && xargs -0 -r stat -c "%F|%t:%T|%n" -- 2>/dev/null; exit 0'], {
    input: [...owner.keys()].join('\0'),
    timeoutMs: 30_000,
  })
  const out: Shadow[] = []
  for (const line of stdout.split('\n')) {
    const [type, dev, ...rest] = line.split('|')
    const path = rest.join('|')
    if (!path || !owner.has(path)) continue
    out.push({path: `/${path}`, kind: type === 'character special file' && dev === '0:0' ? 'whiteout' : 'copy', extension: owner.get(path) as string})
  }
  return out
}

/** The command that removes shadows from the real /usr (run it as root). */
export function shadowFix(shadows: Shadow[]): string {
  // The paths are the extension's own file names: quoted, twice (inner command, then sh -c's argument).
  return `${commandLine('unshare', ['-m', 'sh', '-c', commandLine('umount', ['-l', '/usr']) + ' && ' + commandLine('rm', ['-f', ...shadows.map((s) => s.path)])])} && systemd-sysext refresh --mutable=auto`
}

/**
 * Called by install (so by self-install too) before it merges: converges the integration,
 * unless the admin turned it off. Never fails the install; says what it did or why not.
 */
export async function ensurePackageManagers(emit: Emit, systemdVersion: number): Promise<void> {
  try {
    const r = await applyPackageManagers({systemdVersion})
    if (r.mode === 'off')
      emit({type: 'warning', message: `Package-manager integration is ${r.reason}.`, hint: "Unmerge around upgrades (systemd-sysext unmerge; apt upgrade; systemd-sysext refresh), or 'sysext-helper package-managers --enable'."})
    else if (r.written.length + r.removed.length > 0)
      emit({type: 'info', message: `Package managers: ${r.mode} (${r.reason}).${r.written.length ? ` Wrote ${r.written.join(', ')}.` : ''}${r.removed.length ? ` Removed ${r.removed.join(', ')}.` : ''}`})
  } catch (error) {
    emit({type: 'warning', message: `The package-manager integration could not be set up: ${(error as Error).message}`, hint: (error as HelperError).hint ?? 'sysext-helper package-managers --enable'})
  }
}
