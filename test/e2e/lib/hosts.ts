/**
 * Real booted systemd hosts for end-to-end tests (REFERENCE.md §7).
 *
 * `ensureRoot(flavor)` builds a Debian root once with debootstrap and caches it;
 * `bootHost(flavor)` boots a throw-away copy of it (overlayfs over the cached root, or
 * a plain copy with `{plainRoot: true}`)
 * with `systemd-nspawn -b` and runs commands inside through `nsenter`. Needs root,
 * debootstrap and systemd-container on the machine running the tests.
 */
import {type ChildProcess, spawn, spawnSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import {homedir, tmpdir} from 'node:os'
import {join} from 'node:path'
import {after} from 'node:test'

export type Flavor = 'debian12' | 'debian13'
export const FLAVORS: readonly Flavor[] = ['debian12', 'debian13']

/** The checkout (this file runs from dist/test/e2e/lib/). */
export const REPO_ROOT = new URL('../../../../', import.meta.url).pathname.replace(/\/$/, '')
/** Where the host's node binary appears inside the guests. */
export const GUEST_NODE = '/opt/sysext-helper-node/bin/node'
/** A clean PATH for commands in the guest (the test runner's env must not leak in). */
const GUEST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/sysext-helper-node/bin'

export const TESTER = {name: 'tester', uid: 1000}

interface Recipe {
  suite: string
  packages: string[]
  /** Shell run in the chroot after debootstrap. */
  setup: string
}

// Packages the tests rely on. polkitd ships pkaction/pkcheck on bookworm and trixie;
// pkexec is its own package on both (policykit-1 is only a transitional name).
const COMMON_PACKAGES = [
  'systemd',
  'systemd-sysv',
  'libpam-systemd', // logind: polkitd needs it to install
  'dbus',
  'polkitd',
  'pkexec',
  'python3',
  'python3-dbus',
  'python3-gi',
  'flatpak',
  'procps',
  'util-linux',
]

// Runs in the chroot. Kept in the stamp, so editing it rebuilds the root.
const COMMON_SETUP = `set -eu
useradd --create-home --uid ${TESTER.uid} --user-group --shell /bin/bash ${TESTER.name}
# A fixed machine-id: an empty one makes every boot a "first boot" (presets, slower).
printf '%s\\n' 5f3c2a3e8d1b4c6f9a7e0b1c2d3e4f50 > /etc/machine-id
# debootstrap copied this machine's hostname; without the file, nspawn's --machine= name is used.
rm -f /etc/hostname
# Timers that would start apt/man-db/fstrim work in the middle of a test.
for u in apt-daily.timer apt-daily-upgrade.timer man-db.timer fstrim.timer e2scrub_all.timer dpkg-db-backup.timer; do
  systemctl mask "$u" >/dev/null 2>&1 || true
done
apt-get clean
rm -rf /var/lib/apt/lists/*
`

const RECIPES: Record<Flavor, Recipe> = {
  debian12: {suite: 'bookworm', packages: COMMON_PACKAGES, setup: COMMON_SETUP},
  debian13: {
    suite: 'trixie',
    packages: [...COMMON_PACKAGES, 'dbus-broker'],
    // dbus-broker is installed next to dbus-daemon; enabling it aliases dbus.service.
    setup: `${COMMON_SETUP}systemctl enable dbus-broker.service\n`,
  },
}

export function cacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache')
  return join(base, 'sysext-helper-e2e')
}

/** The Debian mirror apt uses on this machine (env SYSEXT_E2E_MIRROR wins). */
export function debianMirror(): string {
  if (process.env.SYSEXT_E2E_MIRROR) return process.env.SYSEXT_E2E_MIRROR
  const files = ['/etc/apt/sources.list']
  try {
    for (const f of readdirSync('/etc/apt/sources.list.d')) files.push(join('/etc/apt/sources.list.d', f))
  } catch {}
  for (const f of files) {
    let text: string
    try {
      text = readFileSync(f, 'utf8')
    } catch {
      continue
    }
    // deb822 "URIs:" lines and one-line "deb URI suite" entries; the main archive only.
    for (const m of text.matchAll(/^\s*(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)/gm)) {
      const uri = m[1]!.replace(/\/$/, '')
      if (/\/debian$/.test(uri)) return uri
    }
  }
  return 'http://deb.debian.org/debian'
}

