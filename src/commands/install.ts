import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {allowFlag, nameFlag} from '../cli/flags.js'
import {renderInstall} from '../cli/render.js'
import {createReporter} from '../cli/reporter.js'
import {type InstallResult, install} from '../lifecycle/index.js'
import type {TargetKind} from '../lifecycle/index.js'

export default class Install extends BaseCommand {
  static summary = "Merge an app's system extension into the host, verified and reversible."
  static description = `Copies the tree into a root-owned stage (read as its owner, no symlink followed) unless only root can change it, validates what will be merged, links it into the target directory, runs systemd-sysext refresh, reloads systemd, polkit and the bus, and proves activation with Peer.Ping. Any failure after linking restores the previous state.`
  static examples = [
    '<%= config.bin %> install org.gnome.Sysprof',
    '<%= config.bin %> install ./ext --name org.example.App --target persistent',
    '<%= config.bin %> install org.freedesktop.Bustle --dry-run --json',
  ]
  static args = {target: Args.string({description: 'Flatpak app id or extension tree path', required: true})}
  static flags = {
    name: nameFlag,
    allow: allowFlag,
    target: Flags.string({options: ['runtime', 'local', 'persistent'], default: 'local', description: 'runtime: /run/extensions (gone at reboot), local: /var/lib/extensions, persistent: /etc/extensions'}),
    installation: Flags.string({description: 'Look the app up only in this system installation (a path)'}),
    'dry-run': Flags.boolean({description: 'Print the plan; change nothing'}),
    'no-verify': Flags.boolean({description: 'Skip the Peer.Ping and pkaction checks'}),
    'keep-on-failure': Flags.boolean({description: 'Leave a failed installation merged for inspection instead of rolling back'}),
    stage: Flags.boolean({description: 'Always merge a staged copy, even of a tree that could be linked in place'}),
    timeout: Flags.integer({default: 25, min: 1, description: 'Seconds to wait for each activation check'}),
    'expect-hash': Flags.string({description: "Refuse, changing nothing, unless the validated tree's content hash is this one (the hash of an earlier --dry-run)"}),
    enable: Flags.boolean({allowNo: true, default: true, description: 'Enable systemd-sysext.service for local and persistent targets, so the extension is merged again at boot (--no-enable: leave it as it is)'}),
  }

  async run(): Promise<InstallResult> {
    const {args, flags} = await this.parse(Install)
    const result = await install(args.target, {
      name: flags.name,
      allow: flags.allow,
      installationPath: flags.installation,
      targetKind: flags.target as TargetKind,
      dryRun: flags['dry-run'],
      verify: !flags['no-verify'],
      keepOnFailure: flags['keep-on-failure'],
      forceStage: flags.stage,
      enableBoot: flags.enable,
      timeoutS: flags.timeout,
      expectHash: flags['expect-hash'],
    }, await createReporter(this.jsonEnabled()))
    if (!this.jsonEnabled()) this.log(renderInstall(result))
    return result
  }
}
