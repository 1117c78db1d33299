"""Disks pack: formatting, raw writes, partition tables, secure erase, volume managers.

Critical: mkfs/mkswap, wipefs -a, blkdiscard, dd/cp/tee onto a block device, partition tables
rewritten (`sgdisk -Z/-o/-d/-n`, `parted -s DEV mklabel/rm`, `sfdisk`/`fdisk` fed a script,
`sfdisk --delete`), `badblocks -w`, `nvme format/sanitize`, nwipe, `hdparm --security-erase`,
`mdadm --zero-superblock/--create`, LVM removes and shrinks, `zfs/zpool destroy`, `btrfs
subvolume delete`, `cryptsetup luksFormat/erase`, Ceph pool and image deletes.
Safe: the read-only forms (`sgdisk --verify/-p`, `wipefs` without `-a`, `fdisk -l`, `parted -l`
or `print`, `sfdisk -d`, `mdadm --detail`), and an interactive `fdisk DEV` with no script
(info: nothing is written unless someone types the commands). mkfs on an image file: warning.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

import posixpath
import re

from orchestrator.core.risk.table import Pack, Rule, has_flag, positionals, tool
from orchestrator.core.risk_types import Invocation, Risk

_BLOCK_DEVICE = re.compile(
    r"^/dev/(?:(?:sd|hd|vd|xvd)[a-z]+\d*|nvme\d+(?:n\d+(?:p\d+)?)?|mmcblk\d+(?:p\d+)?|md\d+|dm-\d+|loop\d+"
    r"|nbd\d+|rbd\d+|zd\d+|sr\d+|r?disk\d+(?:s\d+)?|mem|kmem|port|mtd\d+|(?:mapper|disk|block|md|zvol)/.+"
    r"|(?!(?:pts|shm|mqueue|hugepages|fd|char|input|snd|net|bus|dri|cpu|usb|serial|v4l|vfio|dma_heap|tty)/)[\w.+-]+/[\w.+-]+)$"
)


def is_block_device(text: str) -> bool:
    return bool(_BLOCK_DEVICE.match(posixpath.normpath(text) if text.startswith("/") else text))


_CHECK = "Double-check the target first with lsblk -f {dev}: writing to a block device destroys its data"
_MKFS = re.compile(r"^(?:mkfs(?:\..+)?|mke2fs|mkswap|mkdosfs|mkntfs|mkfs_\w+|mkexfatfs)$")


def _device(inv: Invocation, device: str, what: str) -> Risk:
    return Risk(
        "device_write", "critical", f"Command '{inv.name}' {what} '{device}' - requires approval", (_CHECK.replace("{dev}", device),)
    )


def _devices(inv: Invocation) -> list[str]:
    return [a for a in inv.args if is_block_device(a)]


def dd_risks(inv: Invocation) -> list[Risk] | None:
    for a in inv.args:
        if a.startswith("of=") and is_block_device(a[3:]):
            return [_device(inv, a[3:], "writes raw data onto block device")]
    return None


def copy_risks(inv: Invocation) -> list[Risk] | None:
    devices = _devices(inv)
    if inv.name == "cp" and devices and devices[-1] != inv.args[-1]:
        return None  # reading from a device
    return [_device(inv, devices[-1], "writes onto block device")] if devices else None


def mkfs_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    if {"-V", "--version", "--help", "-h"} & set(args) or ("-n" in args and inv.name.startswith("mke2fs")):
        return []
    if devices := _devices(inv):
        return [_device(inv, devices[-1], "erases block device")]
    targets = [a for a in args if not a.startswith("-")]
    if not targets:
        return []
    return [
        Risk(
            "device_write",
            "warning",
            f"Command '{inv.name}' formats '{targets[-1]}' - review before running",
            (_CHECK.replace("{dev}", targets[-1]),),
        )
    ]


def wipefs_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    erases = has_flag(args, "-a") or has_flag(args, "--all") or has_flag(args, "-o") or has_flag(args, "--offset") or has_flag(args, "-t")
    if not erases or has_flag(args, "-n") or has_flag(args, "--no-act"):
        return []
    devices = _devices(inv) or [a for a in args if not a.startswith("-")][-1:]
    return [_device(inv, devices[0], "erases filesystem signatures on")] if devices else []


_SGDISK_WRITES = [
    "-o",
    "--clear",
    "-Z",
    "--zap-all",
    "-z",
    "--zap",
    "-d",
    "--delete",
    "-n",
    "--new",
    "-N",
    "--largest-new",
    "-g",
    "--mbrtogpt",
    "-m",
    "--gpttombr",
    "-G",
    "--randomize-guids",
    "-l",
    "--load-backup",
    "-R",
    "--replicate",
    "-e",
    "--move-second-header",
    "-s",
    "--sort",
    "-t",
    "--typecode",
    "-k",
    "--move-main-table",
    "-r",
    "--transpose",
    "-h",
    "--hybrid",
]


def sgdisk_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    if has_flag(args, "-P", _SGDISK) or has_flag(args, "--pretend"):
        return []
    hit = next((f for f in _SGDISK_WRITES if has_flag(args, f, _SGDISK) or any(a.startswith(f + "=") for a in args)), None)
    if hit is None:
        return []  # --verify, --print, --info, --backup only read
    devices = _devices(inv) or positionals(args, _SGDISK)[-1:] or ["the disk"]
    return [
        Risk(
            "device_write",
            "critical",
            f"Command 'sgdisk {hit}' rewrites the partition table of '{devices[-1]}' - requires approval",
            (f"Back up the table first: sgdisk --backup=table.bak {devices[-1]}", "Try it with --pretend first"),
        )
    ]


_SGDISK = tool(
    "sgdisk",
    values="-b --backup -l --load-backup -R --replicate -t --typecode -c --change-name -A --attributes -d --delete -n --new -u --partition-guid -U --disk-guid -a --set-alignment",
)
_PARTED = tool("parted", values="-a --align")
_PARTED_READ = frozenset({"print", "p", "unit", "help", "align-check", "quit", "version"})
_PARTED_DESTROY = frozenset({"mklabel", "mktable", "rm", "resizepart", "resize", "mkfs", "rescue"})


def parted_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    if has_flag(args, "-l") or has_flag(args, "--list") or has_flag(args, "--help") or has_flag(args, "-v"):
        return []
    words = positionals(args, _PARTED)
    device, commands = (words[0], [w.lower() for w in words[1:]]) if words else ("", [])
    if not commands:
        return _interactive(inv, device)
    if destroy := sorted(set(commands) & _PARTED_DESTROY):
        return [
            Risk(
                "device_write",
                "critical",
                f"Command 'parted {device} {destroy[0]}' rewrites the partition table - requires approval",
                (f"Print the current table first and keep it: parted {device} unit s print > partitions.txt",),
            )
        ]
    if set(commands) <= _PARTED_READ or {"print", "p"} & set(commands):
        return []
    return [Risk("device_write", "warning", f"Command 'parted {device} {' '.join(commands)}' changes partitions - review before running")]


def _interactive(inv: Invocation, device: str) -> list[Risk]:
    if inv.stdin_fed:
        return [
            Risk(
                "device_write",
                "critical",
                f"Command '{inv.name} {device}' is fed a script that can rewrite the partition table - requires approval",
                (f"Save the current table first: sfdisk --dump {device} > table.sfdisk",),
            )
        ]
    return [
        Risk(
            "device_write",
            "info",
            f"Command '{inv.name} {device}' opens an interactive partition editor; nothing is written unless someone types it",
        )
    ]


_LIST_OPTS = (
    "-l",
    "--list",
    "-x",
    "--list-details",
    "-d",
    "--dump",
    "-J",
    "--json",
    "-V",
    "--verify",
    "-s",
    "--show-size",
    "-g",
    "--show-geometry",
    "-F",
    "--list-free",
    "--help",
    "-h",
    "--version",
    "-p",
    "--print",
)


def fdisk_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    if any(has_flag(args, f) for f in _LIST_OPTS):
        return []
    if inv.name == "sfdisk" and (has_flag(args, "--delete") or has_flag(args, "--change-id") or has_flag(args, "--part-type")):
        return [_device(inv, (_devices(inv) or ["the disk"])[0], "changes partitions on")]
    devices = _devices(inv) or [a for a in args if not a.startswith("-")][:1]
    if not devices:
        return []
    return _interactive(inv, devices[0])


_PREVIEW_OFF = ("--help", "-h", "--version")
_LVM = tool("lvremove", "vgremove", "pvremove", "lvreduce")
_LVM_MOVE = tool("vgreduce", "pvmove", "lvconvert")
_ZFS = tool("zfs", "zpool", values="-o -O -t -s -S")
_BTRFS = tool("btrfs")
_MDADM = tool("mdadm")
_NVME = tool("nvme", values="-n --namespace-id -s --ses -a --sanact -l --lbaf")
_CRYPT = tool("cryptsetup", values="-d --key-file -S --key-slot -c --cipher -s --key-size --type")
_HDPARM = tool("hdparm", values="--user-master --security-set-pass --security-erase --security-erase-enhanced")
_CEPH = tool("ceph", "rbd", "rados", "gluster", values="-p --pool -c --conf -n --name")
_BADBLOCKS = tool("badblocks", values="-b -c -e -i -o -p -t -d")
_DMSETUP = tool("dmsetup")
_NWIPE = tool("nwipe", "flashrom", values="-m --method -p --programmer -r --rounds")
_TEST_FIRST = "Check the target first (lsblk -f, zfs list, lvs) and take a snapshot or backup before removing it"

# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("disks.lvremove", _LVM, (), "critical", "removes a logical volume and its data", unless=("--help", "-t", "--test"), suggestion=_TEST_FIRST, type="device_write"),
    Rule("disks.lvm-move", _LVM_MOVE, (), "warning", "moves or removes extents of a volume group", unless=("--help", "-t", "--test"), type="device_write"),
    Rule("disks.zfs-destroy", _ZFS, ("destroy",), "critical", "destroys a ZFS dataset, snapshot or pool", unless=("-n", "--help"), suggestion="Preview with -nv first: {cmd} -nv", type="device_write"),
    Rule("disks.zpool-labelclear", _ZFS, ("labelclear",), "critical", "clears ZFS labels from a device", type="device_write"),
    Rule("disks.zfs-rollback-r", _ZFS, ("rollback",), "critical", "rolls back and destroys every later snapshot", flags=("-r", "-R"), type="device_write"),
    Rule("disks.zfs-rollback", _ZFS, ("rollback",), "warning", "rolls a dataset back, losing changes since the snapshot", type="device_write"),
    Rule("disks.btrfs-subvolume-delete", _BTRFS, ("subvolume|sub|su", "delete|del|d*"), "critical", "deletes a btrfs subvolume", suggestion="Snapshot it first: btrfs subvolume snapshot -r SRC DEST", type="device_write"),
    Rule("disks.btrfs-repair", _BTRFS, ("check",), "warning", "repairs in place, which can make damage worse", flags=("--repair",), type="device_write"),
    Rule("disks.btrfs-device-remove", _BTRFS, ("device", "remove|delete"), "warning", "removes a device from a btrfs filesystem", type="device_write"),
    Rule("disks.mdadm-read", _MDADM, (), None, flags=("--detail", "-D", "--examine", "-E", "--query", "-Q", "--scan", "--help")),
    Rule("disks.mdadm-zero", _MDADM, (), "critical", "wipes RAID metadata or builds a new array over the disks", flags=("--zero-superblock", "--create", "-C", "--build", "-B"), type="device_write"),
    Rule("disks.mdadm-change", _MDADM, (), "warning", "stops, fails or reshapes a RAID array", flags=("--stop", "-S", "--fail", "-f", "--remove", "-r", "--grow", "-G"), type="device_write"),
    Rule("disks.nvme-format", _NVME, ("format|sanitize|delete-ns|ns-delete|write-zeroes|dsm",), "critical", "erases an NVMe namespace", suggestion="Check the namespace first: nvme list", type="device_write"),
    Rule("disks.cryptsetup", _CRYPT, ("luksformat|erase|lukserase|lukskillslot|reencrypt|luksremovekey",), "critical", "reformats or destroys keys of an encrypted volume", unless=("--help",), suggestion="Back up the LUKS header first: cryptsetup luksHeaderBackup DEV --header-backup-file header.img", type="device_write"),
    Rule("disks.hdparm-erase", _HDPARM, (), "critical", "erases or overwrites a disk", flags=("--security-erase", "--security-erase-enhanced", "--trim-sector-ranges", "--write-sector", "--make-bad-sector", "--fwdownload*", "--dco-restore",), type="device_write"),
    Rule("disks.badblocks-write", _BADBLOCKS, (), "critical", "overwrites every block of the device", flags=("-w",), suggestion="Use the read-only test: badblocks -sv DEV", type="device_write"),
    Rule("disks.badblocks-rw", _BADBLOCKS, (), "warning", "rewrites every block (non-destructively, but on a mounted disk it corrupts data)", flags=("-n",), type="device_write"),
    Rule("disks.nwipe", _NWIPE, (), "critical", "wipes whole disks or rewrites firmware", unless=("--help", "-h", "--version", "-V", "-r", "--read", "-L", "--list"), type="device_write"),
    Rule("disks.dmsetup-remove-all", _DMSETUP, ("remove_all",), "critical", "removes every device-mapper device", type="device_write"),
    Rule("disks.dmsetup-remove", _DMSETUP, ("remove|wipe_table|clear",), "warning", "removes or empties a device-mapper device", type="device_write"),
    Rule("disks.ceph-delete", _CEPH, ("**", "delete|rm|purge|destroy|rmpool|purge-snap|snap-purge"), "critical", "deletes cluster storage (a pool, image or OSD)", unless=("--help", "-h"), type="device_write"),
)
# fmt: on

PACK = Pack(
    name="disks",
    summary="mkfs, dd/cp/tee onto devices, partition tools, wipefs, secure erase, LVM/RAID/ZFS/btrfs, Ceph",
    rules=RULES,
    handlers={
        "dd": dd_risks,
        "cp": copy_risks,
        "tee": copy_risks,
        "wipefs": wipefs_risks,
        "blkdiscard": lambda inv: [_device(inv, d, "discards every block of") for d in _devices(inv)[:1]] or None,
        "sgdisk": sgdisk_risks,
        "parted": parted_risks,
        "fdisk": fdisk_risks,
        "gdisk": fdisk_risks,
        "sfdisk": fdisk_risks,
        "cfdisk": fdisk_risks,
        "cgdisk": fdisk_risks,
        "shred": lambda inv: [_device(inv, d, "overwrites block device") for d in _devices(inv)[:1]] or None,
        "lvresize": lambda inv: (
            [Risk("device_write", "critical", f"Command '{inv.line}' shrinks a logical volume, cutting off its data - requires approval")]
            if any(re.match(r"^(?:-[Ll]|--size|--extents)=?-", a) or a.startswith("-L-") for a in _join_values(inv.args))
            else None
        ),
    },
)

# `mkfs*` have too many names for a dict key each; risk_rules asks `is_mkfs`.
MKFS = mkfs_risks


def is_mkfs(name: str) -> bool:
    return bool(_MKFS.match(name))


def _join_values(args: list[str]) -> list[str]:
    return [f"{a}={args[i + 1]}" if a in {"-L", "-l", "--size", "--extents"} and i + 1 < len(args) else a for i, a in enumerate(args)]
