/**
 * Extension-release files: where they live, systemd's decision whether a host
 * accepts one (src/basic/os-util.c, extension_release_validate), and writing one.
 */
import {type ReleaseFields} from '../formats/os-release.js'

export const RELEASE_DIR = 'usr/lib/extension-release.d'
export const RELEASE_PREFIX = 'extension-release.'

export function releasePath(name: string): string {
  return `${RELEASE_DIR}/${RELEASE_PREFIX}${name}`
}

/** What systemd-sysext needs to know about the host to judge a release file. */
export interface HostIdentity {
  osRelease: ReleaseFields
  /** Why systemd could not parse the host's os-release (then osRelease is empty). */
  osReleaseError?: string
  architecture: string
  /** Installed systemd version, when known (ID_LIKE matching: see ID_LIKE_SINCE). */
  systemdVersion?: number
}

export type ReleaseVerdict =
  | {accepted: true; via: 'any' | 'id' | 'id-like' | 'rolling' | 'sysext-level' | 'version-id'}
  | {accepted: false; rule: string; key: string; message: string; hint: string}

/**
 * The first systemd version known to match an extension's ID against the host's
 * ID_LIKE. NEWS names 258, but the differential e2e suite sees 257 (Debian 13)
 * accept it and 252 (Debian 12) refuse it; versions 253-256 are untested and
 * treated as not honouring it (refusing is the safe side of an unknown).
 */
export const ID_LIKE_SINCE = 257

function refuse(rule: string, key: string, message: string, hint: string): ReleaseVerdict {
  return {accepted: false, rule, key, message, hint}
}

/**
 * The same checks, in the same order, as systemd's extension_release_validate()
 * for a system extension (SYSEXT_SCOPE / SYSEXT_LEVEL). The first refusal wins,
 * as it does in systemd.
 */
export function judgeRelease(name: string, release: ReleaseFields, host: HostIdentity): ReleaseVerdict {
  if ((host.osRelease.ID ?? '') === '')
    return refuse('release-host-id-missing', 'ID',
      `The host's os-release ${host.osReleaseError ? `cannot be parsed (${host.osReleaseError})` : 'has no ID='}; systemd-sysext then refuses to merge any extension, '${name}' included.`,
      'Fix the host: /etc/os-release (or /usr/lib/os-release) must set ID=, e.g. ID=debian.')
  const scope = (release.SYSEXT_SCOPE ?? 'system portable').split(/\s+/).filter(Boolean)
  if (!scope.includes('system'))
    return refuse('release-scope', 'SYSEXT_SCOPE',
      `SYSEXT_SCOPE=${release.SYSEXT_SCOPE} does not include 'system'; systemd-sysext ignores extension '${name}' on a booted system.`,
      "Add 'system' to SYSEXT_SCOPE, or remove the key (default: 'system portable').")

  const arch = release.ARCHITECTURE
  if (arch !== undefined && arch !== '' && arch !== '_any' && arch !== host.architecture)
    return refuse('release-architecture', 'ARCHITECTURE',
      `ARCHITECTURE=${arch} does not match the host architecture '${host.architecture}'; systemd-sysext ignores extension '${name}'.`,
      `Set ARCHITECTURE=${host.architecture} (systemd's name), or ARCHITECTURE=_any if the tree holds no binaries.`)

  const id = release.ID ?? ''
  const hostId = host.osRelease.ID ?? ''
  if (id === '')
    return refuse('release-id-missing', 'ID',
      `ID= is missing or empty; systemd-sysext ignores extension '${name}'.`,
      `Set ID=_any for an extension meant for any distribution, or ID=${hostId || 'the host ID'}.`)
  if (id === '_any') return {accepted: true, via: 'any'}

  let via: 'id' | 'id-like' = 'id'
  if (id !== hostId) {
    const idLike = (host.osRelease.ID_LIKE ?? '').split(/\s+/).filter(Boolean)
    if (!idLike.includes(id))
      return refuse('release-id-mismatch', 'ID',
        `ID=${id} does not match the host ID=${hostId}; systemd-sysext ignores extension '${name}'.`,
        `Rebuild with ID=_any, or run 'sysext-helper release --id _any'.`)
    if (host.systemdVersion === undefined || host.systemdVersion < ID_LIKE_SINCE)
      return refuse('release-id-like', 'ID',
        `ID=${id} matches only the host's ID_LIKE, which systemd-sysext honours from version ${ID_LIKE_SINCE}; this host has ${host.systemdVersion === undefined ? 'an unknown version' : `systemd ${host.systemdVersion}`}.`,
        `Set ID=${hostId} or ID=_any.`)
    via = 'id-like'
  }

  const hostVersion = host.osRelease.VERSION_ID ?? ''
  const hostLevel = host.osRelease.SYSEXT_LEVEL ?? ''
  const level = release.SYSEXT_LEVEL ?? ''
  if (hostLevel !== '' && level !== '') {
    if (level !== hostLevel)
      return refuse('release-sysext-level-mismatch', 'SYSEXT_LEVEL',
        `SYSEXT_LEVEL=${level} does not match the host SYSEXT_LEVEL=${hostLevel}; systemd-sysext ignores extension '${name}'.`,
        `Rebuild for SYSEXT_LEVEL=${hostLevel}, or use ID=_any.`)
    return {accepted: true, via: 'sysext-level'}
  }
  if (hostVersion !== '') {
    const version = release.VERSION_ID ?? ''
    if (version === '')
      return refuse('release-version-id-missing', 'VERSION_ID',
        `VERSION_ID= is missing but the host (${hostId} ${hostVersion}) requires it to match${hostLevel === '' ? '' : ' (or a matching SYSEXT_LEVEL)'}; systemd-sysext ignores extension '${name}'.`,
        hostLevel === '' ? `Set VERSION_ID=${hostVersion}, or use ID=_any.` : `Set SYSEXT_LEVEL=${hostLevel} or VERSION_ID=${hostVersion}, or use ID=_any.`)
    if (version !== hostVersion)
      return refuse('release-version-id-mismatch', 'VERSION_ID',
        `VERSION_ID=${version} does not match the host VERSION_ID=${hostVersion}; systemd-sysext ignores extension '${name}'.`,
        `Rebuild for VERSION_ID=${hostVersion}, or use ID=_any.`)
    return {accepted: true, via: 'version-id'}
  }
  return {accepted: true, via: via === 'id-like' ? 'id-like' : 'rolling'}
}
