"""Risk rule packs, one module per domain, each a declarative table (`table.Rule` rows) plus
the few checks a table cannot say (path classes, SQL text, partition scripts).

    table        Tool / Rule / Pack: how a command line is read and matched
    paths        path normalisation (`..`, `~`, `$HOME`, `$TMPDIR`, the working directory) and classes
    filesystem   rm, find -delete, shred/srm, mv of system paths, rsync/rclone deletes, truncation
    disks        mkfs, dd, partition tools, wipefs, LVM/RAID/ZFS/btrfs, nvme, secure erase
    vcs          git (reset --hard, clean, checkout --, push --force, history rewrites), hg, svn
    containers   docker/podman/nerdctl prune and rm, compose down -v
    kubernetes   kubectl delete/drain/scale to zero, helm uninstall
    cloud        aws, gcloud/gsutil, az/azcopy, doctl, hcloud, oci, mc, s3cmd ...
    iac          terraform/tofu/terragrunt, pulumi, cdk, serverless, ansible ad-hoc modules
    databases    SQL through clients, dropdb, mysqladmin, redis-cli, mongo, etcdctl ...
    vms          Proxmox, libvirt, VirtualBox, Vagrant, LXD/Incus; backups: restic, borg, duplicity ...
    network      iptables/nft/ufw/firewalld flushes, links and routes taken down
    users        users, groups, passwords, crontab, chmod/chown/setfacl on system paths
    packages     apt/dnf/yum/rpm/dpkg/pacman/apk removing essential packages or skipping dependencies; npm unpublish
    power        shutdown/reboot/halt, systemctl power verbs, sysrq, services stopped, kill of init

`orchestrator.core.risk_rules.command_risks` sends each command to the packs that know its program.
"""
