"""Host rules: writes onto block devices, power state, and stopping services.

Severities follow the contract in `orchestrator.core.risk_rules`. `redirect_risks` covers the
same dangers reached through a shell redirection (`> /dev/sda`, `> /proc/sysrq-trigger`).
"""

from __future__ import annotations

import posixpath
import re

from orchestrator.core.risk_types import Invocation, Risk, program

# --- block devices -------------------------------------------------------------------------

_BLOCK_DEVICE = re.compile(
    r"^/dev/(?:(?:sd|hd|vd|xvd)[a-z]+\d*|nvme\d+n\d+(?:p\d+)?|mmcblk\d+(?:p\d+)?|md\d+|dm-\d+|loop\d+"
    r"|nbd\d+|rbd\d+|zd\d+|sr\d+|r?disk\d+(?:s\d+)?|mem|kmem|port|(?:mapper|disk|block|md)/.+)$"
)


def is_block_device(text: str) -> bool:
    return bool(_BLOCK_DEVICE.match(posixpath.normpath(text) if text.startswith("/") else text))


_DEVICE_CHECK = "Double-check the target with lsblk: writing to a block device destroys its data"
_MKFS = re.compile(r"^(?:mkfs(?:\..+)?|mke2fs|mkswap|mkdosfs|mkntfs|mkfs_\w+)$")
_PARTITION_TOOLS = frozenset({"fdisk", "sfdisk", "cfdisk", "gdisk", "sgdisk", "parted"})
_LISTING = frozenset({"-l", "--list", "-d", "--dump", "-p", "--print", "print", "-s", "--show", "-V", "--version"})


def _device_risk(program_name: str, device: str, what: str) -> Risk:
    return Risk("device_write", "critical", f"Command '{program_name}' {what} '{device}' - requires approval", (_DEVICE_CHECK,))


def device_risks(inv: Invocation) -> list[Risk]:
    name = program(inv.argv[0])
    args = [w.text for w in inv.argv[1:]]
    devices = [a for a in args if is_block_device(a)]
    if name == "dd":
        for a in args:
            if a.startswith("of=") and is_block_device(a[3:]):
                return [_device_risk("dd", a[3:], "writes raw data onto block device")]
        return []
    if name in {"tee", "cp"} and devices:
        return [_device_risk(name, devices[0], "writes onto block device")]
    if name == "wipefs" and ("-n" in args or "--no-act" in args):
        return []
    if name in _PARTITION_TOOLS and set(args) & _LISTING:
        return []
    if _MKFS.match(name) or name in {"wipefs", "blkdiscard"} | _PARTITION_TOOLS:
        if devices:
            return [_device_risk(name, devices[0], "erases block device")]
        targets = [a for a in args if not a.startswith("-")]
        if not targets:
            return []
        return [
            Risk(
                "device_write",
                "warning",
                f"Command '{name}' formats or erases '{targets[-1]}' - review before running",
                (_DEVICE_CHECK,),
            )
        ]
    if name == "shred":
        targets = [a for a in args if not a.startswith("-")]
        if devices:
            return [_device_risk(name, devices[0], "overwrites block device")]
        if targets:
            return [Risk("destructive_command", "warning", f"Command 'shred' destroys '{targets[0]}' - review before running")]
    if name == "cryptsetup" and set(args) & {"luksFormat", "erase", "luksErase", "reencrypt"}:
        return [_device_risk(name, devices[0] if devices else " ".join(args), "reformats encrypted volume")]
    if name in {"lvremove", "vgremove", "pvremove"} or (name in {"zpool", "zfs"} and args[:1] == ["destroy"]):
        return [Risk("device_write", "critical", f"Command '{name} {' '.join(args)}' destroys a volume - requires approval")]
    return []


