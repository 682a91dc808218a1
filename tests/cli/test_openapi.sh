# docs/api/openapi.yaml (the management center, `keyhole serve`), docs/api/distribution.yaml
# (the distribution server, `keyhole dist serve`), docs/api/escrow.yaml (the escrow,
# `keyhole escrow serve`) and docs/api/keycenter.yaml (the key center, `keyhole keycenter serve`)
# are valid OpenAPI 3 descriptions of what each server serves:
# - Redocly's CLI (installed by scripts/install-deps into tools/node_modules) lints the three with
#   its recommended rules, every one an error (tests/cli/redocly.yaml): the structure of every
#   object (a stray key is refused), references, path parameters, security defined for every
#   operation, examples valid against their schemas; and it refuses two broken copies of
#   openapi.yaml, so the check is known to bite.
# - Every route of each server's route table (kh_sms_add_routes in src/center/sms/sms.c: the
#   operator's, the open ones and the health ones; kh_dist_service_add_routes in
#   src/center/distrib/service.c and kh_escrow_service_add_routes in src/center/escrow/service.c:
#   the open ones flagged KH_HTTP_ROUTE_OPEN, the others behind the session or the account's
#   token; and /metrics, which src/net/http_server.c answers itself) is in its spec, method and
#   path, and every operation of the spec is a route; the routes behind a token want it (the
#   bearer scheme operatorToken, sessionToken or accountToken, and a 401 answer), the open ones
#   say `security: []`. Every operator write (POST, PUT, PATCH, DELETE) of the center has an
#   Idempotency-Key header parameter, since the center keeps every write's key; the distribution
#   server takes none; every POST of the escrow behind the token has one (the escrow requires it
#   to make a key or move money) but the notice, which takes none. Copies of distribution.yaml
#   with a route dropped, an open route's `security: []` dropped and a 401 answer dropped, and
#   copies of escrow.yaml with a route dropped and a withdrawal's Idempotency-Key dropped, are
#   refused, so the comparison bites.
#
# Run by CTest as `sh test_openapi.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_openapi
kh_need awk sed grep sort node
S=$KH_SOURCE_DIR
SPEC=$S/docs/api/openapi.yaml
REDOCLY=$S/tools/node_modules/.bin/redocly
[ -x "$REDOCLY" ] ||
	kh_fail "no OpenAPI validator at tools/node_modules/.bin/redocly: run scripts/install-deps (make check does)"
# no telemetry, no update check: nothing leaves the machine
REDOCLY_TELEMETRY=off
REDOCLY_SUPPRESS_UPDATE_NOTICE=true
export REDOCLY_TELEMETRY REDOCLY_SUPPRESS_UPDATE_NOTICE

# lint FILE: status of the validator on FILE; its report in $KH_META/lint
lint()
{
	"$REDOCLY" lint --config "$S/tests/cli/redocly.yaml" --format=stylish "$1" >"$KH_META/lint" 2>&1
}

# valid FILE: the validator accepts a copy of docs/api/FILE, or the test fails with its report
valid()
{
	cp "$S/docs/api/$1" "$KH_WORK/$1" || kh_fail "copy docs/api/$1"
	if ! lint "$KH_WORK/$1"; then
		grep -vE '║|╔|╚' "$KH_META/lint" | sed 's/^/  /' >&2
		kh_fail "docs/api/$1 does not validate"
	fi
}

