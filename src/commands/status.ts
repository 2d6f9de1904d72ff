import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {type ExtensionStatus, extensionStatus} from '../lifecycle/index.js'

export default class Status extends BaseCommand {
  static summary = 'Show what was installed for an extension and check it live. Exit 0 healthy, 1 unhealthy.'
  static examples = ['<%= config.bin %> status org.gnome.Sysprof', '<%= config.bin %> status org.gnome.Sysprof --json']
  static args = {name: Args.string({description: 'Extension name or Flatpak app id', required: true})}
  static flags = {timeout: Flags.integer({default: 25, min: 1, description: 'Seconds to wait for each activation check'})}

  async run(): Promise<ExtensionStatus> {
    const {args, flags} = await this.parse(Status)
    const status = await extensionStatus(args.name, undefined, flags.timeout)
    if (!this.jsonEnabled()) {
      const r = status.record
      const lines = [
        `${status.name}: ${status.healthy ? 'healthy' : 'UNHEALTHY'}`,
        `  source:  ${r.source.path}${r.source.commit ? ` (commit ${r.source.commit})` : ''}`,
        `  link:    ${r.link} -> ${r.linkTarget} ${status.linkOk ? '(ok)' : '(BROKEN)'}`,
        `  merged:  ${status.verification.merged ? 'yes' : 'no'}`,
        `  since:   ${r.installedAt}, content ${r.hash.slice(0, 12)}`,
        `  extras:  ${r.allow?.length ? r.allow.join(', ') : 'none (its own on-demand service only)'}`,
        ...status.verification.busNames.map((b) => `  bus:     ${b.name} ${b.ok ? 'answers' : `FAILS: ${b.failure?.detail}`}`),
        ...status.verification.polkitActions.map((a) => `  polkit:  ${a.id} ${a.ok ? 'known' : 'UNKNOWN'}`),
        ...status.units.map((u) => `  unit:    ${u.unit} ${u.active ? 'active' : 'inactive'}`),
        ...status.problems.map((p) => `  problem: ${p}`),
        ...(status.fix ? [`  fix:     ${status.fix}`] : []),
      ]
      this.log(lines.join('\n'))
    }
    if (!status.healthy) process.exitCode = 1
    return status
  }
}