def redirect_risks(op: str, target: str) -> list[Risk]:
    """Risks of a redirection: writing onto a block device or the kernel's sysrq trigger."""
    if not op.endswith(">") and op not in {">>", "&>>", ">|", "<>", ">&"}:
        return []
    if is_block_device(target):
        return [
            Risk(
                "device_write",
                "critical",
                f"Command redirects output onto block device '{target}' - requires approval",
                (_DEVICE_CHECK,),
            )
        ]
    if target == "/proc/sysrq-trigger":
        return [Risk("power", "critical", "Command writes to /proc/sysrq-trigger (can crash or reboot the node)")]
    return []


# --- power and services -------------------------------------------------------------------

_POWER_SUGGESTION = "Drain the node and schedule the restart with approval, e.g. 'shutdown -r +5'"
_REMOTE_ACCESS_UNITS = frozenset(
    ["ssh", "sshd", "networking", "network", "NetworkManager", "systemd-networkd", "wpa_supplicant", "firewalld"]
)
_SYSTEMCTL_POWER = frozenset(
    [
        "reboot",
        "poweroff",
        "halt",
        "kexec",
        "suspend",
        "hibernate",
        "hybrid-sleep",
        "suspend-then-hibernate",
        "rescue",
        "emergency",
        "soft-reboot",
    ]
)
_SYSTEMCTL_VALUE_OPTS = frozenset(
    ["-H", "--host", "-M", "--machine", "-t", "--type", "-s", "--signal", "-p", "--property", "-n", "--lines", "-o", "--output"]
)


def _power(command: str) -> Risk:
    return Risk("power", "critical", f"Command '{command}' takes the node down - requires approval", (_POWER_SUGGESTION,))


def _service_stop(verb: str, unit: str) -> Risk:
    bare = unit.removesuffix(".service").removesuffix(".socket")
    if bare in _REMOTE_ACCESS_UNITS:
        return Risk(
            "service_stop",
            "critical",
            f"Command would {verb} '{unit}', which can cut off remote access to the node - requires approval",
            ("Use 'restart' or 'reload' instead, and keep a console session open",),
        )
    return Risk(
        "service_stop",
        "warning",
        f"Command would {verb} service '{unit}' - review before running",
        ("Prefer 'systemctl reload' or 'restart' if you only need to apply configuration",),
    )


def power_and_service_risks(inv: Invocation) -> list[Risk]:
    name = program(inv.argv[0])
    args = [w.text for w in inv.argv[1:]]
    if name == "shutdown":
        return [] if {"-c", "-k", "--help"} & set(args) else [_power("shutdown " + " ".join(args))]
    if name in {"reboot", "halt", "poweroff"}:
        return [] if "--help" in args else [_power(name)]
    if name in {"init", "telinit"}:
        return [_power(f"{name} {args[0]}")] if args[:1] and args[0] in {"0", "1", "6", "s", "S"} else []
    if name == "systemctl":
        positional: list[str] = []
        skip = False
        for a in args:
            if skip:
                skip = False
            elif a in _SYSTEMCTL_VALUE_OPTS:
                skip = True
            elif not a.startswith("-"):
                positional.append(a)
        if not positional:
            return []
        verb, units = positional[0], positional[1:]
        if verb in _SYSTEMCTL_POWER:
            return [_power(f"systemctl {verb}")]
        if verb == "isolate" and any(u.split(".")[0] in {"rescue", "emergency", "poweroff", "reboot", "halt"} for u in units):
            return [_power(f"systemctl isolate {units[0]}")]
        if verb in {"stop", "disable", "mask", "kill"}:
            return [_service_stop(verb, u) for u in units[:1]]
        return []
    if name in {"service", "rc-service", "invoke-rc.d"} and len(args) >= 2 and args[1] == "stop":
        return [_service_stop("stop", args[0])]
    if inv.argv[0].text.startswith("/etc/init.d/") and args[:1] == ["stop"]:
        return [_service_stop("stop", name)]
    if name == "update-rc.d" and len(args) >= 2 and args[1] in {"disable", "remove"}:
        return [_service_stop("disable", args[0])]
    if name == "chkconfig" and len(args) >= 2 and args[1] == "off":
        return [_service_stop("disable", args[0])]
    return []
