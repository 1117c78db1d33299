#!/bin/sh
# Write the route credentials of a Nexus NATS cluster (included by the cluster
# block of ops/nats-cluster-{1,2,3}.conf as nexus-routes.conf) to stdout:
# a fresh random route password, and one route URL per member that carries it.
#
#   ops/nexus-routes-conf.sh nats-1 nats-2 nats-3 > nexus-routes.conf
#   ops/nexus-routes-conf.sh 10.0.0.1:6222 10.0.0.2:6222 10.0.0.3:6222 > nexus-routes.conf
#
# Give the same file to all three members (a route to itself is ignored). It is a
# secret: install it 0640 root:nats. Running it again makes a new password, so
# replace the file on every member together.
#
# The password is in clear on purpose: a server also dials peers it learns from
# the others with the password from `authorization`, so a bcrypt hash there
# would break those routes.
set -eu

if [ "$#" -eq 0 ]; then
	echo "usage: $0 HOST[:PORT] HOST[:PORT] HOST[:PORT]   (port 6222 when left out)" >&2
	exit 2
fi

# 32 random bytes as hex: URL-safe, so it goes into the route URLs unescaped.
password=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
user=nexus-route

echo "# Route credentials of the Nexus NATS cluster, written by ops/nexus-routes-conf.sh. Secret."
echo "authorization {"
echo "  user: $user"
echo "  password: \"$password\""
echo "}"
echo "routes: ["
for member in "$@"; do
	case "$member" in
	*:*) ;;
	*) member="$member:6222" ;;
	esac
	echo "  \"nats-route://$user:$password@$member\""
done
echo "]"