interface Stamp {
  flavor: Flavor
  suite: string
  mirror: string
  packages: string[]
  setup: string
}

function stampOf(flavor: Flavor): Stamp {
  const r = RECIPES[flavor]
  return {flavor, suite: r.suite, mirror: debianMirror(), packages: r.packages, setup: r.setup}
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, {encoding: 'utf8'})
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`})\n${r.stdout ?? ''}${r.stderr ?? ''}`)
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * A lock between test processes, a directory holding the owner's pid; a lock whose
 * owner died is taken over. Within one process, ensureRoot memoizes instead.
 */
async function withLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      mkdirSync(path)
      writeFileSync(join(path, 'pid'), String(process.pid))
      break
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      let owner = 0
      try {
        owner = Number(readFileSync(join(path, 'pid'), 'utf8'))
      } catch {}
      if (owner && !pidAlive(owner)) rmSync(path, {recursive: true, force: true})
      else await new Promise((r) => setTimeout(r, 500))
    }
  }
  try {
    return await fn()
  } finally {
    rmSync(path, {recursive: true, force: true})
  }
}

export interface RootInfo {
  flavor: Flavor
  /** The cached root filesystem (never modified after the build). */
  root: string
  /** True when this call built it. */
  built: boolean
  /** Build time in ms when built. */
  buildMs?: number
}

const ensured = new Map<Flavor, Promise<RootInfo>>()

/**
 * The cached root for `flavor`, built first if missing or if its recipe changed.
 * Layout: CACHE/<flavor>/{root/,stamp.json,build.log}; a build goes to
 * CACHE/<flavor>.tmp-*, and is renamed into place only when complete.
 */
export function ensureRoot(flavor: Flavor): Promise<RootInfo> {
  let p = ensured.get(flavor)
  if (!p) {
    p = buildRoot(flavor)
    ensured.set(flavor, p)
    p.catch(() => ensured.delete(flavor))
  }
  return p
}

/** Builds the missing roots concurrently (debootstrap is mostly network and dpkg waits). */
export function ensureRoots(flavors: readonly Flavor[] = FLAVORS): Promise<RootInfo[]> {
  return Promise.all(flavors.map((f) => ensureRoot(f)))
}

async function buildRoot(flavor: Flavor): Promise<RootInfo> {
  const cache = cacheDir()
  mkdirSync(cache, {recursive: true})
  const final = join(cache, flavor)
  const stamp = JSON.stringify(stampOf(flavor), null, 2) + '\n'
  const current = (): boolean => {
    try {
      return readFileSync(join(final, 'stamp.json'), 'utf8') === stamp
    } catch {
      return false
    }
  }
  if (current()) return {flavor, root: join(final, 'root'), built: false}
  return withLock(join(cache, `${flavor}.lock`), async () => {
    if (current()) return {flavor, root: join(final, 'root'), built: false}
    // Leftovers of builds that were killed (debootstrap may have left /proc, /sys
    // mounted inside: unmount before removing, never delete through a mount).
    for (const e of readdirSync(cache)) {
      if (!e.startsWith(`${flavor}.tmp-`) && !e.startsWith(`${flavor}.old-`)) continue
      if (unmountUnder(join(cache, e))) rmSync(join(cache, e), {recursive: true, force: true})
    }
    const started = Date.now()
    const tmp = mkdtempSync(join(cache, `${flavor}.tmp-`))
    const root = join(tmp, 'root')
    const logPath = join(tmp, 'build.log')
    const log = openSync(logPath, 'a')
    const recipe = RECIPES[flavor]
    try {
      await runAsync(
        'debootstrap',
        ['--variant=minbase', `--include=${recipe.packages.join(',')}`, recipe.suite, root, debianMirror()],
        log,
      )
      await runAsync('chroot', [root, '/bin/sh', '-c', recipe.setup], log, {PATH: GUEST_PATH, LANG: 'C.UTF-8'})
    } catch (error) {
      closeSync(log)
      const tail = readFileSync(logPath, 'utf8').split('\n').slice(-30).join('\n')
      rmSync(tmp, {recursive: true, force: true})
      throw new Error(`building the ${flavor} root failed: ${(error as Error).message}\n${tail}`, {cause: error})
    }
    closeSync(log)
    writeFileSync(join(tmp, 'stamp.json'), stamp)
    // Swap in: the old root (if any) moves aside first; both renames are atomic.
    if (existsSync(final)) renameSync(final, join(cache, `${flavor}.old-${process.pid}`))
    renameSync(tmp, final)
    rmSync(join(cache, `${flavor}.old-${process.pid}`), {recursive: true, force: true})
    return {flavor, root: join(final, 'root'), built: true, buildMs: Date.now() - started}
  })
}

