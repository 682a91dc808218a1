/* keyhole headend emm: one EMM section for a card, a group or all cards (keyhole/headend.h). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/headend.h"
#include "cli/headend.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/authority.h"
#include "keyhole/headend.h"
#include "keyhole/store.h"
#include "keyhole/ts.h"

static const char emm_help[] =
	"usage: keyhole headend emm --keys FILE (--ua UA | --group G | --all)\n"
	"           [--entitle PRODUCT:START:END]... [--revoke PRODUCT]... [--credit AMOUNT:RELOADID]...\n"
	"           [--service-keys] [--set-group G] [--set-all-key] [--auth-export 0|1]\n"
	"           [--request-export] [--revoked VERSION:UA,...] --out FILE\n"
	"\n"
	"Make one EMM section for one card (sealed under its personal key), one group or all cards,\n"
	"with the next sequence number of that address; the key file is updated before the EMM is\n"
	"written. EMM files can be concatenated (cat) into the file 'headend scramble --emm' plays.\n"
	"\n"
	"  -k, --keys FILE           the headend key file (locked while it is updated)\n"
	"  -u, --ua UA               a card's unique address: 8 hexadecimal digits as 'card info'\n"
	"                            prints it (0000000C), or 0x and 1 to 8 digits (0xC)\n"
	"  -g, --group G             a group number\n"
	"  -A, --all                 every card\n"
	"      --entitle P:S:E       right to product P from S to E: Unix seconds, now, now+N, now-N,\n"
	"                            or +N (N seconds from now for S, after S for E): 7:now:+86400\n"
	"      --revoke P            remove every right to product P\n"
	"      --credit AMOUNT:ID    add credit, once per reload id\n"
	"      --service-keys        every service key of the key file (after an EMM with the\n"
	"                            operator's ECM and EMM signers)\n"
	"      --set-group G         put the card in group G, with its key (--ua only)\n"
	"      --set-all-key         give the card the broadcast key (--ua only)\n"
	"      --auth-export 0|1     forbid or allow the card to export its usage data\n"
	"      --request-export      ask the card to export its usage data now\n"
	"      --revoked V:UA,...    the operator's list of revoked CAMs, version V (newer replaces\n"
	"                            older; at most 32; V: alone empties it; each UA as --ua)\n"
	"  -o, --out FILE            where to write the EMM section\n"
	"      --card UA             old spelling of --ua\n"
	"\n"
	"--credit, --auth-export and --request-export go to one card only: a card accepts them\n"
	"only under its own key. Group and broadcast EMMs are signed with the key file's EMM signer.\n"
	"--entitle, --revoke and --credit may be repeated; any other option that takes a value may\n"
	"be given once.\n";

/* ---- emm ---- */

/* "V:" or "V:UA,UA,...": the version and the list (possibly empty) into f[0], f[1]. */
static int split_revoked(const char *s, char *buf, size_t cap, char *f[2])
{
	char *colon;

	if (strlen(s) >= cap)
		return -1;
	strcpy(buf, s);
	if ((colon = strchr(buf, ':')) == NULL)
		return -1;
	*colon = 0;
	f[0] = buf;
	f[1] = colon + 1;
	return 0;
}

