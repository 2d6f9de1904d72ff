import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {type ApplyResult, type PackageManagerStatus, REMOVED, type ReloadResult, applyPackageManagers, packageManagerStatus, reloadAfterPackageManager, writeConfigSwitch} from '../lifecycle/index.js'

export default class PackageManagers extends BaseCommand {
  static summary = "Show, set up or remove what keeps the host's package manager working while extensions are merged."
  static description = `systemd >= 256 (with /usr not on overlayfs): every merge keeps /usr writable (--mutable=auto, the symlink /var/lib/extensions.mutable/usr -> /usr, and a drop-in for systemd-sysext.service). Otherwise: hooks for apt, dnf5, dnf4 and pacman (those present) that unmerge before the package manager runs and merge again after it. self-install and install set this up; --disable removes it and records ENABLED=no in /etc/sysext-helper/package-managers.conf so they leave it off; --enable turns it back on. Exit 1 when --reload finds a service that does not answer.`
  static examples = ['<%= config.bin %> package-managers', '<%= config.bin %> package-managers --disable', '<%= config.bin %> package-managers --enable']
  static flags = {
    enable: Flags.boolean({description: 'Set up the mechanism for this host (and record ENABLED=yes)', exclusive: ['disable', 'reload']}),
    disable: Flags.boolean({description: 'Remove every file it wrote (and record ENABLED=no)', exclusive: ['enable', 'reload']}),
    reload: Flags.boolean({hidden: true, description: "Run by the package-manager hook after it merged again: reload systemd, polkit and the bus, ping the managed services", exclusive: ['enable', 'disable']}),
  }

  async run(): Promise<PackageManagerStatus | ApplyResult | ReloadResult> {
    const {flags} = await this.parse(PackageManagers)
    if (flags.reload) return reloadAfterPackageManager()
    if (flags.enable || flags.disable) {
      writeConfigSwitch(flags.enable === true)
      const r = await applyPackageManagers({decision: flags.disable ? REMOVED : undefined})
      if (!this.jsonEnabled()) this.log(`${r.mode}: ${r.reason}\n${[...r.written.map((p) => `  wrote   ${p}`), ...r.removed.map((p) => `  removed ${p}`)].join('\n') || '  nothing to change'}`)
      return r
    }
    const s = await packageManagerStatus()
    if (!this.jsonEnabled())
      this.log([`${s.mode}: ${s.reason}`, `  package managers: ${s.managers.join(', ') || 'none found'}`, `  /usr merged ${s.mergedMutable ? 'writable' : 'read-only (or not merged)'}`,
        ...s.files.map((f) => `  ${f.state.padEnd(7)} ${f.path}`)].join('\n'))
    return s
  }
}
