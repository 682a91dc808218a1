# One name for one thing: docs/cli-options.md is the table of every option of every command, and
# it must agree with the command line itself.
#
# 1. The commands are found by walking `keyhole --help` and each group's listing, so a new
#    command is covered without editing this file. From each command's --help, every option line
#    ("  -X, --long VALUE  meaning" or "      --long VALUE  meaning") gives command, short letter
#    and long name; a line whose meaning starts "old spelling of --NAME" is an alias.
# 2. A short letter means one long option in every command that has it, and is in the table of
#    short options with that long option.
# 3. Every option row of the table names the commands whose --help has it, exactly, with the
#    same short letter (or none); every option a --help shows is in the table.
# 4. Every long option name in the sources' getopt tables (src/cli/*.c) is shown by some --help
#    and is in the table or among the old spellings: nothing is accepted and undocumented.
# 5. Every old spelling is in the doc with the command that has it, and still works: each is
#    run beside its current name and gives the same result.
#
# Run by CTest as `sh test_cli_options.sh` with KEYHOLE and KH_SOURCE_DIR set.

. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init test_cli_options

DOC=$KH_SOURCE_DIR/docs/cli-options.md
[ -s "$DOC" ] || kh_fail "missing $DOC"

# --- 1. the commands and their options, from --help --------------------------------------------
# commands_of PREFIX: the subcommands a group's help lists ("  name  help" under "commands:").
commands_of()
{
	# shellcheck disable=SC2086
	"$KEYHOLE" $1 --help | awk '/^commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } on && /^$/ { on = 0 }'
}
: >"$KH_META/cmds"
walk()
{
	subs=$(commands_of "$1")
	if [ -z "$subs" ]; then
		printf '%s\n' "$1" >>"$KH_META/cmds"
		return 0
	fi
	for s in $subs; do
		walk "${1:+$1 }$s"
	done
}
walk ""
[ "$(wc -l <"$KH_META/cmds")" -ge 20 ] || kh_fail "found only $(wc -l <"$KH_META/cmds") commands in the help"

# opts.tsv: command TAB short TAB long TAB kind (option | alias)
: >"$KH_META/opts.tsv"
while IFS= read -r cmd; do
	# shellcheck disable=SC2086
	"$KEYHOLE" $cmd --help >"$KH_META/help.txt" || kh_fail "keyhole $cmd --help failed"
	awk -v cmd="$cmd" '
		/^  -[A-Za-z], --[a-z0-9-]+/ || /^      --[a-z0-9-]+/ {
			line = $0
			short = ""
			if (match(line, /^  -[A-Za-z], /)) short = substr(line, 4, 1)
			match(line, /--[a-z0-9-]+/)
			long = substr(line, RSTART + 2, RLENGTH - 2)
			kind = (line ~ /  old spelling of --/) ? "alias" : "option"
			printf "%s\t%s\t%s\t%s\n", cmd, short, long, kind
		}' "$KH_META/help.txt" >>"$KH_META/opts.tsv"
	grep -q -- "--help" "$KH_META/help.txt" || printf '%s\t%s\t%s\t%s\n' "$cmd" h help option >>"$KH_META/opts.tsv"
done <"$KH_META/cmds"
[ "$(wc -l <"$KH_META/opts.tsv")" -ge 80 ] || kh_fail "found only $(wc -l <"$KH_META/opts.tsv") option lines"

# --- 2. a letter means one thing ---------------------------------------------------------------
awk -F'\t' '$2 != "" { print $2 "\t" $3 }' "$KH_META/opts.tsv" | sort -u >"$KH_META/letters"
dup=$(cut -f1 "$KH_META/letters" | uniq -d)
[ -z "$dup" ] || kh_fail "short option(s) meaning two things: $(grep -E "^($(printf '%s' "$dup" | tr '\n' '|'))	" "$KH_META/letters" | tr '\t\n' '= ')"
# the table of short options: "| `-X` | `--long` ..." (two pairs per row)
sed -n '/^## Short options/,/^## /p' "$DOC" | grep -o '`-[A-Za-z]` | `--[a-z0-9-]*`' |
	sed 's/`-\([A-Za-z]\)` | `--\([a-z0-9-]*\)`/\1	\2/' | sort -u >"$KH_META/doc.letters"
while IFS="$(printf '\t')" read -r l long; do
	grep -qx "$l	$long" "$KH_META/doc.letters" || kh_fail "-$l (--$long) is not in the short options of $DOC"
