# docs/api/openapi.yaml is a valid OpenAPI 3 description of what the management center serves:
# - Redocly's CLI (installed by scripts/install-deps into tools/node_modules) lints it with its
#   recommended rules, every one an error (tests/cli/redocly.yaml): the structure of every object
#   (a stray key is refused), references, path parameters, security defined for every operation;
#   and it refuses two broken copies, so the check is known to bite.
# - Every route of the server's route table (kh_sms_add_routes in src/center/sms/sms.c: the
#   operator's, the open ones and the health ones; and /metrics, which src/net/http_server.c
#   answers itself) is in the spec, method and path, and every operation of the spec is a route;
#   the operator's routes want the bearer token (operatorToken, and a 401 answer), the open and
#   health routes say `security: []`; every operator write (POST, PUT, PATCH, DELETE) has an
#   Idempotency-Key header parameter, since the center keeps every write's key.
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

# ------------------------------------------------------------------ the validator

cp "$SPEC" "$KH_WORK/openapi.yaml" || kh_fail "copy $SPEC"
if ! lint "$KH_WORK/openapi.yaml"; then
	grep -vE '║|╔|╚' "$KH_META/lint" | sed 's/^/  /' >&2
	kh_fail "docs/api/openapi.yaml does not validate"
fi

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

# the route table: "METHOD /path SECURITY" (path parameters as {}; SECURITY operator or open)
ROUTES=$S/src/center/sms/sms.c
sed -n '/^kh_err kh_sms_add_routes(/,/^}/p' "$ROUTES" >"$KH_META/fn"
[ -s "$KH_META/fn" ] || kh_fail "kh_sms_add_routes not found in src/center/sms/sms.c"
awk '
	/operator_routes\[\] = \{/ { sec = "operator" }
	/open_routes\[\] = \{/ { sec = "open" }
	/health_routes\[\] = \{/ { sec = "open" }
	/^\t\};/ { sec = "" }
	sec != "" && match($0, /\{"[A-Z]+", *"\/[^"]*"/) {
		r = substr($0, RSTART + 2, RLENGTH - 3); m = r; sub(/".*/, "", m); p = r; sub(/^[^\/]*/, "", p)
		gsub(/\{[^}]*\}/, "{}", p); print m, p, sec
	}
' "$KH_META/fn" >"$KH_META/routes"
grep -q ' operator$' "$KH_META/routes" && grep -q ' open$' "$KH_META/routes" ||
	kh_fail "read no operator and open routes from kh_sms_add_routes: $(cat "$KH_META/routes")"
grep -q 'strcmp(r->path, "/metrics")' "$S/src/net/http_server.c" ||
	kh_fail "src/net/http_server.c no longer answers /metrics itself: update this test"
echo "GET /metrics open" >>"$KH_META/routes"
sort -u "$KH_META/routes" -o "$KH_META/routes"

# the spec: the same, from paths (two-space keys), methods (four-space keys) and each
# operation's own `security: []`; an operator operation must also answer 401, and an operator
# write document its Idempotency-Key (a header parameter of the path or of the operation)
awk '
	function done() {
		if (m != "")
			print toupper(m), p, (open ? "open" : "operator"), (has401 ? "401" : "-"), (idem || pidem ? "idem" : "-")
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
' "$SPEC" >"$KH_META/spec.full"
[ -s "$KH_META/spec.full" ] || kh_fail "read no operation from docs/api/openapi.yaml"
cut -d' ' -f1-3 "$KH_META/spec.full" | sort -u >"$KH_META/spec"
if ! cmp -s "$KH_META/routes" "$KH_META/spec"; then
	echo "  < the server's route table   > docs/api/openapi.yaml" >&2
	diff "$KH_META/routes" "$KH_META/spec" | grep '^[<>]' | sed 's/^/  /' >&2
	kh_fail "the route table and the spec differ (method, path, operator or open)"
fi
awk '$3 == "operator" && $4 != "401" { print "  " $1 " " $2 }' "$KH_META/spec.full" >"$KH_META/no401"
[ ! -s "$KH_META/no401" ] || kh_fail "operator operations without a 401 answer: $(cat "$KH_META/no401")"
# every operator write keeps its key (src/center/sms/sms_util.c): the spec says so on each
awk '$3 == "operator" && $1 != "GET" && $5 != "idem" { print "  " $1 " " $2 }' "$KH_META/spec.full" >"$KH_META/noidem"
[ ! -s "$KH_META/noidem" ] || kh_fail "operator writes without an Idempotency-Key parameter: $(cat "$KH_META/noidem")"
grep -q ' idem$' "$KH_META/spec.full" || kh_fail "read no Idempotency-Key parameter from docs/api/openapi.yaml"
grep -q '^    operatorToken:$' "$SPEC" && grep -q '^      scheme: bearer$' "$SPEC" ||
	kh_fail "docs/api/openapi.yaml has no bearer scheme operatorToken"

kh_note "ok: $(wc -l <"$KH_META/routes") routes, spec valid"
