/**
 * The host an extension is judged against: its os-release, its architecture and
 * a view of its files. Reading happens in loadHost(); the returned Host answers
 * lookups from its own cache so rules can call it freely.
 */
import {lstatSync, readFileSync, readdirSync, readlinkSync, statSync} from 'node:fs'
import {posix} from 'node:path'
import {HelperError} from '../errors.js'
import {type ElfInfo, parseElfFile} from '../formats/elf.js'
import {type ReleaseFields, parseRelease} from '../formats/os-release.js'
import {parseAccounts} from '../formats/sysusers.js'
import type {EntryType, Tree} from './tree.js'

export interface HostFile {
  type: EntryType
  mode: number
  uid: number
}

export interface Host {
  /** '/' for the running host, else the --host-root directory. */
  root: string
  /** The os-release file that was read, as a path inside root. */
  osReleasePath: string
  osRelease: ReleaseFields
  /** Why systemd could not parse the os-release file (then osRelease is empty). */
  osReleaseError?: string
  /** systemd's architecture name (x86-64, arm64, ...). */
  architecture: string
  /** systemd version installed in root (from libsystemd-shared-NNN.so), when found. */
  systemdVersion?: number
  /** Directories the dynamic linker searches, as absolute paths inside root. */
  libraryDirs: string[]
  /** lstat of an absolute path inside root (symlinks not followed). */
  lstat(path: string): HostFile | undefined
  readlink(path: string): string | undefined
  /** Names in a directory inside root (sorted), or undefined when it is not one. */
  readdir(path: string): string[] | undefined
  /**
   * ELF headers (dynamic section, symbol versions) of a regular file inside root,
   * parsed once and cached; undefined when it is not a readable regular file.
   * `path` must be final (symlinks already followed, e.g. by resolveMerged).
   */
  elf(path: string): ElfInfo | undefined
  /** A regular file's text (at most 1 MiB) inside root, or undefined. */
  readText(path: string): string | undefined
  /** Accounts in root's /etc/passwd and /etc/group (name -> id), read once. */
  accounts(): {users: Map<string, number>; groups: Map<string, number>}
  /**
   * The system bus implementation, judged from files: dbus-broker when
   * /usr/bin/dbus-broker exists and dbus.service is an alias of dbus-broker.service,
   * dbus-daemon when /usr/bin/dbus-daemon exists, else unknown.
   */
  bus: 'dbus-broker' | 'dbus-daemon' | 'unknown'
  /**
   * The merged extension that provides `path` (absolute, under /usr or /opt), when
   * the file seen on the host comes from an extension rather than from the OS.
   */
  extensionProviding(path: string): string | undefined
}

/** systemd-sysext's search directories, in precedence order. */
const EXTENSION_DIRS = ['/etc/extensions', '/run/extensions', '/var/lib/extensions']

/** Image directories of the extensions merged into root's /usr and /opt right now. */
function mergedImages(root: string): Array<{name: string; dir: string}> {
  const names = new Set<string>()
  for (const hierarchy of ['usr', 'opt']) {
    try {
      for (const line of readFileSync(posix.join(root, hierarchy, '.systemd-sysext/extensions'), 'utf8').split('\n')) if (line.trim()) names.add(line.trim())
    } catch {
      // not merged
    }
  }
  const images: Array<{name: string; dir: string}> = []
  for (const name of names) {
    for (const dir of EXTENSION_DIRS) {
      const candidate = posix.join(root, dir, name)
      try {
        if (statSync(candidate).isDirectory()) {
          images.push({name, dir: candidate})
          break
        }
      } catch {
        // not in this directory
      }
    }
  }
  return images
}

/** Node's process.arch -> systemd's architecture names (src/basic/architecture.c). */
const NODE_TO_SYSTEMD: Record<string, string> = {
  x64: 'x86-64', ia32: 'x86', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64-le', ppc: 'ppc',
  s390x: 's390x', s390: 's390', riscv64: 'riscv64', loong64: 'loongarch64', mips: 'mips', mipsel: 'mips-le',
}

