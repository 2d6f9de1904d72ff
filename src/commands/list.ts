import {BaseCommand} from '../cli/base-command.js'
import {type Listing, listExtensions} from '../lifecycle/index.js'

export default class List extends BaseCommand {
  static summary = 'List managed extensions and the foreign ones systemd-sysext sees.'
  static examples = ['<%= config.bin %> list', '<%= config.bin %> list --json']

  async run(): Promise<Listing> {
    await this.parse(List)
    const {extensions, unapprovedApps} = await listExtensions()
    if (!this.jsonEnabled()) {
      if (extensions.length === 0) this.log('No system extensions.')
      for (const e of extensions)
        this.log(`${e.name}\t${e.managed ? `managed (${e.target})` : 'foreign'}\t${e.merged ? 'merged' : 'not merged'}\t${e.hash ? e.hash.slice(0, 12) : '-'}\t${e.source ?? e.path}${e.allow.length ? `\textras: ${e.allow.join(',')}` : ''}`)
      for (const a of unapprovedApps) this.log(`${a.appId}\tflatpak app, NOT APPROVED\tnot merged\t-\t${a.installation} (approve with: sysext-helper install ${a.appId})`)
    }
    return {extensions, unapprovedApps}
  }
}
