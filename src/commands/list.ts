import {BaseCommand} from '../cli/base-command.js'
import {type ListedExtension, listExtensions} from '../sysext/install.js'
import {DEFAULT_PATHS, readState} from '../sysext/state.js'
import {computePlan} from '../sysext/sync.js'
import {listImages} from '../systemd/sysext.js'

export default class List extends BaseCommand {
  static summary = 'List managed extensions and the foreign ones systemd-sysext sees.'
  static examples = ['<%= config.bin %> list', '<%= config.bin %> list --json']

  async run(): Promise<{extensions: ListedExtension[]; unapprovedApps: Array<{appId: string; installation: string}>}> {
    await this.parse(List)
    const extensions = await listExtensions(undefined, await listImages().catch(() => []))
    const unapprovedApps = computePlan({}, DEFAULT_PATHS, readState(DEFAULT_PATHS)).unapproved.map((a) => ({appId: a.appId, installation: a.installation.path}))
    if (!this.jsonEnabled()) {
      if (extensions.length === 0) this.log('No system extensions.')
      for (const e of extensions)
        this.log(`${e.name}\t${e.managed ? `managed (${e.target})` : 'foreign'}\t${e.merged ? 'merged' : 'not merged'}\t${e.hash ? e.hash.slice(0, 12) : '-'}\t${e.source ?? e.path}`)
      for (const a of unapprovedApps) this.log(`${a.appId}\tflatpak app, NOT APPROVED\tnot merged\t-\t${a.installation} (approve with: sysext-helper install ${a.appId})`)
    }
    return {extensions, unapprovedApps}
  }
}
