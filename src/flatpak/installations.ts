/**
 * Flatpak system installations and app lookup. Read-only: an app's deploy is
 * an ostree checkout that must never be written to.
 */
import {existsSync, readFileSync, readdirSync, realpathSync, statSync} from 'node:fs'
import {homedir} from 'node:os'
import {join} from 'node:path'
import {HelperError} from '../errors.js'
import {parseKeyFile} from '../formats/keyfile.js'

export interface Installation {
  /** 'default' for the main system installation, else the [Installation "ID"] id. */
  id: string
  path: string
  displayName?: string
  /** The installations.d file that declared it (absent for the default one). */
  configFile?: string
}

export interface FlatpakEnv {
  /** $FLATPAK_SYSTEM_DIR, else /var/lib/flatpak. */
  systemDir?: string
  /** $FLATPAK_CONFIG_DIR, else /etc/flatpak. */
  configDir?: string
  /** $FLATPAK_USER_DIR, else ~/.local/share/flatpak (only to say an app is user-installed). */
  userDir?: string
}

export function flatpakEnvFromProcess(env: NodeJS.ProcessEnv = process.env): Required<FlatpakEnv> {
  return {
    systemDir: env.FLATPAK_SYSTEM_DIR || '/var/lib/flatpak',
    configDir: env.FLATPAK_CONFIG_DIR || '/etc/flatpak',
    userDir: env.FLATPAK_USER_DIR || join(env.HOME || homedir(), '.local/share/flatpak'),
  }
}

/** The default system installation plus every [Installation "ID"] in installations.d/*.conf. */
export function systemInstallations(env: FlatpakEnv = {}): Installation[] {
  const {systemDir, configDir} = {...flatpakEnvFromProcess(), ...env}
  const found: Installation[] = [{id: 'default', path: systemDir}]
  const dir = join(configDir, 'installations.d')
  let names: string[]
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.conf')).sort()
  } catch {
    return found
  }
  for (const name of names) {
    const file = join(dir, name)
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      continue
    }
    for (const group of parseKeyFile(text).groups) {
      const match = /^Installation "(.+)"$/.exec(group.name)
      const path = group.entries.get('Path')?.value
      if (!match || !path) continue
      found.push({id: match[1], path, displayName: group.entries.get('DisplayName')?.value, configFile: file})
    }
  }
  return found
}

const APP_ID = /^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*){2,}$/

export function looksLikeAppId(value: string): boolean {
  return !value.includes('/') && APP_ID.test(value)
}

export interface AppDeploy {
  appId: string
  installation: Installation
  /** BASE/app/ID/current/active/files: the app's /app. */
  files: string
  /** The resolved deploy directory (…/ARCH/BRANCH/<checksum>); changes on update. */
  deployDir: string
  /** The ostree commit of the active deploy (its directory name). */
  commit: string
  /** files/lib/extensions: the extension tree, when the app ships one. */
  extensions: string
  /** The remote it was installed from, when known. */
  origin?: string
}

function isSameDir(a: string, b: string): boolean {
  try {
    return realpathSync(a) === realpathSync(b)
  } catch {
    return a === b
  }
}

/** The active deploy of `appId` in `installation`, or undefined when it is not installed there. */
export function deployOf(installation: Installation, appId: string): AppDeploy | undefined {
  const active = join(installation.path, 'app', appId, 'current', 'active')
  const files = join(active, 'files')
  try {
    const deployDir = realpathSync(active)
    if (!statSync(files).isDirectory()) return undefined
    return {appId, installation, files, deployDir, commit: deployDir.split('/').pop() as string, extensions: join(files, 'lib', 'extensions'), origin: originOf(deployDir)}
  } catch {
    return undefined
  }
}

/**
 * The remote an app was installed from. The deploy file is a GVariant
 * (ssasta{sv}) whose first member, the origin, is a NUL-terminated string at offset 0.
 */
function originOf(deployDir: string): string | undefined {
  try {
    const data = readFileSync(join(deployDir, 'deploy'))
    const end = data.indexOf(0)
    return end > 0 ? data.subarray(0, end).toString('utf8') : undefined
  } catch {
    return undefined
  }
}

/** Every app deployed in an installation (sorted by id). */
export function appsIn(installation: Installation): AppDeploy[] {
  let ids: string[]
  try {
    ids = readdirSync(join(installation.path, 'app')).sort()
  } catch {
    return []
  }
  return ids.map((id) => deployOf(installation, id)).filter((d): d is AppDeploy => d !== undefined)
}

/**
 * Finds an app in the system installations (or only in `installationPath`).
 * Refuses user installations: system extensions come from system installations only.
 */
export function findApp(appId: string, options: FlatpakEnv & {installationPath?: string} = {}): AppDeploy {
  const env = {...flatpakEnvFromProcess(), ...options}
  const all = systemInstallations(env)
  let searched = all
  if (options.installationPath !== undefined) {
    const chosen = all.find((i) => isSameDir(i.path, options.installationPath as string))
    if (!chosen) {
      const user = isSameDir(options.installationPath, env.userDir)
      throw new HelperError(user ? 'FLATPAK_USER_INSTALLATION' : 'FLATPAK_UNKNOWN_INSTALLATION',
        user
          ? `'${options.installationPath}' is a per-user Flatpak installation; system extensions come from system installations only.`
          : `'${options.installationPath}' is not a system Flatpak installation (known: ${all.map((i) => i.path).join(', ')}).`,
        {hint: user ? 'Install the app system-wide: flatpak install --system APP.' : `Declare it in ${env.configDir}/installations.d/, or pass one of the known paths.`})
    }
    searched = [chosen]
  }
  for (const installation of searched) {
    const deploy = deployOf(installation, appId)
    if (deploy) return deploy
  }
  if (existsSync(join(env.userDir, 'app', appId)))
    throw new HelperError('FLATPAK_USER_INSTALLATION',
      `${appId} is installed only in the per-user installation ${env.userDir}; system extensions come from system installations only.`,
      {exit: 1, hint: `Install it system-wide: flatpak install --system ${appId}.`})
  throw new HelperError('FLATPAK_APP_NOT_INSTALLED',
    `${appId} is not installed in any system Flatpak installation (searched ${searched.map((i) => i.path).join(', ')}).`,
    {exit: 1, hint: `Install it with 'flatpak install --system ${appId}', or pass the extension tree's path instead.`})
}
