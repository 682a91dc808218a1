#!/bin/sh
# Our SimulCrypt builder against an independent decoder: Wireshark's `simulcrypt` dissector.
# kh_sim_pcap (tests/tools/sim_pcap.c) writes a pcap file with one TCP stream carrying every
# message type of ECMG<->SCS and EMMG<->MUX, in protocol versions 2 and 3; tshark reads the file
# (no capture, no privileges) with the stream's port decoded as simulcrypt, and must show, frame
# by frame, our version, message_type and number of parameters, with no malformed packet or
# expert warning. A control file with one broken message must be flagged, so the check can fail.
. "$KH_SOURCE_DIR/tests/cli/lib.sh"
kh_init simulcrypt_tshark
if ! command -v tshark >/dev/null 2>&1; then
	kh_note "skipped: tshark not installed (scripts/install-deps installs it)"
	exit 0
fi
kh_need awk cmp
PCAP=$(dirname "$KEYHOLE")/kh_sim_pcap
[ -x "$PCAP" ] || kh_fail "no $PCAP (built with the ts component)"
cd "$KH_WORK" || kh_fail "cd $KH_WORK"
# tshark keeps a profile under $HOME: keep it in our directory.
HOME=$KH_WORK
XDG_CONFIG_HOME=$KH_WORK
export HOME XDG_CONFIG_HOME
PORT=5000

dissect()
{
	tshark -r "$1" -d "tcp.port==$PORT,simulcrypt" -T fields -E separator=";" -e simulcrypt.version \
		-e simulcrypt.message.type -e simulcrypt.parameter.type -e _ws.malformed -e _ws.expert \
		2>"$KH_META/tshark.err" >"$2" || kh_fail "tshark -r $1: $(cat "$KH_META/tshark.err")"
}

"$PCAP" all.pcap "$PORT" >want.raw || kh_fail "kh_sim_pcap all.pcap"
# the tool's "type nparams", with the version: the first half is version 2, the second 3
awk 'BEGIN { n = 0 } { a[n++] = $0 } END { for (i = 0; i < n; i++) { split(a[i], f, " ");
	printf "%d %d %d\n", i < n / 2 ? 2 : 3, f[1], f[2] } }' want.raw >want
[ "$(wc -l <want)" -eq 54 ] || kh_fail "expected 2 x 27 messages, the tool wrote $(wc -l <want)"

dissect all.pcap got.raw
# "version;type;param,param,...;malformed;expert" -> "version type nparams" (printf reads the hex);
# any malformed or expert mark is kept as an EXPERT line
: >got
while IFS=";" read -r v t p m e; do
	[ -z "$m$e" ] || echo "EXPERT $v/$t/$p/$m/$e" >>got
	n=0
	[ -z "$p" ] || n=$(echo "$p" | awk -F, '{ print NF }')
	printf '%d %d %d\n' "$v" "$t" "$n" >>got
done <got.raw
if grep -q '^EXPERT' got; then
	kh_fail "tshark flags our messages: $(grep '^EXPERT' got | head -n 3 | tr '\n' ' ')"
fi
cmp -s want got || kh_fail "tshark decodes otherwise (want | got): $(diff want got | head -n 6 | tr '\n' ' ')"

# the control: the same stream and one broken message, which tshark must call malformed
"$PCAP" bad.pcap "$PORT" bad >/dev/null || kh_fail "kh_sim_pcap bad.pcap"
dissect bad.pcap bad.raw
[ "$(wc -l <bad.raw)" -eq 55 ] || kh_fail "the control has $(wc -l <bad.raw) frames, not 55"
head -n 54 bad.raw | grep -q malformed && kh_fail "tshark flags a good message of the control"
tail -n 1 bad.raw | grep -q '_ws.malformed' || kh_fail "tshark does not flag the broken message: $(tail -n 1 bad.raw)"

kh_note "ok: tshark decodes 54 messages (27 types x versions 2 and 3) as built, and flags the broken one"
exit 0
