#!/bin/sh
# A throwaway PostgreSQL cluster for the tests: never the system's own cluster, no TCP port.
#
#   pgtmp.sh start DIR   initdb into DIR/data and start postgres on a UNIX socket in DIR/sock
#                        only (listen_addresses=''), fsync on; prints the cluster's admin URL,
#                        postgresql:///postgres?host=DIR/sock&port=5432&user=postgres
#   pgtmp.sh stop DIR    stop it (pg_ctl stop -m fast) and remove DIR; nothing there is fine
#   pgtmp.sh url DIR     print the URL again
#
# PostgreSQL refuses to run as root. Run as root (CI), the cluster belongs to the user
# `postgres` that Debian's postgresql package creates: DIR itself stays root's (mode 0711, so
# that user can reach inside it), DIR/data and DIR/sock are made that user's, and initdb,
# postgres and pg_ctl run through runuser. Run as anyone else, they run as that user. A DIR left
# by an interrupted run is stopped and removed before a new start. The binaries are the newest
# found in /usr/lib/postgresql/*/bin (or PG_BINDIR). DIR must be short: the socket path
# DIR/sock/.s.PGSQL.5432 must fit in 107 bytes.
set -eu

usage() {
	echo "usage: pgtmp.sh start|stop|url DIR" >&2
	exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
case $2 in
/*) dir=$2 ;;
*) dir=$(pwd)/$2 ;;
esac

bindir=${PG_BINDIR:-}
if [ -z "$bindir" ]; then
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n); do
		[ -x "$d/initdb" ] && bindir=$d
	done
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
	echo "pgtmp: no PostgreSQL server found in /usr/lib/postgresql/*/bin (run scripts/install-deps)" >&2
	exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
	owner=postgres
	if ! id -u "$owner" >/dev/null 2>&1; then
		echo "pgtmp: running as root, and there is no user '$owner' to run PostgreSQL as" >&2
		exit 1
	fi
	as_owner() { runuser -u "$owner" -- "$@"; }
else
	owner=$(id -un)
	as_owner() { "$@"; }
fi

url() {
	echo "postgresql:///postgres?host=$dir/sock&port=5432&user=postgres"
}

stop() {
	if [ -f "$dir/data/postmaster.pid" ]; then
		as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 ||
			echo "pgtmp: pg_ctl stop failed in $dir/data (removing it all the same)" >&2
	fi
	rm -rf "$dir"
}

case $cmd in
url)
	url
	;;
stop)
	stop
	;;
start)
	if [ ${#dir} -gt 80 ]; then
		echo "pgtmp: $dir is too long for a UNIX socket path" >&2
		exit 1
	fi
	[ -e "$dir" ] && stop
	mkdir -p "$dir"
	chmod 0711 "$dir"
	mkdir -m 0700 "$dir/data"
	mkdir -m 0755 "$dir/sock"
	[ "$(id -u)" -eq 0 ] && chown "$owner:" "$dir/data" "$dir/sock"
	# initdb's own writes skip fsync (a throwaway cluster); the server below runs with fsync on.
	if ! as_owner "$bindir/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
		--no-sync >"$dir/initdb.log" 2>&1; then
		cat "$dir/initdb.log" >&2
		stop
		exit 1
	fi
	as_owner sh -c 'cat >>"$1"' sh "$dir/data/postgresql.conf" <<EOF
# pgtmp.sh: a throwaway test cluster, reachable only through its UNIX socket
listen_addresses = ''
unix_socket_directories = '$dir/sock'
port = 5432
fsync = on
synchronous_commit = on
max_connections = 200
shared_buffers = 32MB
log_min_messages = warning
EOF
	if ! as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 start >/dev/null; then
		cat "$dir/data/server.log" >&2 || true
		stop
		exit 1
	fi
	url
	;;
*)
	usage
	;;
esac
