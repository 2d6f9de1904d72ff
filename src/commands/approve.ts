import {Args} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {allowFlag} from '../cli/flags.js'
import {createReporter} from '../cli/reporter.js'
import {type ApprovalResult, approve} from '../lifecycle/index.js'

export default class Approve extends BaseCommand {
  static summary = "Approve a Flatpak app's system extension without installing it now."
  static description = 'The next sync (run by the Flatpak trigger after install or update) merges it. install APP-ID approves and installs at once.'
  static examples = ['<%= config.bin %> approve org.gnome.Sysprof', '<%= config.bin %> approve org.example.Tool --allow commands']
  static args = {app: Args.string({description: 'Flatpak app id', required: true})}
  static flags = {allow: allowFlag}

  async run(): Promise<ApprovalResult> {
    const {args, flags} = await this.parse(Approve)
    const result = await approve(args.app, await createReporter(this.jsonEnabled()), flags.allow)
    if (!this.jsonEnabled())
      this.log(`${result.appId} approved${result.allow.length > 0 ? ` with ${result.allow.join(', ')}` : ''}; 'sysext-helper sync' (run by Flatpak after each install or update) merges its extension.`)
    return result
  }
}
