/** What /proc says about processes and this boot: who answers a bus name, and since when. Reads only. */
import {readFileSync} from 'node:fs'

/** Seconds since boot (the clock /proc/PID/stat start times count in). */
export function uptimeS(): number {
  return Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0])
}

/** Start of a process in seconds since boot (USER_HZ is 100 on Linux), or undefined when it is gone. */
export function processStartS(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]) / 100
  } catch {
    return undefined
  }
}

/** The systemd unit (service or scope) whose cgroup holds the process, from /proc/PID/cgroup. */
export function processUnit(pid: number): string | undefined {
  try {
    const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')
    const path = (lines.find((l) => l.startsWith('0::')) ?? lines.find((l) => l.includes(':name=systemd:')) ?? '').split(':').slice(2).join(':')
    return path.split('/').reverse().find((p) => /\.(service|scope)$/.test(p))
  } catch {
    return undefined
  }
}

/** This boot's id (nspawn gives each container boot its own). */
export function bootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
  } catch {
    return undefined
  }
}