/** Every architecture name systemd accepts in ARCHITECTURE=. */
export const SYSTEMD_ARCHITECTURES = [
  'alpha', 'arc', 'arc-be', 'arm', 'arm-be', 'arm64', 'arm64-be', 'cris', 'ia64', 'loongarch64',
  'm68k', 'mips', 'mips-le', 'mips64', 'mips64-le', 'nios2', 'parisc', 'parisc64', 'ppc', 'ppc-le',
  'ppc64', 'ppc64-le', 'riscv32', 'riscv64', 's390', 's390x', 'sh', 'sh64', 'sparc', 'sparc64',
  'tilegx', 'x86', 'x86-64',
]

export function systemdArchitecture(nodeArch: string = process.arch): string {
  return NODE_TO_SYSTEMD[nodeArch] ?? nodeArch
}

/** A path inside root with its symlinks followed inside root (as chase() with a root does). */
function chaseInRoot(root: string, path: string): string {
  let current = path
  for (let hops = 0; hops < 32; hops++) {
    let target: string
    try {
      if (!lstatSync(posix.join(root, current)).isSymbolicLink()) break
      target = readlinkSync(posix.join(root, current))
    } catch {
      break
    }
    current = target.startsWith('/') ? target : posix.join(posix.dirname(current), target)
    current = posix.resolve('/', current)
  }
  return posix.join(root, current)
}

/**
 * The host's os-release as systemd-sysext reads it: /etc/os-release, else (only when
 * that does not exist) /usr/lib/os-release, in the env-file grammar. A file systemd
 * cannot parse yields no fields (then no ID, and sysext merges nothing).
 */
function readOsRelease(root: string, systemdVersion: number | undefined): {path: string; fields: ReleaseFields; error?: string} {
  for (const path of ['/etc/os-release', '/usr/lib/os-release']) {
    let bytes: Buffer
    try {
      bytes = readFileSync(chaseInRoot(root, path))
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue
      return {path, fields: {}, error: (error as NodeJS.ErrnoException).code ?? String(error)}
    }
    const parsed = parseRelease(bytes, {kind: 'os-release', systemdVersion})
    return {path, fields: parsed.fields, error: parsed.error}
  }
  throw new HelperError('HOST_NO_OS_RELEASE', `No os-release found in '${root}' (looked for /etc/os-release and /usr/lib/os-release).`, {
    hint: root === '/' ? 'This host has no os-release; systemd-sysext cannot match extensions on it.' : 'Pass --host-root the root directory of an installed system.',
  })
}

/** The architecture of the root's /bin/sh (so --host-root works across architectures). */
function rootArchitecture(root: string): string {
  if (root === '/') return systemdArchitecture()
  for (const candidate of ['usr/bin/sh', 'bin/sh', 'usr/bin/bash', 'usr/lib/systemd/systemd']) {
    try {
      let path = posix.join(root, candidate)
      for (let hops = 0; hops < 8 && lstatSync(path).isSymbolicLink(); hops++) {
        const target = readlinkSync(path)
        path = target.startsWith('/') ? posix.join(root, target) : posix.join(posix.dirname(path), target)
      }
      const info = parseElfFile(path)
      if (info.architecture) return info.architecture
    } catch {
      // not there: try the next
    }
  }
  return systemdArchitecture()
}

