import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {createReporter} from '../cli/reporter.js'
import {type SyncResult, sync} from '../lifecycle/index.js'

export default class Sync extends BaseCommand {
  static summary = 'Reconcile merged extensions with the system Flatpak installations.'
  static description = `Approved apps whose deploy changed are re-staged and merged again, approved apps that were uninstalled are removed (one systemd-sysext refresh for all changes), and apps that ship an extension without approval are reported. Nothing else changes; with nothing to do it takes no lock and touches nothing. Run by the Flatpak trigger and sysext-helper-sync.path. Exit 1 when a change failed.`
  static examples = ['<%= config.bin %> sync', '<%= config.bin %> sync --dry-run --json']
  static flags = {
    installation: Flags.string({description: 'Only this system installation (a path)'}),
    'dry-run': Flags.boolean({description: 'Report what would change; change nothing'}),
  }

  async run(): Promise<SyncResult> {
    const {flags} = await this.parse(Sync)
    const result = await sync({installationPath: flags.installation, dryRun: flags['dry-run']}, await createReporter(this.jsonEnabled()))
    if (!this.jsonEnabled()) {
      for (const name of result.installed) this.log(`installed ${name}`)
      for (const name of result.updated) this.log(`updated ${name}`)
      for (const name of result.removed) this.log(`removed ${name}`)
      for (const f of result.failed) {
        this.log(`FAILED ${f.name}: ${f.message}${f.hint ? `\n  Hint: ${f.hint}` : ''}`)
        for (const finding of f.findings ?? []) this.log(`  ${finding.file}: ${finding.message} [${finding.rule}]\n    Hint: ${finding.hint}`)
      }
      if (!result.changed && result.failed.length === 0) this.log(`Nothing to do (${result.unchanged.length} up to date, ${result.unapproved.length} not approved).`)
    }
    if (result.failed.length > 0) process.exitCode = 1
    return result
  }
}