# route_table FILE FUNCTION LABEL: the routes FUNCTION of FILE adds, one "METHOD /path SECURITY"
# a line (path parameters as {}), and GET /metrics, which src/net/http_server.c answers itself.
# SECURITY is open for a route flagged KH_HTTP_ROUTE_OPEN or in a table of open or health routes,
# operator in the table of operator routes, LABEL in a table named plainly `routes` (the
# distribution server's session, the escrow's account).
route_table()
{
	sed -n "/^kh_err $2(/,/^}/p" "$S/$1" >"$KH_META/fn"
	[ -s "$KH_META/fn" ] || kh_fail "$2 not found in $1"
	awk -v label="$3" '
		/operator_routes\[\] = \{/ { sec = "operator" }
		/(open|health)_routes\[\] = \{/ { sec = "open" }
		/[^_]routes\[\] = \{/ { sec = label }
		/^\t\};/ { sec = "" }
		sec != "" && match($0, /\{"[A-Z]+", *"\/[^"]*"/) {
			r = substr($0, RSTART + 2, RLENGTH - 3); m = r; sub(/".*/, "", m); p = r; sub(/^[^\/]*/, "", p)
			gsub(/\{[^}]*\}/, "{}", p); print m, p, (/KH_HTTP_ROUTE_OPEN/ ? "open" : sec)
		}
	' "$KH_META/fn"
	grep -q 'strcmp(r->path, "/metrics")' "$S/src/net/http_server.c" ||
		kh_fail "src/net/http_server.c no longer answers /metrics itself: update this test"
	echo "GET /metrics open"
}

# spec_ops FILE LABEL: the operations of spec FILE, one "METHOD /path SECURITY 401 IDEM" a line:
# from paths (two-space keys), methods (four-space keys) and each operation's own
# `security: []` (SECURITY open, else LABEL, the spec's global scheme); 401 when the operation
# answers 401 (else -); idem when it has an Idempotency-Key header parameter, its own or its
# path's (else -)
spec_ops()
{
	awk -v label="$2" '
		function done() {
			if (m != "")
				print toupper(m), p, (open ? "open" : label), (has401 ? "401" : "-"), (idem || pidem ? "idem" : "-")
			m = ""
		}
		/^paths:/ { inp = 1; next }
		inp && /^[^ ]/ { done(); inp = 0 }
		!inp { next }
		/^  \/[^ ]*:$/ { done(); p = $1; sub(/:$/, "", p); gsub(/\{[^}]*\}/, "{}", p); pidem = 0; next }
		/^    (get|post|put|delete|patch|head|options):$/ { done(); m = $1; sub(/:$/, "", m); open = 0; has401 = 0; idem = 0; next }
		/^    [a-z]/ { done(); next }
		/name: Idempotency-Key$|#\/components\/parameters\/IdempotencyKey/ { if (m != "") idem = 1; else pidem = 1 }
		m != "" && /^      security: \[\]$/ { open = 1 }
		m != "" && /^        .401.:/ { has401 = 1 }
		END { done() }
	' "$1"
}

# agree ROUTES OPS: status 0 when the sorted route table ROUTES and the operations OPS (of
# spec_ops) name the same "METHOD /path SECURITY"; their differences in $KH_META/diff
agree()
{
	cut -d' ' -f1-3 "$2" | sort -u | diff "$1" - | grep '^[<>]' | sed 's/^/  /' >"$KH_META/diff"
	[ ! -s "$KH_META/diff" ]
}

# no401 OPS LABEL: status 0 when every LABEL operation of OPS answers 401; those that do not in
# $KH_META/no401
no401()
{
	awk -v label="$2" '$3 == label && $4 != "401" { print "  " $1 " " $2 }' "$1" >"$KH_META/no401"
	[ ! -s "$KH_META/no401" ]
}

# ------------------------------------------------------------------ the validator

valid openapi.yaml
valid distribution.yaml
valid escrow.yaml
valid keycenter.yaml

# the validator bites: a comma in an unquoted flow-mapping description makes a stray key ...
sed 's/^\(        name: {\$ref: .#\/components\/schemas\/Name.}\)$/\1\n        note: {type: string, description: a name, or a nickname}/' \
	"$SPEC" >"$KH_WORK/stray.yaml"
cmp -s "$SPEC" "$KH_WORK/stray.yaml" && kh_fail "could not plant a stray key in a copy of the spec"
lint "$KH_WORK/stray.yaml" && kh_fail "the validator accepted a schema with a stray key"
grep -q 'or a nickname' "$KH_META/lint" || kh_fail "the validator did not name the stray key: $(cat "$KH_META/lint")"
# ... and an operator operation without a security scheme is refused
sed '/^security:$/,/^paths:$/{/^paths:$/!d}' "$SPEC" >"$KH_WORK/nosec.yaml"
cmp -s "$SPEC" "$KH_WORK/nosec.yaml" && kh_fail "could not drop the global security of a copy of the spec"
lint "$KH_WORK/nosec.yaml" && kh_fail "the validator accepted operations without security"
grep -q 'security-defined' "$KH_META/lint" || kh_fail "the validator did not say security-defined: $(cat "$KH_META/lint")"

# ------------------------------------------------------------------ routes and spec agree

# holds NAME SOURCE FUNCTION LABEL SCHEME: docs/api/NAME and the route table FUNCTION of SOURCE
# name the same routes (LABEL those behind the token), every LABEL operation answers 401, and
# SCHEME, the spec's bearer scheme, is what every operation wants unless it says otherwise. The
# route table in $KH_META/NAME.routes, the spec's operations (of spec_ops) in $KH_META/NAME.ops.
holds()
{
	route_table "$2" "$3" "$4" >"$KH_META/$1.routes"
	sort -u "$KH_META/$1.routes" -o "$KH_META/$1.routes"
	grep -q " $4\$" "$KH_META/$1.routes" && grep -v '^GET /metrics ' "$KH_META/$1.routes" | grep -q ' open$' ||
		kh_fail "read no $4 and open routes from $3: $(cat "$KH_META/$1.routes")"
	spec_ops "$S/docs/api/$1" "$4" >"$KH_META/$1.ops"
	[ -s "$KH_META/$1.ops" ] || kh_fail "read no operation from docs/api/$1"
	if ! agree "$KH_META/$1.routes" "$KH_META/$1.ops"; then
		echo "  < the server's route table   > docs/api/$1" >&2
		cat "$KH_META/diff" >&2
		kh_fail "the route table of $3 and docs/api/$1 differ (method, path, $4 or open)"
	fi
	no401 "$KH_META/$1.ops" "$4" || kh_fail "$4 operations of docs/api/$1 without a 401 answer: $(cat "$KH_META/no401")"
	sed -n '/^security:$/,/^paths:$/p' "$S/docs/api/$1" | grep -q "^  - $5: \[\]\$" ||
		kh_fail "docs/api/$1 does not want $5 by default"
	sed -n "/^    $5:\$/,/^    [^ ]/p" "$S/docs/api/$1" | grep -q '^      scheme: bearer$' ||
		kh_fail "docs/api/$1 has no bearer scheme $5"
}

# the management center: the operator's token
holds openapi.yaml src/center/sms/sms.c kh_sms_add_routes operator operatorToken
# every operator write keeps its key (src/center/sms/sms_util.c): the spec says so on each
awk '$3 == "operator" && $1 != "GET" && $5 != "idem" { print "  " $1 " " $2 }' "$KH_META/openapi.yaml.ops" >"$KH_META/noidem"
[ ! -s "$KH_META/noidem" ] || kh_fail "operator writes without an Idempotency-Key parameter: $(cat "$KH_META/noidem")"
grep -q ' idem$' "$KH_META/openapi.yaml.ops" || kh_fail "read no Idempotency-Key parameter from docs/api/openapi.yaml"

# the distribution server: the buyer's session; the charge is idempotent by its delivery, so no
# operation takes a key the server would not keep
DSPEC=$S/docs/api/distribution.yaml
holds distribution.yaml src/center/distrib/service.c kh_dist_service_add_routes session sessionToken
grep -q ' idem$' "$KH_META/distribution.yaml.ops" &&
	kh_fail "docs/api/distribution.yaml gives an Idempotency-Key the server ignores: $(grep ' idem$' "$KH_META/distribution.yaml.ops")"

# the comparison bites: a route dropped from a copy of the spec ...
sed '/^  \/v1\/deliveries\/{id}\/package:$/,/^  \/v1\/deliveries\/{id}\/charge:$/{/charge:$/!d}' "$DSPEC" >"$KH_WORK/dropped.yaml"
cmp -s "$DSPEC" "$KH_WORK/dropped.yaml" && kh_fail "could not drop a route from a copy of docs/api/distribution.yaml"
spec_ops "$KH_WORK/dropped.yaml" session >"$KH_META/bite"
agree "$KH_META/distribution.yaml.routes" "$KH_META/bite" && kh_fail "a spec without GET /v1/deliveries/{id}/package passed as the route table"
grep -q '< GET /v1/deliveries/{}/package session$' "$KH_META/diff" ||
	kh_fail "the comparison did not name the dropped route: $(cat "$KH_META/diff")"
# ... an open route that wants the session ...
sed '/^  \/v1\/programs:$/,/^  \/v1\/account:$/{/^      security: \[\]$/d}' "$DSPEC" >"$KH_WORK/closed.yaml"
cmp -s "$DSPEC" "$KH_WORK/closed.yaml" && kh_fail "could not drop the security of GET /v1/programs in a copy"
spec_ops "$KH_WORK/closed.yaml" session >"$KH_META/bite"
agree "$KH_META/distribution.yaml.routes" "$KH_META/bite" && kh_fail "a spec wanting a session for the catalogue passed as the route table"
grep -q '> GET /v1/programs session$' "$KH_META/diff" ||
	kh_fail "the comparison did not name the catalogue: $(cat "$KH_META/diff")"
# ... and a session operation without its 401
sed '/^  \/v1\/account:$/,/^  \/v1\/deliveries:$/{/^        .401.:/d}' "$DSPEC" >"$KH_WORK/no401.yaml"
cmp -s "$DSPEC" "$KH_WORK/no401.yaml" && kh_fail "could not drop the 401 of GET /v1/account in a copy"
spec_ops "$KH_WORK/no401.yaml" session >"$KH_META/bite"
no401 "$KH_META/bite" session && kh_fail "a session operation without a 401 answer passed"
grep -qx '  GET /v1/account' "$KH_META/no401" || kh_fail "the 401 check did not name GET /v1/account: $(cat "$KH_META/no401")"

# the escrow: the account's token
ESPEC=$S/docs/api/escrow.yaml
holds escrow.yaml src/center/escrow/service.c kh_escrow_service_add_routes account accountToken

# escrow_idem OPS: status 0 when every account POST of OPS (of spec_ops) but the notice has an
# Idempotency-Key parameter (the escrow refuses to make a key or move money without one) and the
# notice has none (it would be ignored); those that do not in $KH_META/idem
escrow_idem()
{
	awk '$1 == "POST" && $3 == "account" {
		notice = ($2 ~ /\/notice$/)
		if (notice && $5 == "idem") print "  " $1 " " $2 " (an Idempotency-Key the escrow ignores)"
		if (!notice && $5 != "idem") print "  " $1 " " $2 " (without its Idempotency-Key)"
	}' "$1" >"$KH_META/idem"
	[ ! -s "$KH_META/idem" ]
}
escrow_idem "$KH_META/escrow.yaml.ops" || kh_fail "docs/api/escrow.yaml and the escrow's Idempotency-Key differ: $(cat "$KH_META/idem")"