/** Unmounts everything mounted under `dir`, deepest first; false if some remain. */
function unmountUnder(dir: string): boolean {
  const under = (): string[] =>
    readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith(`${dir}/`))
      .sort((a, b) => b.length - a.length)
  for (const m of under()) spawnSync('umount', ['-l', m], {stdio: 'ignore'})
  return under().length === 0
}

function runAsync(cmd: string, args: string[], logFd: number, env?: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    // If the test process is killed, so is the build (a surviving debootstrap
    // would keep writing into a directory the next build removes).
    const child = spawn('setpriv', ['--pdeathsig=KILL', '--', cmd, ...args], {
      stdio: ['ignore', logFd, logFd],
      env: env ?? process.env,
    })
    child.on('error', reject)
    child.on('exit', (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')}: ${signal ?? `exit ${code}`}`)),
    )
  })
}

// ---------------------------------------------------------------------------
// Booted hosts

export interface ExecOptions {
  /** Run as this user (name or uid) instead of root, with a clean login-like env. */
  user?: string | number
  /** Written to stdin. */
  input?: string
  /** ms; the command is killed after it (default 60 s). */
  timeout?: number
  /** Extra environment variables. */
  env?: Record<string, string>
  /** Working directory inside the guest (default / or the user's home). */
  cwd?: string
}

export interface ExecResult {
  stdout: string
  stderr: string
  exitCode: number
  /** Set when the command was killed (timeout). */
  signal?: string
}

export interface Host {
  flavor: Flavor
  /** The guest's root as seen from the test process (the overlay mount). */
  root: string
  /** PID (in the test's namespace) of the guest's systemd. */
  pid1: number
  /** How long the boot took, ms (from spawning nspawn to is-system-running). */
  bootMs: number
  /** Output of `systemctl is-system-running --wait` at boot: running or degraded. */
  bootState: string
  exec(cmd: string, args?: string[], opts?: ExecOptions): Promise<ExecResult>
  /** `sh -c script` inside the guest. */
  sh(script: string, opts?: ExecOptions): Promise<ExecResult>
  /** Like exec, but rejects with the output when the exit code is not 0. */
  execOk(cmd: string, args?: string[], opts?: ExecOptions): Promise<ExecResult>
  /** Runs the CLI from the checkout (`node bin/run.js ...args`) inside the guest. */
  cli(args: string[], opts?: ExecOptions): Promise<ExecResult>
  /** The guest's console output so far (boot messages), for diagnosing failures. */
  consoleLog(): string
  /** Kills the guest, unmounts the overlay and removes its files. Idempotent. */
  stop(): Promise<void>
  /**
   * Reboots the guest: a clean `systemctl poweroff` (SIGKILL after 30 s), then a new
   * boot on the same overlay upper dir, so everything written to its disk survives
   * and /run (a tmpfs) does not. `pid1`, `bootMs` and `bootState` then describe the new boot.
   */
  reboot(): Promise<void>
}