/** ld.so.conf (with include globs of the form DIR/*.conf) plus the built-in directories. */
function libraryDirs(root: string, lstat: Host['lstat']): string[] {
  const dirs: string[] = []
  const readConf = (path: string, depth: number): void => {
    let text: string
    try {
      text = readFileSync(posix.join(root, path), 'utf8')
    } catch {
      return
    }
    for (const raw of text.split('\n')) {
      const line = raw.replace(/#.*/, '').trim()
      if (line === '') continue
      const include = /^include\s+(.+)$/.exec(line)
      if (include && depth < 4) {
        for (const pattern of include[1].split(/\s+/)) {
          const abs = pattern.startsWith('/') ? pattern : posix.join(posix.dirname(path), pattern)
          const dir = posix.dirname(abs)
          const re = new RegExp(`^${posix.basename(abs).replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`)
          let names: string[] = []
          try {
            names = readdirSync(posix.join(root, dir)).filter((n) => re.test(n)).sort()
          } catch {
            // no such directory
          }
          for (const name of names) readConf(posix.join(dir, name), depth + 1)
        }
      } else if (line.startsWith('/')) {
        dirs.push(line)
      }
    }
  }
  readConf('/etc/ld.so.conf', 0)
  dirs.push('/lib64', '/usr/lib64', '/lib', '/usr/lib')
  return [...new Set(dirs)].filter((dir) => lstat(dir) !== undefined)
}

/** systemd ships libsystemd-shared-NNN.so; its name gives the version without running anything. */
function installedSystemdVersion(root: string): number | undefined {
  const dirs = ['usr/lib/systemd', 'lib/systemd']
  try {
    for (const name of readdirSync(posix.join(root, 'usr/lib')).filter((n) => n.includes('-linux-'))) dirs.push(`usr/lib/${name}/systemd`)
  } catch {
    // no /usr/lib
  }
  for (const dir of dirs) {
    let names: string[]
    try {
      names = readdirSync(posix.join(root, dir))
    } catch {
      continue
    }
    for (const name of names) {
      const match = /^libsystemd-shared-(\d+)/.exec(name)
      if (match) return Number(match[1])
    }
  }
  return undefined
}

export function loadHost(root = '/'): Host {
  const resolvedRoot = posix.resolve(root)
  let st
  try {
    st = lstatSync(resolvedRoot)
  } catch {
    throw new HelperError('HOST_ROOT_NOT_FOUND', `Host root '${root}' does not exist.`, { hint: 'Pass --host-root the root directory of an installed system.'})
  }
  if (!st.isDirectory())
    throw new HelperError('HOST_ROOT_NOT_DIRECTORY', `Host root '${root}' is not a directory.`, { hint: 'Pass --host-root the root directory of an installed system.'})
  const systemdVersion = installedSystemdVersion(resolvedRoot)
  const {path, fields, error: osReleaseError} = readOsRelease(resolvedRoot, systemdVersion)
  const statCache = new Map<string, HostFile | undefined>()
  const lstat = (p: string): HostFile | undefined => {
    if (statCache.has(p)) return statCache.get(p)
    let file: HostFile | undefined
    try {
      const s = lstatSync(posix.join(resolvedRoot, p))
      const type: EntryType = s.isSymbolicLink() ? 'symlink' : s.isFile() ? 'file' : s.isDirectory() ? 'dir' : 'other'
      file = {type, mode: s.mode, uid: s.uid}
    } catch {
      file = undefined
    }
    statCache.set(p, file)
    return file
  }
  const readlink = (p: string): string | undefined => {
    try {
      return readlinkSync(posix.join(resolvedRoot, p))
    } catch {
      return undefined
    }
  }
  const readdir = (p: string): string[] | undefined => {
    try {
      return readdirSync(posix.join(resolvedRoot, p)).sort()
    } catch {
      return undefined
    }
  }
  const readText = (p: string): string | undefined => {
    try {
      const abs = posix.join(resolvedRoot, p)
      const s = lstatSync(abs)
      return s.isFile() && s.size <= 1024 * 1024 ? readFileSync(abs, 'utf8') : undefined
    } catch {
      return undefined
    }
  }
  const elfCache = new Map<string, ElfInfo | undefined>()
  const elf = (p: string): ElfInfo | undefined => {
    if (!elfCache.has(p)) {
      let info: ElfInfo | undefined
      try {
        if (lstat(p)?.type === 'file') info = parseElfFile(posix.join(resolvedRoot, p))
      } catch {
        info = undefined
      }
      elfCache.set(p, info)
    }
    return elfCache.get(p)
  }
  let accountsCache: ReturnType<Host['accounts']> | undefined
  const accounts = (): ReturnType<Host['accounts']> =>
    (accountsCache ??= {users: parseAccounts(readText('/etc/passwd') ?? ''), groups: parseAccounts(readText('/etc/group') ?? '')})
  const images = mergedImages(resolvedRoot)
  const extensionProviding = (p: string): string | undefined =>
    images.find((image) => {
      try {
        lstatSync(posix.join(image.dir, p))
        return true
      } catch {
        return false
      }
    })?.name
  return {
    root: resolvedRoot,
    osReleasePath: path,
    extensionProviding,
    osRelease: fields,
    architecture: rootArchitecture(resolvedRoot),
    systemdVersion,
    osReleaseError,
    libraryDirs: libraryDirs(resolvedRoot, lstat),
    lstat,
    readlink,
    readdir,
    readText,
    elf,
    accounts,
    bus: busImplementation(readlink, lstat),
  }
}

/** See Host.bus. dbus.service in /etc (enabled alias) wins over /usr/lib, as in systemd. */
function busImplementation(readlink: Host['readlink'], lstat: Host['lstat']): Host['bus'] {
  const broker = ['/usr/bin/dbus-broker', '/bin/dbus-broker'].some((p) => lstat(p) !== undefined)
  if (broker) {
    for (const dir of ['/etc/systemd/system', '/usr/lib/systemd/system', '/lib/systemd/system']) {
      const target = readlink(`${dir}/dbus.service`)
      if (target !== undefined) return posix.basename(target) === 'dbus-broker.service' ? 'dbus-broker' : 'dbus-daemon'
      if (lstat(`${dir}/dbus.service`) !== undefined) break
    }
  }
  if (['/usr/bin/dbus-daemon', '/bin/dbus-daemon'].some((p) => lstat(p) !== undefined)) return 'dbus-daemon'
  return broker ? 'dbus-broker' : 'unknown'
}

export interface Resolved {
  /** Final absolute path after following symlinks. */
  path: string
  type: EntryType
  mode: number
  /** Which layer provided the final file. */
  source: 'tree' | 'host'
}

const MERGED_TOP = new Set(['usr', 'opt'])

/**
 * Resolves an absolute path as it will look on the host once the extension is
 * merged: /usr and /opt are the tree layered over the host, everything else is
 * the host. Symlinks are followed (absolute ones from the merged root).
 * Returns undefined when the path does not exist or a loop is found.
 */
export function resolveMerged(tree: Tree | undefined, host: Host, absPath: string): Resolved | undefined {
  let pending = absPath.split('/').filter((c) => c !== '' && c !== '.')
  let done: string[] = []
  let hops = 0
  while (pending.length > 0) {
    const component = pending.shift() as string
    if (component === '..') {
      done.pop()
      continue
    }
    const candidate = [...done, component]
    const rel = candidate.join('/')
    const fromTree = tree && MERGED_TOP.has(candidate[0]) ? tree.entries.get(rel) : undefined
    const fromHost = fromTree && fromTree.type !== 'dir' ? undefined : host.lstat(`/${rel}`)
    const type = fromTree?.type ?? fromHost?.type
    if (type === undefined) return undefined
    if (type === 'symlink') {
      if (++hops > 40) return undefined
      const target = fromTree ? (fromTree.linkTarget as string) : host.readlink(`/${rel}`)
      if (target === undefined) return undefined
      const parts = target.split('/').filter((c) => c !== '' && c !== '.')
      if (target.startsWith('/')) done = []
      pending = [...parts, ...pending]
      continue
    }
    if (pending.length > 0 && type !== 'dir') return undefined
    done = candidate
    if (pending.length === 0) {
      const source = fromTree ? 'tree' : 'host'
      const mode = fromTree ? fromTree.mode : (fromHost as HostFile).mode
      return {path: `/${rel}`, type, mode, source}
    }
  }
  return {path: '/', type: 'dir', mode: 0o40755, source: 'host'}
}