int kh__cli_headend_emm(int argc, char **argv)
{
	enum { O_ENTITLE = 256, O_REVOKE, O_CREDIT, O_SKEYS, O_SETGROUP, O_SETALL, O_AUTH, O_REQ, O_REVOKED };
	static const struct option opts[] = {
		{"keys", required_argument, NULL, 'k'},        {"ua", required_argument, NULL, 'u'},
		{"card", required_argument, NULL, 'u'}, /* old spelling of --ua */
		{"group", required_argument, NULL, 'g'},       {"all", no_argument, NULL, 'A'},
		{"entitle", required_argument, NULL, O_ENTITLE}, {"revoke", required_argument, NULL, O_REVOKE},
		{"credit", required_argument, NULL, O_CREDIT}, {"service-keys", no_argument, NULL, O_SKEYS},
		{"set-group", required_argument, NULL, O_SETGROUP}, {"set-all-key", no_argument, NULL, O_SETALL},
		{"auth-export", required_argument, NULL, O_AUTH}, {"request-export", no_argument, NULL, O_REQ},
		{"revoked", required_argument, NULL, O_REVOKED},
		{"out", required_argument, NULL, 'o'},         {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	static const char *const P = "headend emm";
	const char *percard = NULL;
	const char *path = NULL, *out = NULL;
	struct kh_headend_emm_req req = {0};
	uint8_t cmds[KH_EMM_CMDS_MAX], sec[3 * KH_EMM_MAX];
	char buf[512], *f[3];
	int naddr = 0, c, req_export = 0, pr;
	unsigned char seen[512] = {0};
	uint32_t a32, b32, seq = 0;
	uint64_t s64, e64;
	size_t len = 0, line = 0, first = 0;
	struct kh_wr w;
	kh_err r;

	kh_wr_init(&w, cmds, sizeof cmds);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+k:u:g:Ao:h", opts, NULL)) != -1) {
		const char *dup = c == O_ENTITLE || c == O_REVOKE || c == O_CREDIT ? NULL : kh_cli_twice(opts, c, seen);
		if (dup) {
			kh_wipe(cmds, sizeof cmds);
			return kh_cli_usage(P, "--%s is given twice (it takes one value)", dup);
		}
		switch (c) {
		case 'k': path = optarg; break;
		case 'o': out = optarg; break;
		case 'u':
			if (kh_cli_parse_ua(optarg, &req.addr) != 0)
				return kh_cli_usage(P, "--ua takes a unique address: %s", KH_CLI_UA_FORMS);
			req.type = KH_EMM_UNIQUE;
			naddr++;
			break;
		case 'g':
			if (kh__cli_u32(optarg, &req.addr) != 0)
				return kh_cli_usage(P, "--group takes a number");
			req.type = KH_EMM_GROUP;
			naddr++;
			break;
		case 'A':
			req.type = KH_EMM_ALL;
			req.addr = 0;
			naddr++;
			break;
		case O_ENTITLE:
			if (kh__cli_split(optarg, buf, sizeof buf, f, 3) != 0 || kh__cli_u32(f[0], &a32) != 0 ||
			    (pr = kh_cli_parse_period(f[1], f[2], &s64, &e64)) == -1)
				return kh_cli_usage(P, "--entitle takes PRODUCT:START:END; START and END are Unix "
						       "seconds, now, now+N or now-N, or +N (from now for START, "
						       "from START for END)");
			if (pr != 0)
				return kh_cli_usage(P, "--entitle %s: END is not after START", optarg);
			kh_emm_put_entitle(&w, a32, s64, e64);
			break;
		case O_REVOKE:
			if (kh__cli_u32(optarg, &a32) != 0)
				return kh_cli_usage(P, "--revoke takes a product number");
			kh_emm_put_revoke(&w, a32);
			break;
		case O_CREDIT:
			if (kh__cli_split(optarg, buf, sizeof buf, f, 2) != 0 || kh__cli_u32(f[0], &a32) != 0 ||
			    kh__cli_u32(f[1], &b32) != 0)
				return kh_cli_usage(P, "--credit takes AMOUNT:RELOADID");
			kh_emm_put_add_credit(&w, a32, b32);
			percard = "--credit";
			break;
		case O_REVOKED: {
			uint32_t uas[32];
			size_t nua = 0;
			char *list, *tok, *save = NULL;
			if (split_revoked(optarg, buf, sizeof buf, f) != 0 || kh__cli_u32(f[0], &a32) != 0 || a32 == 0)
				return kh_cli_usage(P, "--revoked takes VERSION:UA[,UA...] (VERSION from 1; no UA: none)");
			list = f[1];
			for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				if (nua == 32 || kh_cli_parse_ua(tok, &uas[nua]) != 0)
					return kh_cli_usage(P, "--revoked names at most 32 unique addresses, each %s", KH_CLI_UA_FORMS);
				nua++;
			}
			kh_emm_put_revoked(&w, a32, uas, nua);
			req.revoked_version = a32;
			break;
		}
		case O_SKEYS:
			req.service_keys = 1;
			req.set_signers = 3;
			break;
		case O_SETGROUP:
			if (kh__cli_u32(optarg, &req.group) != 0)
				return kh_cli_usage(P, "--set-group takes a group number");
			req.set_group = 1;
			break;
		case O_SETALL: req.set_all_key = 1; break;
		case O_AUTH:
			if (strcmp(optarg, "0") != 0 && strcmp(optarg, "1") != 0)
				return kh_cli_usage(P, "--auth-export takes 0 or 1");
			kh_emm_put_auth_export(&w, optarg[0] == '1');
			percard = "--auth-export";
			break;
		case O_REQ:
			if (!req_export++) /* asked once, however often it is said */
				kh_emm_put_req_export(&w);
			percard = "--request-export";
			break;
		case 'h': fputs(emm_help, stdout); return KH_EXIT_OK;
		default: return kh_cli_usage(P, "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return kh_cli_usage(P, "unexpected argument '%s'", argv[optind]);
	if (!path || !out)
		return kh_cli_usage(P, "--keys and --out are required");
	if (naddr != 1)
		return kh_cli_usage(P, "exactly one of --ua, --group and --all is required");
	if ((req.set_group || req.set_all_key) && req.type != KH_EMM_UNIQUE)
		return kh_cli_usage(P, "--set-group and --set-all-key go to one card (--ua)");
	/* a card accepts these only under its own key: a group or broadcast EMM would be refused */
	if (percard && req.type != KH_EMM_UNIQUE)
		return kh_cli_usage(P, "%s goes to one card (--ua)", percard);
	if (req.service_keys && req.type != KH_EMM_UNIQUE)
		req.set_signers = 0; /* signers only under a card's own key; service keys are shared */
	if (w.len == 0 && !req.service_keys && !req.set_group && !req.set_all_key)
		return kh_cli_usage(P, "no command: give at least one of --entitle, --revoke, --credit, ...");
	if (w.err != KH_OK) {
		kh_wipe(cmds, sizeof cmds);
		return kh_cli_fail("headend emm: commands", KH_ERR_TOO_LARGE);
	}
	/*
	 * The signers' certificates (410 to 530 bytes each, with the operator's name) go first, one
	 * EMM each: with the rest they would not fit one section. The card applies its EMMs in
	 * order, so it knows the signers before the service keys they vouch for.
	 */
	for (int i = 0; req.set_signers && i < 2; i++) {
		struct kh_headend_emm_req sreq = {.type = KH_EMM_UNIQUE, .addr = req.addr, .set_signers = 1 << i};
		size_t one = 0;
		if ((r = kh_headend_emm_issue(path, &sreq, sec + first, sizeof sec - first, &one, &seq, &line)) != KH_OK) {
			kh_wipe(cmds, sizeof cmds);
			return kh__cli_keys_fail(path, line, r);
		}
		printf("EMM for card %08lX, seq %lu: the operator's %s (%zu bytes)\n", (unsigned long)req.addr,
		       (unsigned long)seq, i ? "EMM signer" : "ECM signer", one);
		first += one;
	}
	req.set_signers = 0;
	req.cmds = cmds;
	req.cmds_len = w.len;
	if (w.len || req.service_keys || req.set_group || req.set_all_key)
		r = kh_headend_emm_issue(path, &req, sec + first, sizeof sec - first, &len, &seq, &line);
	kh_wipe(cmds, sizeof cmds);
	if (r != KH_OK)
		return r == KH_ERR_TOO_LARGE ? kh_cli_fail("headend emm: commands", r) : kh__cli_keys_fail(path, line, r);
	{
		/* a device or FIFO is written in place; a file appears whole or not at all */
		int fd = kh_cli_open_special(out);
		if (fd >= 0) {
			ssize_t wn = write(fd, sec, first + len);
			r = wn == (ssize_t)(first + len) && close(fd) == 0 ? KH_OK : KH_ERR_IO;
			if (wn != (ssize_t)(first + len))
				close(fd);
		} else {
			r = fd == -2 ? KH_ERR_IO : kh_file_write_atomic(out, sec, first + len, 0644);
		}
		if (r != KH_OK)
			return kh_cli_fail(out, r);
	}
	if (req.type == KH_EMM_UNIQUE)
		printf("EMM for card %08lX, seq %lu: %s (%zu bytes)\n", (unsigned long)req.addr, (unsigned long)seq,
		       out, first + len);
	else if (req.type == KH_EMM_GROUP)
		printf("EMM for group %lu, seq %lu: %s (%zu bytes)\n", (unsigned long)req.addr, (unsigned long)seq,
		       out, len);
	else
		printf("EMM for all cards, seq %lu: %s (%zu bytes)\n", (unsigned long)seq, out, len);
	return KH_EXIT_OK;
}