export interface BootOptions {
  /** Bind the checkout at this path in the guest (default: the same path as here). */
  guestRepo?: string
  /** Extra `--bind-ro=` specs (SRC[:DEST]). */
  bindRo?: string[]
  /** Extra `--bind=` specs. */
  bind?: string[]
  /** ms to wait for the boot (default 60 s). */
  bootTimeout?: number
  /** Do not bind this machine's node binary into the guest (the guest then has no node; host.cli() fails). */
  noNode?: boolean
  /**
   * Boot a plain copy of the cached root (`cp -a --reflink=auto`, removed on stop) instead of an
   * overlay over it: slower to start (a few seconds), but its /usr can be an overlay upperdir
   * (`systemd-sysext --mutable=auto`), which an overlay-rooted guest's cannot (REFERENCE §7).
   */
  plainRoot?: boolean
}

/** Where per-boot state goes; must not be on overlayfs (no upperdir there). */
function hostsDir(): string {
  const d = join(process.env.SYSEXT_E2E_TMPDIR || tmpdir(), 'sysext-helper-e2e-hosts')
  mkdirSync(d, {recursive: true})
  return d
}

interface Live {
  dir: string
  merged: string
  nspawnPid?: number
  pid1?: number
  guard?: ChildProcess
}
const live = new Set<Live>()

/** Synchronous teardown: usable from process 'exit' and signal handlers. */
function teardownSync(h: Live): void {
  // We clean up ourselves: the guard must not act later on reused pids.
  try {
    h.guard?.kill('SIGKILL')
  } catch {}
  // Killing the guest's PID 1 ends its PID namespace at once; nspawn then exits.
  for (const pid of [h.pid1, h.nspawnPid]) {
    if (pid) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
    }
  }
  if (h.nspawnPid) {
    // nspawn is usually our child: nobody reaps it while this loop blocks, so a
    // zombie counts as gone.
    const deadline = Date.now() + 5000
    while (running(h.nspawnPid) && Date.now() < deadline) spawnSync('sleep', ['0.05'])
  }
  spawnSync('umount', [h.merged], {stdio: 'ignore'})
  // Still busy (e.g. a straggler nsenter'd process): detach it lazily.
  if (isMounted(h.merged)) spawnSync('umount', ['-l', h.merged], {stdio: 'ignore'})
  if (!isMounted(h.merged)) rmSync(h.dir, {recursive: true, force: true})
  live.delete(h)
}

/**
 * A detached shell that holds a pipe from this process: when the test process dies
 * in a way no handler sees (SIGKILL, an exception thrown by the test runner's own
 * uncaughtException handler), the pipe closes and it kills the guest and cleans up.
 */
function startGuard(h: Live): ChildProcess {
  const script = `
    cat >/dev/null
    for p in "$1:systemd" "$2:systemd-nspawn"; do
      pid=\${p%%:*}; name=\${p#*:}
      [ "$(cat /proc/$pid/comm 2>/dev/null)" = "$name" ] && kill -9 "$pid"
    done
    sleep 1
    umount "$3" 2>/dev/null || umount -l "$3" 2>/dev/null
    mountpoint -q "$3" || rm -rf "$4"
  `
  const guard = spawn('sh', ['-c', script, 'guard', String(h.pid1), String(h.nspawnPid), h.merged, h.dir], {
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: true, // its own process group: a ^C to the tests must not kill it first
  })
  guard.on('error', () => {})
  guard.unref()
  ;(guard.stdin as unknown as {unref?: () => void}).unref?.()
  return guard
}

function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

function isMounted(path: string): boolean {
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .some((l) => l.split(' ')[4] === path)
  } catch {
    return false
  }
}

/** Stops every guest this process still has running. */
export async function stopAllHosts(): Promise<void> {
  for (const h of [...live]) teardownSync(h)
}

// Imported at a test file's top level, this lands on the file's root test: every
// guest is gone when the file ends, whatever its suites did. (An `after` called
// inside a `before` hook runs right after that hook, so bootHost can't do it.)
// Not for plain scripts (bench/): it would make them print TAP.
if (process.env.NODE_TEST_CONTEXT || /\.test\.[cm]?js$/.test(process.argv[1] ?? '')) after(stopAllHosts)

let hooksInstalled = false
function installExitHooks(): void {
  if (hooksInstalled) return
  hooksInstalled = true
  // A crashed or interrupted test run must not leave guests running.
  process.on('exit', () => {
    for (const h of [...live]) teardownSync(h)
  })
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const h of [...live]) teardownSync(h)
      process.kill(process.pid, sig)
    })
  }
}