# the comparison bites for the escrow too: a route dropped from a copy of its spec ...
sed '/^  \/v1\/purchases\/{id}\/notice:$/,/^  \/metrics:$/{/metrics:$/!d}' "$ESPEC" >"$KH_WORK/edropped.yaml"
cmp -s "$ESPEC" "$KH_WORK/edropped.yaml" && kh_fail "could not drop a route from a copy of docs/api/escrow.yaml"
spec_ops "$KH_WORK/edropped.yaml" account >"$KH_META/bite"
agree "$KH_META/escrow.yaml.routes" "$KH_META/bite" && kh_fail "an escrow spec without POST /v1/purchases/{id}/notice passed as the route table"
grep -q '< POST /v1/purchases/{}/notice account$' "$KH_META/diff" ||
	kh_fail "the comparison did not name the dropped notice: $(cat "$KH_META/diff")"
# ... and a withdrawal without its Idempotency-Key
sed '/^  \/v1\/withdrawals:$/,/^  \/v1\/listings:$/{/IdempotencyKey/d}' "$ESPEC" >"$KH_WORK/nokey.yaml"
cmp -s "$ESPEC" "$KH_WORK/nokey.yaml" && kh_fail "could not drop the Idempotency-Key of POST /v1/withdrawals in a copy"
spec_ops "$KH_WORK/nokey.yaml" account >"$KH_META/bite"
escrow_idem "$KH_META/bite" && kh_fail "a withdrawal without its Idempotency-Key passed"
grep -qx '  POST /v1/withdrawals (without its Idempotency-Key)' "$KH_META/idem" ||
	kh_fail "the Idempotency-Key check did not name POST /v1/withdrawals: $(cat "$KH_META/idem")"

# the key center: the mailbox session's token; posts, activation, acks and sessions are open
holds keycenter.yaml src/center/keycenter/service.c kh_keycenter_service_add_routes session sessionToken

kh_note "ok: $(wc -l <"$KH_META/openapi.yaml.routes") routes of the center, $(wc -l <"$KH_META/distribution.yaml.routes") of the distribution server, $(wc -l <"$KH_META/escrow.yaml.routes") of the escrow, $(wc -l <"$KH_META/keycenter.yaml.routes") of the key center, specs valid"
