"""Network and firewall pack: flushing rule sets, default-deny policies, links and routes taken down.

On a node reached over the network, these cut the operator (and Nexus) off, or open it up.
Critical: `iptables/ip6tables -F/-X/-Z` (all chains), a DROP/REJECT default policy, `nft flush
ruleset` / `delete table`, `ufw reset` / `ufw disable`, `firewall-cmd --panic-on`, `pfctl -F all`,
`ip link set DEV down`, `ip addr flush`, `ip route flush` / `del default`, `ifdown`, `nmcli
networking off`, `nmcli con down/delete`, `route del default`, `ifconfig DEV 0.0.0.0`, a DROP/REJECT
rule for port 22 (`iptables -I INPUT -p tcp --dport 22 -j DROP`) from any source.
Warning: deleting single rules (`iptables -D`, `ufw delete`, `nft delete rule`), appending a
blanket DROP (also `-s 0.0.0.0/0`), `iptables-restore` from a file, `firewall-cmd --remove-*` with `--permanent`.
Safe: listing (`-L`, `-S`, `list ruleset`, `ufw status`, `ip addr show`), `iptables-save`.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

from orchestrator.core.risk.table import Pack, Rule, tool

_IPT = tool(
    "iptables",
    "ip6tables",
    "iptables-legacy",
    "iptables-nft",
    "ip6tables-legacy",
    "ebtables",
    "arptables",
    values="-t --table -w --wait -W",
)
_NFT = tool("nft", values="-f --file -I --includepath")
_UFW = tool("ufw")
_FWCMD = tool("firewall-cmd", values="--zone")
_PFCTL = tool("pfctl", values="-a -f -t")
_IP = tool("ip", values="-n -netns -f -family")
_NMCLI = tool("nmcli", values="-f --fields -g --get-values -w --wait")
_IFDOWN = tool("ifdown", "ifconfig", "route", "ipset", "tc", "wg-quick", "netplan")
_SAVE_FIRST = "Save the current rules first (iptables-save > rules.backup) and schedule a restore in case you lose access: at now + 5 minutes <<< 'iptables-restore < rules.backup'"
_CONSOLE = "Keep a console (IPMI/serial) session open: over SSH this cuts your own connection"

# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("network.iptables-list", _IPT, (), None, flags=("-L", "--list", "-S", "--list-rules", "-C", "--check", "-h", "--help")),
    Rule("network.iptables-flush", _IPT, (), "critical", "deletes every firewall rule or chain", flags=("-F", "--flush", "-X", "--delete-chain"), suggestion=_SAVE_FIRST, type="network_cut"),
    Rule("network.iptables-policy-drop", _IPT, ("**", "drop|reject"), "critical", "sets a default policy that drops traffic, SSH included", flags=("-P", "--policy"), suggestion=_SAVE_FIRST, type="network_cut"),
    Rule("network.iptables-delete", _IPT, (), "warning", "deletes or replaces a firewall rule", flags=("-D", "--delete", "-R", "--replace", "-Z", "--zero"), suggestion=_SAVE_FIRST, type="network_cut"),
    Rule("network.iptables-drop-ssh", _IPT, ("**", "drop|reject"), "critical", "blocks SSH, the way in to the node", flags=("--dport=22", "--dport=ssh", "--dports=22", "--destination-port=22"), unless=("-s", "--source", "-D", "--delete"), suggestion=_SAVE_FIRST, type="network_cut"),
    Rule("network.iptables-drop-any-source", _IPT, ("**", "drop|reject"), "warning", "adds a rule that drops traffic from every address", flags=("-s=0.0.0.0/0", "--source=0.0.0.0/0", "-s=0/0"), unless=("--dport", "--sport", "-p", "--protocol", "-m", "--match", "-d", "--destination"), type="network_cut"),
    Rule("network.iptables-drop-all", _IPT, ("**", "drop|reject"), "warning", "adds a rule that drops all traffic of a chain", flags=("-A", "--append", "-I", "--insert"), unless=("-s", "--source", "--dport", "--sport", "-p", "--protocol", "-m", "--match", "-d", "--destination"), type="network_cut"),
    Rule("network.nft-flush", _NFT, ("flush|delete", "ruleset|table|chain"), "critical", "deletes firewall rules", unless=("-c", "--check"), suggestion="Save the rules first: nft list ruleset > ruleset.backup", type="network_cut"),
    Rule("network.nft-delete-rule", _NFT, ("delete|destroy|flush", "**"), "warning", "deletes firewall rules or sets", unless=("-c", "--check"), type="network_cut"),
    Rule("network.ufw-reset", _UFW, ("reset|disable",), "critical", "removes or switches off every firewall rule", suggestion="Check the rules first: ufw status numbered", type="network_cut"),
    Rule("network.ufw-default-deny", _UFW, ("default", "deny|reject", "incoming|**"), "warning", "denies incoming connections not explicitly allowed (check SSH is allowed)", type="network_cut"),
    Rule("network.ufw-deny", _UFW, ("deny|reject",), "warning", "blocks connections (check SSH stays allowed)", type="network_cut"),
    Rule("network.ufw-delete", _UFW, ("delete",), "warning", "deletes a firewall rule", unless=("--dry-run",), type="network_cut"),
    Rule("network.firewalld-panic", _FWCMD, (), "critical", "drops all traffic or rewrites the firewall", flags=("--panic-on", "--complete-reload", "--set-default-zone=drop", "--set-default-zone=block"), type="network_cut"),
    Rule("network.firewalld-remove", _FWCMD, (), "warning", "removes firewall rules", flags=("--remove-*", "--delete-*"), type="network_cut"),
    Rule("network.pfctl-flush", _PFCTL, (), "critical", "flushes firewall rules or states", flags=("-F", "-d"), type="network_cut"),
    Rule("network.ip-link-down", _IP, ("link|l|li|lin", "set|s|se", "**", "down"), "critical", "takes a network interface down", suggestion=_CONSOLE, type="network_cut"),
    Rule("network.ip-flush", _IP, ("addr|address|a|route|r|ro|rule|link", "flush|f|fl"), "critical", "removes every address, route or rule of the node", suggestion=_CONSOLE, type="network_cut"),
    Rule("network.ip-del-default", _IP, ("route|r|ro", "del|delete|d", "default|0.0.0.0/0"), "critical", "removes the default route", suggestion=_CONSOLE, type="network_cut"),
    Rule("network.ip-del", _IP, ("addr|address|a|route|r|ro|rule|link", "del|delete|d"), "warning", "removes an address, route or link", type="network_cut"),
    Rule("network.ifdown", tool("ifdown"), (), "critical", "takes a network interface down", suggestion=_CONSOLE, type="network_cut"),
    Rule("network.ifconfig-down", tool("ifconfig"), ("*", "down"), "critical", "takes a network interface down", suggestion=_CONSOLE, type="network_cut"),
    Rule("network.ifconfig-no-address", tool("ifconfig"), ("*", "0.0.0.0|0"), "critical", "removes the interface's address", suggestion=_CONSOLE, type="network_cut"),
    Rule("network.route-del", tool("route", values="-A"), ("del|delete|flush",), "critical", "removes routes", suggestion=_CONSOLE, type="network_cut"),
    Rule("network.nmcli-off", _NMCLI, ("networking|n|net", "off"), "critical", "switches networking off", suggestion=_CONSOLE, type="network_cut"),
    Rule("network.nmcli-radio-off", _NMCLI, ("radio|r", "**", "off"), "warning", "switches radios off", type="network_cut"),
    Rule("network.nmcli-down", _NMCLI, ("connection|con|c|device|dev|d", "down|delete|del|disconnect|dis"), "critical", "takes a connection down or deletes it", suggestion=_CONSOLE, type="network_cut"),
    Rule("network.ipset-destroy", tool("ipset"), ("destroy|x|flush|-x|-f",), "warning", "deletes IP sets used by firewall rules", type="network_cut"),
    Rule("network.tc-loss", tool("tc", values="-n -netns"), ("**", "loss"), "warning", "injects packet loss", type="network_cut"),
    Rule("network.wg-down", tool("wg-quick"), ("down",), "warning", "takes a VPN tunnel down", type="network_cut"),
)
# fmt: on

PACK = Pack(
    name="network",
    summary="iptables/ip6tables/nft/ufw/firewalld/pf flushes and policies; ip/ifdown/nmcli links and routes down",
    rules=RULES,
)