/**
 * Guests left behind by a test process that was SIGKILLed: their directory carries
 * the owner's pid; kill what they recorded, unmount, remove.
 */
function sweepStale(): void {
  const base = hostsDir()
  for (const e of readdirSync(base)) {
    const owner = Number(e.split('-')[0])
    if (!owner || pidAlive(owner)) continue
    const dir = join(base, e)
    const h: Live = {dir, merged: join(dir, 'merged')}
    try {
      const rec = JSON.parse(readFileSync(join(dir, 'pids.json'), 'utf8')) as {nspawn?: number; pid1?: number}
      // Only kill pids that still are what we started (pids get reused).
      if (rec.nspawn && comm(rec.nspawn) === 'systemd-nspawn') h.nspawnPid = rec.nspawn
      if (rec.pid1 && comm(rec.pid1) === 'systemd') h.pid1 = rec.pid1
    } catch {}
    teardownSync(h)
  }
}

function comm(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
  } catch {
    return undefined
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = []
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      const c = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim()
      if (c) out.push(...c.split(/\s+/).map(Number))
    }
  } catch {}
  return out
}

/**
 * Boots a clean guest of `flavor`. Stop it with `stop()` (e.g. in the suite's
 * `after`); any left running are stopped when the test file ends or the process exits.
 */
