/**
 * Whether this machine runs systemd as its init (sd_booted(): /run/systemd/system
 * exists), and what PID 1 is otherwise: a container started without systemd, a
 * chroot, a WSL or CI machine. systemd-sysext may be installed there and even print
 * its version, but merging, reloading units and activating services need the manager.
 */
import {existsSync, readFileSync} from 'node:fs'

export interface InitSystem {
  booted: boolean
  /** PID 1's command name (e.g. 'systemd', 'bash', 'tini'), when readable. */
  pid1?: string
}

export function initSystem(): InitSystem {
  let pid1: string | undefined
  try {
    pid1 = readFileSync('/proc/1/comm', 'utf8').trim()
  } catch {}
  return {booted: existsSync('/run/systemd/system'), pid1}
}
