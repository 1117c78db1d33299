"""Risk rules: what one unwrapped simple command can destroy, and how badly.

Pure functions over argv words; parsing and unwrapping (sudo, env, sh -c, ...) live in
`orchestrator.core.analysis` and the modules it uses. `command_risks` sends each command to the
rules for its area: `filesystem_rules` (paths, rm, find, permissions), `host_rules` (block
devices, power, services, redirections), `sql_rules` (database clients), `infra_rules` (git,
kubectl, helm, terraform); the shared types are in `risk_types`. Each rule returns `Risk`
values; the analysis turns them into findings. The severity contract (the corpus in
tests/unit/analysis_corpus.py holds it):

Paths (rm -r, find -delete, chmod/chown -R) are classified first:
  root      `/`, `/*`, `/.`, `//`, `/..`                          -> critical
  home      `~`, `~/`, `~user`, `$HOME`, `${HOME}/*`, `/root`,
            `/home/bob`                                            -> critical
  system    any top-level dir (`/data`), two levels under a system top
            (`/etc/nginx`, `/var/www`, `/home`), or a child of /var/lib,
            /usr/lib, /usr/local, /usr/share (`/var/lib/mysql`)     -> critical
  broad     `.`, `..`, `*`, `./*`, `../..` (whole working dir)     -> warning
  dynamic   built from a variable other than HOME (`$DIR/*`)       -> warning
  other     any other absolute or home path (`/var/www/app/cache`) -> warning
  scratch   under /tmp, /var/tmp, /dev/shm (`/tmp/build`)          -> info
  relative  a named relative path (`./build`, `node_modules`)      -> info
A trailing `/*` or `/.*` means "the contents of" and classifies as the directory itself.

rm: recursive (-r/-R/--recursive) uses the table above; `--no-preserve-root` is critical.
  Non-recursive rm is a warning on root/system paths and nothing otherwise. `xargs rm -r`
  with unknown input is a warning; fed by `find ROOT`, it is rated like `find ROOT -delete`.
find: `-delete` or `-exec rm/unlink/shred` is critical when a root is root/home/system, else a
  warning (even under /tmp: find deletes by pattern across a whole tree).
Devices: mkfs*, mkswap, wipefs, blkdiscard, partition tools, dd of=, tee, cp or shred onto a
  block device, and `> /dev/sda` are critical; mkfs on an image file is a warning.
Power: shutdown/reboot/halt/poweroff, init 0/1/6, systemctl reboot/poweroff/rescue/... and
  writes to /proc/sysrq-trigger are critical; `shutdown -c` is nothing.
Services: systemctl stop/disable/mask/kill, service X stop, /etc/init.d/X stop are warnings;
  critical for units that carry remote access (ssh, sshd, networking, NetworkManager, ...).
Permissions: chmod/chown/chgrp -R on root/home/system is critical; -R with a world-writable
  mode elsewhere, or a non-recursive change on `/` or a system dir, is a warning.
git push: --force/-f/+refspec is a warning, critical onto main/master/production;
  --force-with-lease is info, a warning onto those branches; --delete/:branch/--mirror warning.
  `git clean -f` with -d or -x is a warning.
SQL through a client (-c/-e/--query/positional SQL, heredoc or echo piped in): DROP
  TABLE/DATABASE/SCHEMA, TRUNCATE, DELETE without WHERE are critical; other DROPs, UPDATE
  without WHERE and ALTER TABLE ... DROP are warnings. Redis FLUSHALL/FLUSHDB and Mongo
  dropDatabase()/drop()/deleteMany({}) are critical.
Infrastructure: terraform/tofu destroy (or apply -destroy), pulumi destroy, and kubectl delete
  of namespaces/nodes/PVs/CRDs or with --all/-A are critical; other kubectl delete, -target
  destroys, kubectl drain and helm uninstall are warnings; any of them with --dry-run is nothing.
"""

from __future__ import annotations

from orchestrator.core.filesystem_rules import find_risks, permission_risks, rm_risks
from orchestrator.core.host_rules import device_risks, power_and_service_risks
from orchestrator.core.infra_rules import git_risks, infra_risks
from orchestrator.core.risk_types import Invocation, Risk, program
from orchestrator.core.sql_rules import is_sql_client, nosql_risks, sql_risks, sql_texts


def command_risks(inv: Invocation) -> list[Risk]:
    """Every risk of one unwrapped command (its redirections are checked separately)."""
    if not inv.argv:
        return []
    name = program(inv.argv[0])
    if inv.argv[0].text.startswith("/etc/init.d/"):
        return power_and_service_risks(inv)
    if name == "rm":
        return rm_risks(inv)
    if name == "find":
        return find_risks(inv)
    if name in {"chmod", "chown", "chgrp"}:
        return permission_risks(inv)
    if name == "git":
        return git_risks(inv)
    if is_sql_client(inv):
        return [r for text in sql_texts(inv) for r in sql_risks(text)]
    if name in {"redis-cli", "mongo", "mongosh"}:
        return nosql_risks(inv)
    if name in {"kubectl", "oc", "helm", "terraform", "tofu", "terragrunt", "pulumi"}:
        return infra_risks(inv)
    return power_and_service_risks(inv) or device_risks(inv)