export async function bootHost(flavor: Flavor, opts: BootOptions = {}): Promise<Host> {
  const {root: lower} = await ensureRoot(flavor)
  installExitHooks()
  sweepStale()
  const started = Date.now()
  const dir = mkdtempSync(join(hostsDir(), `${process.pid}-${flavor}-`))
  const h: Live = {dir, merged: join(dir, 'merged')}
  for (const d of ['upper', 'work', 'merged']) mkdirSync(join(dir, d))
  live.add(h)
  let stopped = false
  let nspawnExit: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    for (const pid of [h.pid1, h.nspawnPid]) {
      if (pid) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {}
      }
    }
    // Let the event loop reap nspawn, then unmount and remove.
    if (nspawnExit) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([nspawnExit, new Promise((r) => (timer = setTimeout(r, 5000)))])
      clearTimeout(timer)
    }
    teardownSync(h)
  }

  try {
    if (opts.plainRoot) run('cp', ['-a', '--reflink=auto', `${lower}/.`, h.merged])
    else run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${dir}/upper,workdir=${dir}/work`, h.merged])
  } catch (error) {
    await stop()
    throw error
  }
  const consoleLog = (): string => {
    try {
      return readFileSync(join(dir, 'console.log'), 'utf8')
    } catch {
      return ''
    }
  }
  let current = {pid1: 0, bootMs: 0, bootState: ''}
  const guestRepo = opts.guestRepo ?? REPO_ROOT
  const node = realpathSync(process.execPath)
  const machine = `e2e-${flavor}-${randomBytes(3).toString('hex')}`
  const consolePath = join(dir, 'console.log')
  const boot = async (): Promise<void> => {
    const bootStarted = Date.now()
    const consoleFd = openSync(consolePath, 'a')
    const args = [
      '-D', h.merged,
      '-b',
      '--register=no', // no machined on the test machine
      '--keep-unit', // no systemd as PID 1 here to make a scope
      `--machine=${machine}`,
      '--private-network', // the guest's services stay off the test machine's network
      // The console goes to a file: a pipe nobody reads would block the guest.
      '--console=read-only',
      `--bind-ro=${REPO_ROOT}:${guestRepo}`,
      ...(opts.noNode ? [] : [`--bind-ro=${node}:${GUEST_NODE}`]),
      ...(opts.bindRo ?? []).map((b) => `--bind-ro=${b}`),
      ...(opts.bind ?? []).map((b) => `--bind=${b}`),
    ]
    const nspawn = spawn('systemd-nspawn', args, {
      stdio: ['ignore', consoleFd, consoleFd],
      // On a cgroup v1/hybrid machine (this one) nspawn would give the guest a hybrid
      // hierarchy: systemd 257 is deprecated there and logs cgroup attach failures.
      env: {...process.env, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: '1'},
    })
    closeSync(consoleFd)
    h.nspawnPid = nspawn.pid
    h.pid1 = undefined
    let exited: string | undefined
    nspawnExit = new Promise((resolve) =>
      nspawn.on('exit', (code, signal) => {
        exited = signal ?? `exit ${code}`
        resolve()
      }),
    )
    const fail = async (why: string): Promise<never> => {
      const tail = consoleLog().split('\n').slice(-40).join('\n')
      await stop()
      throw new Error(`${flavor} guest: ${why}\n--- console (tail) ---\n${tail}`)
    }
    const timeout = opts.bootTimeout ?? 60_000
    const deadline = bootStarted + timeout

    // The guest's systemd is a child of nspawn (found by its comm).
    while (!h.pid1) {
      if (exited) return fail(`systemd-nspawn ended during boot (${exited})`)
      if (Date.now() > deadline) return fail('no guest PID 1 appeared')
      h.pid1 = childrenOf(nspawn.pid!).find((p) => comm(p) === 'systemd')
      if (!h.pid1) await new Promise((r) => setTimeout(r, 50))
    }
    writeFileSync(join(dir, 'pids.json'), JSON.stringify({nspawn: nspawn.pid, pid1: h.pid1}))
    h.guard = startGuard(h)

    // is-system-running --wait fails until the guest's manager is reachable; retry.
    let bootState = ''
    const exec = (cmd: string, cmdArgs: string[] = [], o: ExecOptions = {}): Promise<ExecResult> => execIn(h.pid1 as number, cmd, cmdArgs, o)
    for (;;) {
      if (exited) return fail(`systemd-nspawn ended during boot (${exited})`)
      const left = deadline - Date.now()
      if (left <= 0) return fail(`not booted after ${timeout} ms (last state: ${bootState || 'unknown'})`)
      const r = await exec('systemctl', ['is-system-running', '--wait'], {timeout: left})
      bootState = r.stdout.trim()
      if (bootState === 'running' || bootState === 'degraded') break
      await new Promise((r) => setTimeout(r, 100))
    }
    current = {pid1: h.pid1, bootMs: Date.now() - bootStarted, bootState}
  }

  await boot()
  const exec = (cmd: string, cmdArgs: string[] = [], o: ExecOptions = {}): Promise<ExecResult> => execIn(current.pid1, cmd, cmdArgs, o)

  const reboot = async (): Promise<void> => {
    await exec('systemctl', ['poweroff', '--no-block']).catch(() => undefined)
    let timer: NodeJS.Timeout | undefined
    const ended = await Promise.race([nspawnExit?.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 30_000)))])
    clearTimeout(timer)
    if (!ended) {
      for (const pid of [h.pid1, h.nspawnPid]) {
        try {
          if (pid) process.kill(pid, 'SIGKILL')
        } catch {}
      }
      await nspawnExit
    }
    try {
      h.guard?.kill('SIGKILL')
    } catch {}
    // The same upper dir, a fresh mount: the guest's disk is kept, nothing else (a plain root is its own disk).
    if (!opts.plainRoot) {
      spawnSync('umount', [h.merged], {stdio: 'ignore'})
      if (isMounted(h.merged)) spawnSync('umount', ['-l', h.merged], {stdio: 'ignore'})
      rmSync(join(dir, 'work'), {recursive: true, force: true})
      mkdirSync(join(dir, 'work'))
      run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${dir}/upper,workdir=${dir}/work`, h.merged])
    }
    await boot()
    host.pid1 = current.pid1
    host.bootMs = current.bootMs
    host.bootState = current.bootState
  }

  const host: Host = {
    flavor,
    root: h.merged,
    pid1: current.pid1,
    bootMs: Date.now() - started,
    bootState: current.bootState,
    reboot,
    exec,
    sh: (script, o) => exec('/bin/sh', ['-c', script], o),
    async execOk(cmd, cmdArgs = [], o = {}) {
      const r = await exec(cmd, cmdArgs, o)
      if (r.exitCode !== 0) {
        throw new Error(
          `${flavor}: ${[cmd, ...cmdArgs].join(' ')} exited ${r.exitCode}${r.signal ? ` (${r.signal})` : ''}\n` +
            `stdout: ${r.stdout}\nstderr: ${r.stderr}`,
        )
      }
      return r
    },
    cli: (cliArgs, o) => exec(GUEST_NODE, [`${guestRepo}/bin/run.js`, ...cliArgs], o),
    consoleLog,
    stop,
  }
  return host
}

