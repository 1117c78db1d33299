"""Cloud CLIs pack: deletes and terminations through aws, gcloud/gsutil, az/azcopy and the
other provider CLIs, object-store syncs that delete, and PaaS teardown.

Critical: any delete/terminate/purge/destroy operation (`aws ec2 terminate-instances`,
`aws rds delete-db-instance`, `gcloud projects delete`, `az group delete`, `doctl compute droplet
delete`, `hcloud server delete`, `oci ... terminate`), recursive object deletes (`aws s3 rm
--recursive`, `gsutil rm -r`, `gcloud storage rm -r`, `mc rm --recursive`, `s3cmd del -r`,
`azcopy remove`), bucket removal with contents (`aws s3 rb --force`, `gsutil rb`, `mc rb`),
syncs that delete at the destination (`aws s3 sync --delete`, `gsutil rsync -d`, `azcopy sync
--delete-destination=true`, `mc mirror --remove`), `heroku apps:destroy`, `gh repo delete`, `gh api -X
DELETE repos/OWNER/REPO`, `bq rm -r/-d` (a dataset).
Warning: single-object deletes (`bq rm TABLE`, other `gh api -X DELETE`), stopping or rebooting
instances, removing tags or members.
Safe: describe/list/get, `--dryrun`/`--dry-run`, `--generate-cli-skeleton`, `help`.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

import re

from orchestrator.core.risk.table import Pack, Rule, positionals, tool
from orchestrator.core.risk_types import Invocation, Risk

_AWS = tool(
    "aws",
    "awslocal",
    values="--profile --region --endpoint-url --output --query --cli-input-json --cli-input-yaml --color --ca-bundle --cli-read-timeout "
    "--cli-connect-timeout --include --exclude --acl --storage-class --sse --expires --content-type --cache-control --page-size "
    "--bucket --key --instance-ids --db-instance-identifier --stack-name --function-name --table-name --name --cluster-name "
    "--repository-name --log-group-name --hosted-zone-id --user-name --role-name --policy-arn --group-name --secret-id --key-id "
    "--snapshot-id --volume-id --vpc-id --image-id --pending-window-in-days --recovery-window-in-days --delete --region-name",
)
_GCLOUD = tool(
    "gcloud",
    values="--project --zone --region --account --configuration --format --filter --verbosity --impersonate-service-account --location --quiet-mode",
)
_GSUTIL = tool("gsutil", values="-o -h -p -u")
_AZ = tool(
    "az",
    values="-g --resource-group -n --name --subscription --query -o --output --location -l --ids --account-name --container-name --source -s --pattern",
)
_AZCOPY = tool("azcopy", values="--include-pattern --exclude-pattern --log-level --from-to --include-path --exclude-path --list-of-files")
_OTHER = tool(
    "doctl",
    "hcloud",
    "linode-cli",
    "oci",
    "scw",
    "vultr-cli",
    "ibmcloud",
    "exo",
    "upcloud",
    "civo",
    "aliyun",
    "tccli",
    "openstack",
    "nova",
    "exoscale",
    values="--context -c --config --region -o --output --profile --compartment-id --auth --os-cloud --project",
)
_S3CMD = tool("s3cmd", values="-c --config --exclude --include --access_key --secret_key --host")
_MC = tool("mc", values="--config-dir -C --older-than --newer-than --json-output")
_PAAS = tool(
    "heroku",
    "fly",
    "flyctl",
    "vercel",
    "netlify",
    "railway",
    "render",
    "firebase",
    "wrangler",
    "gh",
    "glab",
    "sls",
    "serverless",
    "amplify",
    "eb",
    values="-a --app -r --remote -R --repo --project --token --scope --stage -s --region",
)

_BQ = tool("bq", values="--project_id --location --format --dataset_id --api --apilog", clusters=False)
_GH_API = tool("gh", values="-X --method -H --header -f -F --field --raw-field -q --jq -t --template --hostname -p --preview --input --cache")
# A repository or organisation itself, not something in it: `gh api -X DELETE repos/org/repo`.
_GH_WHOLE = re.compile(r"^/?(?:repos/[^/]+/[^/]+|orgs/[^/]+)/?$")
_HELP = ("--help", "-h", "help")
_AWS_SAFE = ("--dryrun", "--dry-run", "--generate-cli-skeleton", "--help")
_AWS_LIST_FIRST = (
    "Preview it first with --dryrun (s3) or --dry-run (ec2), or list what it would touch with the matching describe/list command"
)
_SNAPSHOT = "Take a snapshot or export before deleting, and name the exact resource"

# fmt: off
RULES: tuple[Rule, ...] = (
    # aws
    Rule("cloud.aws-help", _AWS, ("**", "help"), None),
    Rule("cloud.aws-s3-rm-recursive", _AWS, ("s3", "rm"), "critical", "deletes every object under the prefix", flags=("--recursive",), unless=_AWS_SAFE, suggestion="Preview it first: {cmd} --dryrun", type="cloud_destroy"),
    Rule("cloud.aws-s3-rm", _AWS, ("s3", "rm"), "warning", "deletes an object", unless=_AWS_SAFE, suggestion="Preview it first: {cmd} --dryrun", type="cloud_destroy"),
    Rule("cloud.aws-s3-rb-force", _AWS, ("s3", "rb"), "critical", "deletes a bucket and every object in it", flags=("--force",), type="cloud_destroy", suggestion="Empty and remove it only after listing it: aws s3 ls --recursive s3://BUCKET"),
    Rule("cloud.aws-s3-rb", _AWS, ("s3", "rb"), "warning", "deletes an (empty) bucket", type="cloud_destroy"),
    Rule("cloud.aws-s3-sync-delete", _AWS, ("s3", "sync"), "critical", "deletes destination objects that are not in the source", flags=("--delete",), unless=_AWS_SAFE, suggestion="Preview it first: {cmd} --dryrun", type="cloud_destroy"),
    Rule("cloud.aws-s3-mv", _AWS, ("s3", "mv"), "warning", "moves objects, removing the source", flags=("--recursive",), unless=_AWS_SAFE, type="cloud_destroy"),
    Rule("cloud.aws-minor", _AWS, ("*", "delete-tags|untag-*|remove-tags*|delete-alarms|delete-*-tag*|remove-permission|delete-login-profile|delete-access-key|delete-*-policy"), "warning", "removes settings or tags", unless=_AWS_SAFE, type="cloud_destroy"),
    Rule("cloud.aws-delete", _AWS, ("*", "delete-*|terminate-*|purge-*|remove-*|deregister-*|schedule-key-deletion|disable-key|batch-delete-*|cancel-*|release-*|close-*"), "critical", "deletes or terminates cloud resources", unless=_AWS_SAFE, suggestion=_AWS_LIST_FIRST, type="cloud_destroy"),
    Rule("cloud.aws-stop", _AWS, ("*", "stop-*|reboot-*|disable-*|detach-*|disassociate-*|revoke-*"), "warning", "stops, reboots or detaches cloud resources", unless=_AWS_SAFE, type="cloud_destroy"),
    # gcloud / gsutil
    Rule("cloud.gcloud-config", _GCLOUD, ("config|auth|components", "**"), None),
    Rule("cloud.gcloud-storage-rm-r", _GCLOUD, ("storage", "rm"), "critical", "deletes every object under the path", flags=("-r", "--recursive", "-a", "--all-versions"), unless=_HELP, type="cloud_destroy", suggestion="List it first: gcloud storage ls -r PATH"),
    Rule("cloud.gcloud-storage-rm", _GCLOUD, ("storage", "rm"), "warning", "deletes objects", unless=_HELP, type="cloud_destroy"),
    Rule("cloud.gcloud-delete", _GCLOUD, ("**", "delete|purge|destroy|remove-iam-policy-binding"), "critical", "deletes cloud resources", unless=_HELP, suggestion=_SNAPSHOT, type="cloud_destroy"),
    Rule("cloud.gcloud-stop", _GCLOUD, ("**", "stop|reset|suspend"), "warning", "stops or resets cloud resources", unless=_HELP, type="cloud_destroy"),
    Rule("cloud.gsutil-rm-r", _GSUTIL, ("rm",), "critical", "deletes every object under the path", flags=("-r", "-R", "-a"), type="cloud_destroy", suggestion="List it first: gsutil ls -r PATH"),
    Rule("cloud.gsutil-rm", _GSUTIL, ("rm",), "warning", "deletes objects", type="cloud_destroy"),
    Rule("cloud.gsutil-rb", _GSUTIL, ("rb",), "critical", "deletes a bucket", type="cloud_destroy"),
    Rule("cloud.gsutil-rsync-d", _GSUTIL, ("rsync",), "critical", "deletes destination objects that are not in the source", flags=("-d",), unless=("-n",), suggestion="Preview it first with -n: gsutil rsync -n -d ...", type="cloud_destroy"),
    # az / azcopy
    Rule("cloud.az-delete", _AZ, ("**", "delete|purge|delete-batch|remove"), "critical", "deletes Azure resources", unless=("--help", "-h"), suggestion=_SNAPSHOT, type="cloud_destroy"),
    Rule("cloud.az-stop", _AZ, ("**", "stop|deallocate|restart"), "warning", "stops or restarts Azure resources", unless=("--help", "-h"), type="cloud_destroy"),
    Rule("cloud.azcopy-remove", _AZCOPY, ("remove|rm",), "critical", "deletes blobs or files", unless=("--dry-run",), suggestion="Preview it first: {cmd} --dry-run", type="cloud_destroy"),
    Rule("cloud.azcopy-sync-delete", _AZCOPY, ("sync",), "critical", "deletes destination files that are not in the source", flags=("--delete-destination=true",), unless=("--dry-run",), suggestion="Preview it first: {cmd} --dry-run", type="cloud_destroy"),
    # other providers
    Rule("cloud.provider-delete", _OTHER, ("**", "delete|destroy|terminate|rm|remove|purge|*-delete|*-destroy|delete-*"), "critical", "deletes cloud resources", unless=("--help", "-h", "help"), suggestion=_SNAPSHOT, type="cloud_destroy"),
    Rule("cloud.provider-stop", _OTHER, ("**", "stop|shutdown|poweroff|power-off|reboot|reset"), "warning", "stops or reboots cloud resources", unless=("--help", "-h"), type="cloud_destroy"),
    Rule("cloud.s3cmd-del-r", _S3CMD, ("del|rm",), "critical", "deletes every object under the prefix", flags=("-r", "--recursive"), unless=("-n", "--dry-run"), suggestion="Preview it first: {cmd} --dry-run", type="cloud_destroy"),
    Rule("cloud.s3cmd-del", _S3CMD, ("del|rm|delete",), "warning", "deletes objects", unless=("-n", "--dry-run"), type="cloud_destroy"),
    Rule("cloud.s3cmd-rb", _S3CMD, ("rb",), "critical", "deletes a bucket", type="cloud_destroy"),
    Rule("cloud.s3cmd-sync-delete", _S3CMD, ("sync",), "critical", "deletes destination objects that are not in the source", flags=("--delete-removed",), unless=("-n", "--dry-run"), type="cloud_destroy", suggestion="Preview it first: {cmd} --dry-run"),
    Rule("cloud.mc-rb", _MC, ("rb",), "critical", "deletes a bucket", type="cloud_destroy"),
    Rule("cloud.mc-rm-r", _MC, ("rm",), "critical", "deletes every object under the path", flags=("--recursive", "-r", "--versions"), unless=("--dry-run",), suggestion="Preview it first: {cmd} --dry-run", type="cloud_destroy"),
    Rule("cloud.mc-rm", _MC, ("rm",), "warning", "deletes objects", unless=("--dry-run",), type="cloud_destroy"),
    Rule("cloud.mc-mirror-remove", _MC, ("mirror",), "critical", "deletes destination objects that are not in the source", flags=("--remove",), unless=("--dry-run",), type="cloud_destroy", suggestion="Preview it first: {cmd} --dry-run"),
    Rule("cloud.mc-admin-remove", _MC, ("admin", "**", "remove|rm|delete"), "critical", "removes users, policies or buckets on the server", type="cloud_destroy"),
    # PaaS and code hosting
    Rule("cloud.paas-destroy", _PAAS, ("apps:destroy|destroy|pg:reset|remove|rm|projects:delete|sites:delete|terminate|delete", "**"), "critical", "deletes an application, database or project", unless=("--help", "-h"), suggestion="Back up its data first (e.g. heroku pg:backups:capture) and name the exact app", type="cloud_destroy"),
    Rule("cloud.paas-apps-destroy", _PAAS, ("apps|app|repo|project|projects|volumes|volume|secrets", "destroy|delete|remove|rm"), "critical", "deletes an application, repository or its data", unless=("--help", "-h"), type="cloud_destroy"),
    Rule("cloud.bq-rm-dataset", _BQ, ("rm",), "critical", "deletes a dataset (with -r, every table in it)", flags=("-r", "--recursive", "-d", "--dataset"), type="cloud_destroy"),
    Rule("cloud.bq-rm", _BQ, ("rm",), "warning", "deletes a table, view or model", unless=("--help",), type="cloud_destroy"),
    Rule("cloud.gh-release-delete", _PAAS, ("release|run|cache|secret|variable|label", "delete"), "warning", "deletes a release, run or setting", type="cloud_destroy"),
)
# fmt: on

def gh_api_risks(inv: Invocation) -> list[Risk] | None:
    """`gh api -X DELETE PATH`: a whole repository or organisation is critical, anything else a warning."""
    args = inv.args
    words = positionals(args, _GH_API)
    method = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in {"-X", "--method"}), None)
    method = method or next((a.split("=", 1)[-1] if a.startswith("--method=") else a[2:] for a in args if a.startswith(("-XDELETE", "--method="))), None)
    if words[:1] != ["api"] or len(words) < 2 or (method or "").upper() != "DELETE":
        return None
    if _GH_WHOLE.match(words[1]):
        return [Risk("cloud_destroy", "critical", f"Command 'gh api -X DELETE {words[1]}' deletes a repository or organisation with everything in it - requires approval", ("Archive it instead: gh repo archive",))]
    return [Risk("cloud_destroy", "warning", f"Command 'gh api -X DELETE {words[1]}' deletes a GitHub resource - review before running")]


PACK = Pack(
    name="cloud",
    summary="aws, gcloud/gsutil, az/azcopy, doctl, hcloud, oci, linode-cli, scw, openstack, s3cmd, mc, bq, PaaS CLIs, gh api DELETE",
    rules=RULES,
    handlers={"gh": gh_api_risks},
)