done <"$KH_META/letters"
while IFS="$(printf '\t')" read -r l long; do
	[ "$l" = h ] || grep -qx "$l	$long" "$KH_META/letters" ||
		kh_fail "$DOC lists -$l as --$long, which no --help shows"
done <"$KH_META/doc.letters"

# --- 3. the table of every option agrees with the help, both ways ------------------------------
# doc.rows: long TAB short TAB commands (comma separated), from "| `--long VALUE` | `-X` | meaning | cmds |"
sed -n '/^## Every option/,/^## /p' "$DOC" | grep '^| `--' | awk '
	{
		line = $0
		gsub(/\\\|/, "", line) # an escaped | inside a cell
		n = split(line, f, "|")
		long = f[2]; sub(/^ *`--/, "", long); sub(/[ `].*/, "", long)
		short = f[3]; gsub(/[` -]/, "", short)
		cmds = f[5]; sub(/^ */, "", cmds); sub(/ *$/, "", cmds)
		printf "%s\t%s\t%s\n", long, short, cmds
	}' >"$KH_META/doc.rows"
[ "$(wc -l <"$KH_META/doc.rows")" -ge 60 ] || kh_fail "read only $(wc -l <"$KH_META/doc.rows") rows from $DOC"
dup=$(cut -f1 "$KH_META/doc.rows" | sort | uniq -d)
[ -z "$dup" ] || kh_fail "$DOC lists an option twice: $dup"
# the old spellings (and obsolete options) the doc lists
sed -n '/^## Old spellings/,/^## \|^Changed/p' "$DOC" | grep -o '^| `--[a-z0-9-]*' | sed 's/^| `--//' |
	sort -u >"$KH_META/doc.old"
# the commands the help shows for each long option (aliases apart)
awk -F'\t' '$4 == "option" { print $3 "\t" $2 "\t" $1 }' "$KH_META/opts.tsv" | sort >"$KH_META/help.rows"
for long in $(cut -f1 "$KH_META/help.rows" | sort -u); do
	row=$(awk -F'\t' -v l="$long" '$1 == l' "$KH_META/doc.rows")
	[ -n "$row" ] || ! grep -qx "$long" "$KH_META/doc.old" || continue # an obsolete option
	[ -n "$row" ] || kh_fail "--$long (keyhole $(awk -F'\t' -v l="$long" '$1 == l { print $3; exit }' "$KH_META/help.rows")) is not in $DOC"
	dshort=$(printf '%s' "$row" | cut -f2)
	dcmds=$(printf '%s' "$row" | cut -f3)
	[ "$long" = help ] && continue
	want=$(awk -F'\t' -v l="$long" '$1 == l { print $3 }' "$KH_META/help.rows" | sort -u | paste -sd, | sed 's/,/, /g')
	got=$(printf '%s' "$dcmds" | tr ',' '\n' | sed 's/^ *//; s/ *$//' | sort -u | paste -sd, | sed 's/,/, /g')
	[ "$want" = "$got" ] || kh_fail "--$long: $DOC says commands '$got', the help shows it in '$want'"
	hshorts=$(awk -F'\t' -v l="$long" '$1 == l { print ($2 == "" ? "none" : $2) }' "$KH_META/help.rows" | sort -u | paste -sd,)
	[ "$hshorts" = "${dshort:-none}" ] ||
		kh_fail "--$long: $DOC gives short '${dshort:-none}', the help shows '$hshorts'"
done
while IFS="$(printf '\t')" read -r long _ _; do
	grep -q "^$long	" "$KH_META/help.rows" || kh_fail "$DOC lists --$long, which no --help shows as an option"
done <"$KH_META/doc.rows"

# --- 4. nothing accepted and undocumented ------------------------------------------------------
grep -ho '{"[a-z0-9-]*", *\(no\|required\|optional\)_argument' "$KH_SOURCE_DIR"/src/cli/*.c |
	sed 's/{"\([a-z0-9-]*\)".*/\1/' | sort -u >"$KH_META/src.longs"
[ "$(wc -l <"$KH_META/src.longs")" -ge 60 ] || kh_fail "read only $(wc -l <"$KH_META/src.longs") options from src/cli"
while IFS= read -r long; do
	cut -f3 "$KH_META/opts.tsv" | grep -qx "$long" || kh_fail "src/cli accepts --$long, which no --help shows"
	grep -q "^$long	" "$KH_META/doc.rows" || grep -qx "$long" "$KH_META/doc.old" ||
		kh_fail "src/cli accepts --$long, which $DOC does not list"
done <"$KH_META/src.longs"

# --- 5. the old spellings: in the doc with their command, and working --------------------------
awk -F'\t' '$4 == "alias" { print $3 "\t" $1 }' "$KH_META/opts.tsv" | sort -u >"$KH_META/aliases"
[ -s "$KH_META/aliases" ] || kh_fail "no --help lists an old spelling"
while IFS="$(printf '\t')" read -r long cmd; do
	sed -n '/^## Old spellings/,/^Changed/p' "$DOC" | grep "^| \`--$long " | grep -q "| $cmd |" ||
		kh_fail "keyhole $cmd --help lists the old spelling --$long; $DOC does not"
done <"$KH_META/aliases"

cd "$KH_WORK" || kh_fail "cd $KH_WORK"
kh_expect_ok authority init auth
kh_expect_ok card issue --authority auth --role cam --out cam.card
kh_expect_ok card issue --authority auth --role card --ua 0x2A --out card.card
kh_expect_ok card issue --authority auth --role decoder --out dec.card
# pair --root is --authority
kh_expect_ok pair --root auth --cam cam.card --card card.card --decoder dec.card --count 1
cp "$KH_OUT" "$KH_META/pair.root"
kh_expect_ok pair --authority auth --cam cam.card --card card.card --decoder dec.card --count 1
cmp -s "$KH_OUT" "$KH_META/pair.root" || kh_fail "pair --root and pair --authority print different things"
kh_expect_fail pair --root auth/next-ua --cam cam.card --card card.card
kh_expect_fail pair --authority auth/next-ua --cam cam.card --card card.card
# headend emm --card UA is --ua UA: the same card, the next sequence number each
kh_expect_ok headend keys init --authority auth --out h.keys
kh_expect_ok headend emm --keys h.keys --card 0000002A --credit 5:1 --out a.emm
kh_out_has "card 0000002A, seq 1"
kh_expect_ok headend emm --keys h.keys --ua 0x2a --credit 5:2 --out b.emm
kh_out_has "card 0000002A, seq 2"
kh_expect_usage headend emm --keys h.keys --card 0000002A --ua 0000002A --credit 5:3 --out c.emm
# headend keys rotate --id N is --key-id N
kh_expect_ok headend keys rotate --keys h.keys --id 1
kh_out_has "service key 1 version 2"
kh_expect_ok headend keys rotate --keys h.keys --key-id 1
kh_out_has "service key 1 version 3"
# headend keys import --store DB is --db DB (read, never made: the same refusal for both)
kh_expect_fail headend keys import --keys h.keys --store none.db
kh_err_has "none\.db: no such database"
kh_expect_fail headend keys import --keys h.keys --db none.db
kh_err_has "none\.db: no such database"
[ ! -e none.db ] || kh_fail "keys import made the database it was to read"
# decoder init --dir DIR is --m1 DIR
kh_expect_ok decoder init --dir m1a
[ -s m1a/m1.key ] || kh_fail "decoder init --dir made no key"
kh_expect_ok decoder init --m1 m1b
[ -s m1b/m1.key ] || kh_fail "decoder init --m1 made no key"
kh_expect_ok decoder m1 --m1 m1a
kh_expect_usage decoder m1 --dir m1a

# numbers: decimal or 0x, never octal
for n in 010:10 08:8 0x3:3 0X0a:10; do
	kh_expect_ok pair --cam cam.card --card card.card --count "${n%%:*}"
	got=$(grep -c 'sealed command' "$KH_OUT")
	[ "$got" -eq "${n#*:}" ] || kh_fail "--count ${n%%:*} ran $got sealed commands, not ${n#*:}"
done
for n in 0x 0x1g 1e3 +1 " 1" 1000001; do
	kh_expect_usage pair --cam cam.card --card card.card --count "$n"
done

# a removed short letter is refused, not read as something else
kh_expect_usage decoder connect -u http://127.0.0.1:1 --card card.card --m1 m1a
kh_expect_usage serve -d center.db --authority auth
kh_expect_usage headend keys rotate --keys h.keys -i 1
[ ! -e center.db ] || kh_fail "a refused serve made its database"

kh_note "ok"
