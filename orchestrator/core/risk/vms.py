"""VMs and backups pack: hypervisor deletes and the tools that expire or delete backups.

Critical: `qm destroy`, `pct destroy`, `virsh undefine --remove-all-storage`, `virsh vol-delete`,
`VBoxManage unregistervm --delete`, `vagrant destroy`, `multipass delete --purge` / `purge`,
`lxc delete` / `incus delete` / `lxc-destroy`, `govc vm.destroy`, `pvesm free`; backups:
`restic forget` / `prune`, `borg delete` / `prune`, `duplicity remove-*` with `--force`,
`kopia snapshot delete`, `velero backup delete`, `tarsnap -d`, `timeshift --delete(-all)`.
Warning: `virsh destroy` (a hard power-off), `virsh undefine`, `qm stop`/`pct stop`, `borg
compact`, `restic unlock --remove-all`, `snapper delete`.
Safe: the previews (`--dry-run`, `-n`, duplicity without `--force`), list/info/check commands.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

from orchestrator.core.risk.table import Pack, Rule, tool

_PVE = tool("qm", "pct", "pvesm", values="--skiplock --purge --storage")
_VIRSH = tool("virsh", values="-c --connect --pool")
_VBOX = tool("VBoxManage", "vboxmanage")
_VAGRANT = tool("vagrant")
_MULTIPASS = tool("multipass")
_LXC = tool("lxc", "incus", "lxc-destroy", values="--project --target")
_GOVC = tool("govc", values="-u -dc -ds -folder -pool")
_RESTIC = tool(
    "restic",
    values="-r --repo --repository-file -p --password-file --password-command --keep-last --keep-daily --keep-weekly --keep-monthly --keep-yearly --keep-within --keep-tag --tag --host --path --cache-dir -o --option --max-unused --group-by",
)
_BORG = tool(
    "borg",
    "borgmatic",
    values="--keep-last --keep-daily --keep-weekly --keep-monthly --keep-yearly --keep-within -a --glob-archives --match-archives --prefix --remote-path --rsh -P",
)
_DUPLICITY = tool("duplicity", values="--name --archive-dir --file-to-restore -t --time --ssh-options")
_KOPIA = tool("kopia", values="--config-file --password")
_VELERO = tool("velero", values="-n --namespace --kubeconfig --selector -l")
_TARSNAP = tool("tarsnap", values="-f --keyfile --cachedir")
_TIMESHIFT = tool("timeshift", "snapper", "zfs-auto-snapshot", values="--snapshot -c --config --comments")
_PREVIEW = "Preview it first: {cmd} --dry-run"
_SNAPSHOT_FIRST = "Snapshot or back up the guest first (vzdump / virsh snapshot-create) and check its id"

# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("vms.pve-destroy", _PVE, ("destroy|free",), "critical", "deletes a guest or volume with its disks", suggestion=_SNAPSHOT_FIRST, type="vm_destroy"),
    Rule("vms.pvesh-snapshot", tool("pvesh"), ("delete", "*/snapshot/*"), "warning", "deletes a snapshot", type="vm_destroy"),
    Rule("vms.pvesh-guest", tool("pvesh"), ("delete", "*/qemu/*|*/lxc/*|*/storage/*"), "critical", "deletes a guest with its disks, or a storage volume", suggestion=_SNAPSHOT_FIRST, type="vm_destroy"),
    Rule("vms.pvesh-delete", tool("pvesh"), ("delete",), "warning", "deletes a Proxmox object", type="vm_destroy"),
    Rule("vms.pve-stop", _PVE, ("stop|reset|shutdown|reboot",), "warning", "stops or resets a guest", type="vm_destroy"),
    Rule("vms.virsh-undefine-storage", _VIRSH, ("undefine",), "critical", "deletes the guest definition and its disks", flags=("--remove-all-storage", "--storage", "--wipe-storage"), suggestion=_SNAPSHOT_FIRST, type="vm_destroy"),
    Rule("vms.virsh-vol-delete", _VIRSH, ("vol-delete|vol-wipe|pool-delete|snapshot-delete",), "critical", "deletes a storage volume, pool or snapshot", type="vm_destroy"),
    Rule("vms.virsh-destroy", _VIRSH, ("destroy|undefine|reset|pool-destroy",), "warning", "powers a guest off hard or removes its definition", type="vm_destroy"),
    Rule("vms.vbox-delete", _VBOX, ("unregistervm|closemedium",), "critical", "deletes the VM and its disks", flags=("--delete", "--delete-all"), type="vm_destroy"),
    Rule("vms.vagrant-destroy", _VAGRANT, ("destroy",), "critical", "deletes the VM and its disks", unless=("--help", "-h"), suggestion="Snapshot it first: vagrant snapshot save before-destroy", type="vm_destroy"),
    Rule("vms.vagrant-box-remove", _VAGRANT, ("box", "remove|prune"), "warning", "removes base boxes", type="vm_destroy"),
    Rule("vms.multipass-purge", _MULTIPASS, ("purge",), "critical", "permanently deletes every deleted instance", type="vm_destroy"),
    Rule("vms.multipass-delete-purge", _MULTIPASS, ("delete",), "critical", "deletes instances permanently", flags=("--purge", "-p"), type="vm_destroy"),
    Rule("vms.multipass-delete", _MULTIPASS, ("delete",), "warning", "deletes instances (recoverable until purged)", type="vm_destroy"),
    Rule("vms.lxc-delete", _LXC, ("delete|rm",), "critical", "deletes containers or VMs with their storage", unless=("--help", "-h"), suggestion="Snapshot it first: lxc snapshot NAME before-delete", type="vm_destroy"),
    Rule("vms.lxc-storage-delete", _LXC, ("storage|image|network|profile|project", "delete|rm"), "critical", "deletes a storage pool, image or network", type="vm_destroy"),
    Rule("vms.lxc-destroy", tool("lxc-destroy"), (), "critical", "deletes a container and its root filesystem", unless=("-?", "--help", "-h"), type="vm_destroy"),
    Rule("vms.govc-destroy", _GOVC, ("vm.destroy|datastore.rm|pool.destroy|folder.destroy|snapshot.remove|object.destroy",), "critical", "deletes vSphere objects", type="vm_destroy"),
    Rule("vms.govc-power", _GOVC, ("vm.power",), "warning", "changes a VM's power state", flags=("-off", "-reset", "-s", "-r"), type="vm_destroy"),
    # backups
    Rule("backups.restic-forget", _RESTIC, ("forget|prune",), "critical", "deletes snapshots from the backup repository", unless=("--dry-run", "-n", "--help"), suggestion=_PREVIEW, type="backup_delete"),
    Rule("backups.restic-key-remove", _RESTIC, ("key", "remove|rm"), "critical", "removes a repository key (lose the last one and the backups are unreadable)", type="backup_delete"),
    Rule("backups.restic-unlock", _RESTIC, ("unlock",), "warning", "removes every lock, even those of running backups", flags=("--remove-all",), type="backup_delete"),
    Rule("backups.borg-delete", _BORG, ("delete|prune|recreate",), "critical", "deletes archives from the backup repository", unless=("--dry-run", "-n", "--list-only", "--help"), suggestion="Preview it first: {cmd} --dry-run --list", type="backup_delete"),
    Rule("backups.borg-compact", _BORG, ("compact|break-lock",), "warning", "frees space of deleted archives or breaks a lock for good", type="backup_delete"),
    Rule("backups.duplicity-remove", _DUPLICITY, ("remove-older-than|remove-all-but-n-full|remove-all-inc-of-but-n-full|cleanup",), "critical", "deletes backup sets", flags=("--force",), suggestion="Run it without --force first: duplicity only lists what it would delete", type="backup_delete"),
    Rule("backups.duplicity-list", _DUPLICITY, ("remove-older-than|remove-all-but-n-full|remove-all-inc-of-but-n-full|cleanup",), None),
    Rule("backups.kopia-delete", _KOPIA, ("snapshot|repository|policy", "delete|rm|expire"), "critical", "deletes snapshots or policies", unless=("--dry-run",), flags=("--delete", "--unsafe-ignore-source"), type="backup_delete"),
    Rule("backups.kopia-delete-preview", _KOPIA, ("snapshot", "delete|expire"), "info", "only lists the snapshots it would delete (add --delete to delete)", type="backup_delete"),
    Rule("backups.velero-delete", _VELERO, ("backup|schedule|restore|backup-location|snapshot-location", "delete"), "critical", "deletes backups or their schedule", unless=("--help",), type="backup_delete"),
    Rule("backups.velero-uninstall", _VELERO, ("uninstall",), "critical", "removes velero and its backups' bookkeeping", type="backup_delete"),
    Rule("backups.tarsnap-delete", _TARSNAP, (), "critical", "deletes archives", flags=("-d", "--nuke"), unless=("--dry-run",), type="backup_delete"),
    Rule("backups.timeshift-delete", _TIMESHIFT, (), "critical", "deletes system snapshots", flags=("--delete-all", "--delete"), type="backup_delete"),
    Rule("backups.snapper-delete", _TIMESHIFT, ("delete|rm|remove",), "warning", "deletes snapshots", type="backup_delete"),
)
# fmt: on

PACK = Pack(
    name="vms",
    summary="Proxmox, libvirt, VirtualBox, Vagrant, Multipass, LXD/Incus, vSphere; restic, borg, duplicity, kopia, velero, tarsnap",
    rules=RULES,
)