/** Runs a command in all of the guest's namespaces, with a clean environment. */
function execIn(pid1: number, cmd: string, args: string[], o: ExecOptions): Promise<ExecResult> {
  const asUser = o.user !== undefined && o.user !== 0 && o.user !== 'root'
  const home = asUser ? (o.user === TESTER.name || o.user === TESTER.uid ? `/home/${TESTER.name}` : '/') : '/root'
  const user = asUser ? String(o.user) : 'root'
  const env: Record<string, string> = {
    PATH: GUEST_PATH,
    HOME: home,
    USER: user,
    LOGNAME: user,
    LANG: 'C.UTF-8',
    TERM: 'dumb',
    // The CLI must not show spinners or colours in captured output.
    NO_COLOR: '1',
    SYSTEMD_PAGER: '',
    SYSTEMD_COLORS: '0',
    ...o.env,
  }
  const inner = [
    'env',
    '-i',
    // nsenter's --wd=DIR resolves DIR on the test machine, so change directory here.
    `--chdir=${o.cwd ?? home}`,
    ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
    ...(asUser
      ? // setpriv (util-linux in the guest): no PAM session, just the credentials.
        ['setpriv', `--reuid=${o.user}`, `--regid=${o.user}`, '--init-groups', '--']
      : []),
    cmd,
    ...args,
  ]
  const nsArgs = ['-t', String(pid1), '-a', ...inner]
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', nsArgs, {stdio: ['pipe', 'pipe', 'pipe']})
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (b: Buffer) => out.push(b))
    child.stderr.on('data', (b: Buffer) => err.push(b))
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, o.timeout ?? 60_000)
    child.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const res: ExecResult = {
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        exitCode: code ?? 128 + 9,
      }
      if (signal) res.signal = timedOut ? `${signal} (timeout after ${o.timeout ?? 60_000} ms)` : signal
      resolve(res)
    })
    child.stdin.on('error', () => {}) // the command may exit without reading stdin
    child.stdin.end(o.input ?? '')
  })
}

/** The e2e fixture trees (test/fixtures/e2e/NAME) as seen from the guests. */
export function fixturePath(name: 'good' | 'dies' | 'good-v2', guestRepo = REPO_ROOT): string {
  return `${guestRepo}/test/fixtures/e2e/${name}`
}

/**
 * Copies a fixture tree into the guest (default /var/tmp/fixtures/NAME) and returns
 * the guest path. The copy is root-owned and on the guest's own filesystem, unlike
 * the read-only bind mount of the checkout (owned by whoever cloned it, and a
 * different mount, so hard links from it fail with EXDEV).
 */
export async function copyFixture(host: Host, name: 'good' | 'dies' | 'good-v2', dest = `/var/tmp/fixtures/${name}`): Promise<string> {
  await host.execOk('sh', ['-ec', 'rm -rf "$2"; mkdir -p "$(dirname "$2")"; cp -r "$1" "$2"', 'sh', fixturePath(name), dest])
  return dest
}

/** Whether this machine can run the e2e tests at all (root + tools), with a reason. */
export function canRunE2e(): {ok: true} | {ok: false; reason: string} {
  if (process.getuid?.() !== 0) return {ok: false, reason: 'needs root'}
  for (const tool of ['debootstrap', 'systemd-nspawn', 'nsenter']) {
    const r = spawnSync('sh', ['-c', `command -v ${tool}`], {stdio: 'ignore'})
    if (r.status !== 0) return {ok: false, reason: `${tool} not installed (apt-get install debootstrap systemd-container)`}
  }
  return {ok: true}
}
