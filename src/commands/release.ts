import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {nameFlag} from '../cli/flags.js'
import {usageError} from '../errors.js'
import {loadHost} from '../sysext/index.js'
import {type WriteResult, planRelease, writeRelease, writeReleaseCopy} from '../sysext/index.js'
import {scanTree} from '../sysext/index.js'
import {extensionName} from '../sysext/index.js'

export default class Release extends BaseCommand {
  static summary = "Write an extension tree's extension-release file."
  static description = `Writes usr/lib/extension-release.d/extension-release.NAME atomically. Defaults: ID=_any, ARCHITECTURE of the host, EXTENSION_RELOAD_MANAGER=1 when the tree ships systemd units. Refuses to write into a Flatpak deploy; --output writes a complete staged copy instead.`
  static examples = [
    '<%= config.bin %> release /app/lib/extensions --name org.gnome.Sysprof',
    '<%= config.bin %> release ./ext --name org.example.App --id debian --version-id 13',
    '<%= config.bin %> release /var/lib/flatpak/app/org.example.App/current/active/files/lib/extensions --name org.example.App --output /tmp/staged',
  ]
  static args = {path: Args.string({description: 'Extension tree (the directory holding usr/)', required: true})}
  static flags = {
    name: nameFlag,
    id: Flags.string({description: 'ID= (default _any: any distribution)'}),
    'version-id': Flags.string({description: 'VERSION_ID= (with --id)', exclusive: ['sysext-level']}),
    'sysext-level': Flags.string({description: 'SYSEXT_LEVEL= (with --id)'}),
    architecture: Flags.string({description: "ARCHITECTURE= in systemd's names, or _any (default: the host's)"}),
    'reload-manager': Flags.boolean({allowNo: true, description: 'EXTENSION_RELOAD_MANAGER=1 (default: when the tree ships units)'}),
    scope: Flags.string({description: "SYSEXT_SCOPE= (must include 'system')"}),
    output: Flags.string({description: 'Write a staged copy of the tree plus the release file into this new directory'}),
    'dry-run': Flags.boolean({description: 'Print the release file, write nothing'}),
  }

  async run(): Promise<WriteResult | {path: null; plan: ReturnType<typeof planRelease>}> {
    const {args, flags} = await this.parse(Release)
    const tree = scanTree(args.path)
    const name = extensionName(tree, flags.name, undefined)
    if (name === undefined)
      throw usageError('RELEASE_NEEDS_NAME', `Cannot tell the extension name of '${args.path}'.`, 'Pass --name (for a Flatpak app: its app id).')
    const plan = planRelease(tree, loadHost('/'), {
      name,
      id: flags.id,
      versionId: flags['version-id'],
      sysextLevel: flags['sysext-level'],
      architecture: flags.architecture,
      reloadManager: flags['reload-manager'],
      scope: flags.scope,
    })
    if (flags['dry-run']) {
      if (!this.jsonEnabled()) process.stdout.write(plan.content)
      return {path: null, plan}
    }
    const result = flags.output === undefined ? writeRelease(tree, plan) : await writeReleaseCopy(tree, plan, flags.output)
    if (!this.jsonEnabled()) {
      if (result.staged) this.log(`Staged ${result.tree} (${result.staged.linked} hard links, ${result.staged.copied} copies).`)
      this.log(`Wrote ${result.path}:`)
      process.stdout.write(plan.content.replace(/^/gm, '  '))
    }
    return result
  }
}
