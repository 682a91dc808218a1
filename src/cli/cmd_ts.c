/*
 * keyhole ts: looking at transport streams. `inspect` reads one file in one pass and prints its
 * programmes, components, CA descriptors, per-PID counts, bitrates and scrambling, and the clear
 * headers of Keyhole ECMs and EMMs, as text or as one JSON document. The work is ts_inspect.c;
 * this file is options and output. See keyhole-ts(1).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/ts_inspect.h"
#include "cli/udp_pipe.h"
#include "keyhole/tsip.h"
#include "keyhole/cas.h"
#include "keyhole/headend.h"

static const char inspect_help[] =
	"usage: keyhole ts inspect FILE [--json] [--ca-system-id ID]\n"
	"       keyhole ts inspect udp://[SRC@]HOST:PORT[?local=ADDR&rtp=1] (--duration SECONDS |\n"
	"                          --packets N) [--json] [--ca-system-id ID]\n"
	"\n"
	"Read a transport stream file (188-byte packets; - for standard input) in one pass and print\n"
	"what it carries: the programmes of the PAT and their PMTs (PCR PID, components and their\n"
	"stream types, CA descriptors at programme and component level), the CAT's CA descriptors,\n"
	"and per PID: packets, share of the stream, bitrate, scrambling (packets with a payload by\n"
	"transport_scrambling_control) and continuity errors; null packets; the mux bitrate from the\n"
	"PCRs of the first PCR PID. On the ECM and EMM PIDs of the CA system (default Keyhole's,\n"
	"0x4B48) the ECMs and EMMs are counted and their clear headers read without any key: ECM key\n"
	"id and version, crypto period, parity and signer; EMM address type, address and sequence.\n"
	"Nothing secret is printed. Packets are found again after garbage (the bytes skipped are\n"
	"counted); a file with no packet, or more garbage than packets, is refused. A last packet cut\n"
	"short is a warning. From udp:// (UDP or RTP, multicast joined) the packets received during\n"
	"--duration seconds from the start, or the first --packets, whichever comes first, are\n"
	"inspected; losses the receiver saw are a warning.\n"
	"\n"
	"      --json             print the report as one JSON document (keyhole-ts(1))\n"
	"      --duration SECONDS with udp://: listen this long, 1 to 86400\n"
	"      --packets N        with udp://: stop after N packets, 1 to 1000000000\n"
	"  -C, --ca-system-id ID  the CA system whose ECMs and EMMs are decoded (default 0x4B48)\n";

/* ---- text ---- */

static void text_ca(const struct kh_tsi_ca *ca, uint16_t casid, const char *indent)
{
	printf("%sCA system 0x%04X%s PID 0x%04X private %u bytes", indent, ca->sysid,
	       ca->sysid == casid ? " (Keyhole)" : "", ca->capid, ca->priv_len);
	if (ca->es_level)
		printf(" on component 0x%04X", ca->es_pid);
	printf("\n");
}

static void text_progs(const struct kh_tsi *t)
{
	for (size_t i = 0; i < t->nprogs; i++) {
		const struct kh_tsi_prog *p = &t->progs[i];
		printf("programme %u: PMT PID 0x%04X", p->number, p->pmt_pid);
		if (!p->have_pmt) {
			printf(", no PMT seen\n");
			continue;
		}
		printf(", PCR PID 0x%04X\n", p->pcr_pid);
		for (size_t j = 0; j < p->nes; j++)
			printf("  component 0x%04X stream_type 0x%02X %s\n", p->es[j].pid, p->es[j].type, p->es[j].name);
		if (p->es_dropped)
			printf("  (%zu more components not listed)\n", p->es_dropped);
		for (size_t j = 0; j < p->nca; j++)
			text_ca(&p->ca[j], t->casid, "  ");
	}
	if (t->nprogs == 0)
		printf("programmes: none (%s)\n", t->have_pat ? "empty PAT" : "no PAT");
	if (!t->have_cat)
		printf("CAT: none\n");
	for (size_t j = 0; j < t->ncat; j++)
		text_ca(&t->cat[j], t->casid, "CAT: ");
}

static double share(const struct kh_tsi *t, uint64_t n)
{
	return t->npkts ? 100.0 * (double)n / (double)t->npkts : 0;
}

static void text_pids(const struct kh_tsi *t)
{
	for (unsigned pid = 0; pid <= KH_TS_PID_MAX; pid++) {
		const struct kh_tsi_pid *ps = &t->pids[pid];
		if (ps->pkts == 0)
			continue;
		printf("pid 0x%04X %s: %llu packets %.2f %%, %.0f bit/s, %s (clear %llu even %llu odd %llu reserved "
		       "%llu, no payload %llu), %llu continuity errors\n",
		       pid, kh_tsi_role_name(t, (uint16_t)pid), (unsigned long long)ps->pkts, share(t, ps->pkts),
		       kh_tsi_pid_rate(t, (uint16_t)pid), kh_tsi_scrambling_state(ps), (unsigned long long)ps->sc[0],
		       (unsigned long long)ps->sc[2], (unsigned long long)ps->sc[3], (unsigned long long)ps->sc[1],
		       (unsigned long long)ps->af_only, (unsigned long long)ps->cc_errors);
		if (ps->invalid || ps->psi_errors)
			printf("  %llu invalid packets, %llu bad sections\n", (unsigned long long)ps->invalid,
			       (unsigned long long)ps->psi_errors);
	}
}

static void text_ecm(const char *which, const struct kh_tsi_ecm *e)
{
	printf("  %s ECM: key %u version %u crypto period %u %s signer %08X\n", which, e->key_id, e->key_version, e->cp,
	       e->table_id == KH_ECM_TID_EVEN ? "even" : "odd", e->signer);
}

static void text_emm(const char *which, const struct kh_tsi_emm *e)
{
	printf("  %s %s EMM: address %08X seq %u", which, kh_tsi_emm_type_name(e->addr_type), e->addr, e->seq);
	if (e->signer)
		printf(" signer %08X", e->signer);
	printf("\n");
}

static void text_capids(const struct kh_tsi *t)
{
	for (size_t i = 0; i < t->ncapids; i++) {
		struct kh_tsi_capid *c = t->capids[i];
		double iv = kh_tsi_ecm_interval_ms(t, c);
		printf("ca pid 0x%04X: %llu sections, %llu ECMs, %llu EMMs (unique %llu group %llu all %llu), %llu "
		       "malformed, %llu other\n",
		       c->pid, (unsigned long long)c->sections, (unsigned long long)c->ecms,
		       (unsigned long long)(c->emms[0] + c->emms[1] + c->emms[2]), (unsigned long long)c->emms[0],
		       (unsigned long long)c->emms[1], (unsigned long long)c->emms[2], (unsigned long long)c->malformed,
		       (unsigned long long)c->other);
		if (c->ecms) {
			printf("  ECM interval %s%.0f ms (median), %llu crypto period changes\n", iv < 0 ? "unknown " : "",
			       iv < 0 ? 0 : iv, (unsigned long long)c->cp_changes);
			text_ecm("first", &c->ecm_first);
			text_ecm("last", &c->ecm_last);
		}
		for (unsigned k = 0; k < 3; k++) {
			if (c->emms[k] == 0)
				continue;
			text_emm("first", &c->emm_first[k]);
			text_emm("last", &c->emm_last[k]);
		}
	}
}

static void text_report(const char *file, const struct kh_tsi *t)
{
	double rate = kh_tsi_mux_rate(t);
	const struct kh_tsi_pid *nul = &t->pids[KH_TS_PID_NULL];

	printf("file %s: %llu bytes, %llu packets, %llu bytes skipped, %llu bytes cut short at the end\n", file,
	       (unsigned long long)t->bytes, (unsigned long long)t->npkts, (unsigned long long)t->skipped,
	       (unsigned long long)t->truncated);
	if (rate > 0)
		printf("mux bitrate %.0f bit/s (PCR PID 0x%04X), %.3f s\n", rate, t->first_pcr_pid,
		       (double)t->npkts * KH_TS_PACKET_LEN * 8.0 / rate);
	else
		printf("mux bitrate unknown (fewer than two PCRs)\n");
	printf("null packets %llu %.2f %%\n", (unsigned long long)nul->pkts, share(t, nul->pkts));
	if (t->invalid || t->tei)
		printf("invalid packets %llu, transport errors %llu\n", (unsigned long long)t->invalid,
		       (unsigned long long)t->tei);
	text_progs(t);
	text_pids(t);
	text_capids(t);
}

/* ---- JSON ---- */

static json_t *json_ca_list(const struct kh_tsi_ca *ca, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++) {
		json_t *o = json_pack("{s:s,s:i,s:i,s:i}", "level", ca[i].es_level ? "component" : "programme",
				      "ca_system_id", ca[i].sysid, "ca_pid", ca[i].capid, "private_length", ca[i].priv_len);
		if (o && ca[i].es_level)
			json_object_set_new(o, "component_pid", json_integer(ca[i].es_pid));
		json_array_append_new(a, o);
	}
	return a;
}

static json_t *json_progs(const struct kh_tsi *t)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < t->nprogs; i++) {
		const struct kh_tsi_prog *p = &t->progs[i];
		json_t *es = json_array();
		for (size_t j = 0; es && j < p->nes; j++)
			json_array_append_new(es, json_pack("{s:i,s:i,s:s}", "pid", p->es[j].pid, "stream_type",
							    p->es[j].type, "stream_type_name", p->es[j].name));
		json_array_append_new(a, json_pack("{s:i,s:i,s:b,s:o,s:o,s:o}", "program_number", p->number, "pmt_pid",
						   p->pmt_pid, "pmt_seen", p->have_pmt, "pcr_pid",
						   p->have_pmt ? json_integer(p->pcr_pid) : json_null(), "components",
						   es, "ca_descriptors", json_ca_list(p->ca, p->nca)));
	}
	return a;
}

static json_t *json_rate(double r)
{
	return r > 0 ? json_integer((json_int_t)(r + 0.5)) : json_null();
}

static json_t *json_pids(const struct kh_tsi *t)
{
	json_t *a = json_array();

	for (unsigned pid = 0; a && pid <= KH_TS_PID_MAX; pid++) {
		const struct kh_tsi_pid *ps = &t->pids[pid];
		if (ps->pkts == 0)
			continue;
		json_array_append_new(
			a, json_pack("{s:i,s:s,s:I,s:f,s:o,s:s,s:{s:I,s:I,s:I,s:I},s:I,s:I,s:I,s:I}", "pid", pid, "role",
				     kh_tsi_role_name(t, (uint16_t)pid), "packets", (json_int_t)ps->pkts, "share",
				     share(t, ps->pkts), "bitrate", json_rate(kh_tsi_pid_rate(t, (uint16_t)pid)),
				     "scrambling", kh_tsi_scrambling_state(ps), "scrambling_control", "clear",
				     (json_int_t)ps->sc[0], "reserved", (json_int_t)ps->sc[1], "even", (json_int_t)ps->sc[2],
				     "odd", (json_int_t)ps->sc[3], "no_payload", (json_int_t)ps->af_only,
				     "continuity_errors", (json_int_t)ps->cc_errors, "invalid_packets",
				     (json_int_t)ps->invalid, "bad_sections", (json_int_t)ps->psi_errors));
	}
	return a;
}

static json_t *json_ecm(const struct kh_tsi_ecm *e)
{
	return json_pack("{s:i,s:s,s:i,s:I,s:I,s:I}", "table_id", e->table_id, "parity",
			 e->table_id == KH_ECM_TID_EVEN ? "even" : "odd", "key_id", e->key_id, "key_version",
			 (json_int_t)e->key_version, "crypto_period", (json_int_t)e->cp, "signer", (json_int_t)e->signer);
}

static json_t *json_emm(const struct kh_tsi_capid *c, unsigned k)
{
	const struct kh_tsi_emm *f = &c->emm_first[k], *l = &c->emm_last[k];

	if (c->emms[k] == 0)
		return json_pack("{s:i,s:n,s:n}", "count", 0, "first", "last");
	return json_pack("{s:I,s:{s:I,s:I,s:I},s:{s:I,s:I,s:I}}", "count", (json_int_t)c->emms[k], "first", "address",
			 (json_int_t)f->addr, "seq", (json_int_t)f->seq, "signer", (json_int_t)f->signer, "last",
			 "address", (json_int_t)l->addr, "seq", (json_int_t)l->seq, "signer", (json_int_t)l->signer);
}

static json_t *json_capids(const struct kh_tsi *t)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < t->ncapids; i++) {
		struct kh_tsi_capid *c = t->capids[i];
		double iv = kh_tsi_ecm_interval_ms(t, c);
		json_t *ecm = json_pack("{s:I,s:o,s:I,s:o,s:o}", "count", (json_int_t)c->ecms, "interval_ms",
					iv < 0 ? json_null() : json_real(iv), "crypto_period_changes",
					(json_int_t)c->cp_changes, "first", c->ecms ? json_ecm(&c->ecm_first) : json_null(),
					"last", c->ecms ? json_ecm(&c->ecm_last) : json_null());
		json_t *emm = json_pack("{s:o,s:o,s:o}", "unique", json_emm(c, 0), "group", json_emm(c, 1), "all",
					json_emm(c, 2));
		json_array_append_new(a, json_pack("{s:i,s:I,s:I,s:I,s:o,s:o}", "pid", c->pid, "sections",
						   (json_int_t)c->sections, "malformed", (json_int_t)c->malformed, "other",
						   (json_int_t)c->other, "ecm", ecm, "emm", emm));
	}
	return a;
}

static int json_report(const char *file, const struct kh_tsi *t)
{
	double rate = kh_tsi_mux_rate(t);
	const struct kh_tsi_pid *nul = &t->pids[KH_TS_PID_NULL];
	json_t *doc = json_pack(
		"{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:o,s:o,s:o,s:I,s:f,s:o,s:o,s:o,s:o}", "file", file, "bytes",
		(json_int_t)t->bytes, "packets", (json_int_t)t->npkts, "skipped_bytes", (json_int_t)t->skipped,
		"truncated_bytes", (json_int_t)t->truncated, "invalid_packets", (json_int_t)t->invalid,
		"transport_errors", (json_int_t)t->tei, "ca_system_id", t->casid, "bitrate", json_rate(rate), "pcr_pid",
		t->first_pcr_pid < 0 ? json_null() : json_integer(t->first_pcr_pid), "duration_s",
		rate > 0 ? json_real((double)t->npkts * KH_TS_PACKET_LEN * 8.0 / rate) : json_null(), "null_packets",
		(json_int_t)nul->pkts, "null_share", share(t, nul->pkts), "programmes", json_progs(t), "cat",
		json_ca_list(t->cat, t->ncat), "pids", json_pids(t), "ca_pids", json_capids(t));

	if (doc == NULL || json_dumpf(doc, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER) != 0) {
		json_decref(doc);
		fprintf(stderr, "keyhole: ts inspect: could not write the JSON report\n");
		return KH_EXIT_FAIL;
	}
	json_decref(doc);
	putchar('\n');
	return KH_EXIT_OK;
}

/* ---- inspect ---- */

static int read_all(int fd, const char *file, struct kh_tsi *t)
{
	static uint8_t buf[65536];
	ssize_t n;

	for (;;) {
		n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "keyhole: %s: %s\n", file, strerror(errno));
			return KH_EXIT_FAIL;
		}
		if (n == 0)
			break;
		if (kh_tsi_feed(t, buf, (size_t)n) != KH_OK)
			return kh_cli_fail(file, KH_ERR_NOMEM);
	}
	kh_tsi_finish(t);
	return KH_EXIT_OK;
}

static int open_in(const char *file)
{
	struct stat st;
	int fd;

	if (strcmp(file, "-") == 0)
		return STDIN_FILENO;
	if ((fd = open(file, O_RDONLY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "keyhole: %s: %s\n", file, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		fprintf(stderr, "keyhole: %s: %s\n", file, strerror(EISDIR));
		close(fd);
		return -1;
	}
	return fd;
}

/* One warning line for damage that did not stop the report. */
static void warn_damage(const char *file, const struct kh_tsi *t)
{
	if (t->skipped && t->truncated)
		fprintf(stderr, "keyhole: %s: warning: %llu bytes skipped to find packets; the last packet is cut short "
			"(%llu of 188 bytes)\n", file, (unsigned long long)t->skipped, (unsigned long long)t->truncated);
	else if (t->skipped)
		fprintf(stderr, "keyhole: %s: warning: %llu bytes skipped to find packets\n", file,
			(unsigned long long)t->skipped);
	else if (t->truncated)
		fprintf(stderr, "keyhole: %s: warning: the last packet is cut short (%llu of 188 bytes)\n", file,
			(unsigned long long)t->truncated);
}

/* The report of what was read (rc: the reading's outcome); t is freed. */
static int finish_report(const char *file, struct kh_tsi *t, int rc, int json)
{
	if (rc == KH_EXIT_OK && (t->npkts == 0 || t->skipped > t->npkts * KH_TS_PACKET_LEN)) {
		fprintf(stderr, "keyhole: %s: not a transport stream (%llu packets of 188 bytes in %llu bytes)\n", file,
			(unsigned long long)t->npkts, (unsigned long long)t->bytes);
		rc = KH_EXIT_FAIL;
	}
	if (rc == KH_EXIT_OK) {
		rc = json ? json_report(file, t) : (text_report(file, t), KH_EXIT_OK);
		if (rc == KH_EXIT_OK && fflush(stdout) != 0) {
			fprintf(stderr, "keyhole: standard output: %s\n", strerror(errno));
			rc = KH_EXIT_FAIL;
		}
	}
	if (rc == KH_EXIT_OK)
		warn_damage(file, t);
	kh_tsi_free(t);
	return rc;
}

/*
 * A regular file is read twice: the first pass learns which PIDs carry our ECMs and EMMs, so the
 * second decodes them from the first packet, before the PMT or CAT that names them. Standard
 * input (a pipe) is read once.
 */
static int inspect_file(const char *file, uint16_t casid, int json)
{
	struct kh_tsi t, first;
	struct stat st;
	int fd, rc;

	if (kh_tsi_init(&t, casid) != KH_OK)
		return kh_cli_fail(file, KH_ERR_NOMEM);
	if ((fd = open_in(file)) < 0) {
		kh_tsi_free(&t);
		return KH_EXIT_FAIL;
	}
	if (fd != STDIN_FILENO && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		if (kh_tsi_init(&first, casid) != KH_OK) {
			close(fd);
			kh_tsi_free(&t);
			return kh_cli_fail(file, KH_ERR_NOMEM);
		}
		rc = read_all(fd, file, &first);
		if (rc == KH_EXIT_OK)
			kh_tsi_prime(&t, &first);
		kh_tsi_free(&first);
		if (rc != KH_EXIT_OK || lseek(fd, 0, SEEK_SET) != 0) {
			close(fd);
			kh_tsi_free(&t);
			return rc != KH_EXIT_OK ? rc : kh_cli_fail(file, KH_ERR_IO);
		}
	}
	rc = read_all(fd, file, &t);
	if (fd != STDIN_FILENO)
		close(fd);
	return finish_report(file, &t, rc, json);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * Read the packets the udp:// thread puts in the pipe fd into t until ms have gone by (0: no
 * limit) or pkts packets were read (0: no limit), or the thread ends (a receive error).
 */
static int read_net(int fd, const char *url, uint64_t ms, uint64_t pkts, struct kh_tsi *t)
{
	static uint8_t buf[65536];
	uint64_t end = ms ? mono_ms() + ms : 0, left = pkts ? pkts * KH_TS_PACKET_LEN : UINT64_MAX, now;
	struct pollfd p = {.fd = fd, .events = POLLIN};
	ssize_t n;
	int k;

	while (left > 0) {
		if (end && (now = mono_ms()) >= end)
			break;
		if ((k = poll(&p, 1, end ? (int)(end - now) : -1)) < 0 && errno != EINTR) {
			fprintf(stderr, "keyhole: %s: %s\n", url, strerror(errno));
			return KH_EXIT_FAIL;
		}
		if (k <= 0)
			continue;
		if ((n = read(fd, buf, left < sizeof buf ? (size_t)left : sizeof buf)) < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "keyhole: %s: %s\n", url, strerror(errno));
			return KH_EXIT_FAIL;
		}
		if (n == 0)
			break;
		if (kh_tsi_feed(t, buf, (size_t)n) != KH_OK)
			return kh_cli_fail(url, KH_ERR_NOMEM);
		left -= (uint64_t)n;
	}
	kh_tsi_finish(t);
	return KH_EXIT_OK;
}

/* ts inspect udp://...: listen for ms or until pkts packets, then report as for a file. */
static int inspect_net(const char *url, uint16_t casid, int json, uint64_t ms, uint64_t pkts)
{
	struct sigaction ign, old_pipe;
	struct kh__cli_udp *u = NULL;
	struct kh_tsi t;
	int fd = -1, rc, frc;

	if (kh_tsi_init(&t, casid) != KH_OK)
		return kh_cli_fail(url, KH_ERR_NOMEM);
	if ((rc = kh__cli_udp_in("ts inspect", url, 0, &fd, &u)) != KH_EXIT_OK) {
		kh__cli_udp_free(u);
		kh_tsi_free(&t);
		return rc;
	}
	/* Our end of the pipe is closed before the thread stops: its last write is EPIPE, not a
	 * signal, and it cannot block on a full pipe nobody reads. */
	memset(&ign, 0, sizeof ign);
	sigemptyset(&ign.sa_mask);
	ign.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &ign, &old_pipe);
	rc = read_net(fd, url, ms, pkts, &t);
	close(fd);
	frc = kh__cli_udp_finish(u);
	kh__cli_udp_free(u);
	sigaction(SIGPIPE, &old_pipe, NULL);
	if (rc == KH_EXIT_OK && frc != KH_EXIT_OK)
		rc = frc;
	if (rc == KH_EXIT_OK && t.npkts == 0) {
		fprintf(stderr, "keyhole: %s: no packet received\n", url);
		kh_tsi_free(&t);
		return KH_EXIT_FAIL;
	}
	return finish_report(url, &t, rc, json);
}

static int cmd_inspect(int argc, char **argv)
{
	static const struct option opts[] = {{"json", no_argument, NULL, 'J'},
					     {"ca-system-id", required_argument, NULL, 'C'},
					     {"duration", required_argument, NULL, 'D'},
					     {"packets", required_argument, NULL, 'P'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	unsigned char seen[512] = {0};
	const char *twice, *file;
	uint64_t casid = KH_HEADEND_DEFAULT_CA_SYSTEM_ID, secs = 0, pkts = 0;
	int c, json = 0;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "C:h", opts, NULL)) != -1) {
		if ((twice = kh_cli_twice(opts, c, seen)) != NULL)
			return kh_cli_usage("ts inspect", "--%s may be given once", twice);
		switch (c) {
		case 'J':
			json = 1;
			break;
		case 'C':
			if (kh_cli_parse_num(optarg, 0xFFFF, &casid) != 0)
				return kh_cli_usage("ts inspect", "--ca-system-id takes a number up to 0xFFFF");
			break;
		case 'D':
			if (kh_cli_parse_num(optarg, 86400, &secs) != 0 || secs == 0)
				return kh_cli_usage("ts inspect", "--duration takes seconds, 1 to 86400");
			break;
		case 'P':
			if (kh_cli_parse_num(optarg, 1000000000, &pkts) != 0 || pkts == 0)
				return kh_cli_usage("ts inspect", "--packets takes a number from 1 to 1000000000");
			break;
		case 'h':
			fputs(inspect_help, stdout);
			return KH_EXIT_OK;
		default:
			return kh_cli_usage("ts inspect", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return kh_cli_usage("ts inspect", "FILE is required");
	file = argv[optind++];
	if (optind < argc)
		return kh_cli_usage("ts inspect", "unexpected argument '%s'", argv[optind]);
	if (kh_tsip_is_url(file)) {
		if (!secs && !pkts)
			return kh_cli_usage("ts inspect", "%s: give --duration or --packets", file);
		return inspect_net(file, (uint16_t)casid, json, secs * 1000u, pkts);
	}
	if (strstr(file, "://") != NULL)
		return kh_cli_usage("ts inspect", "%s: only files and udp://", file);
	if (secs || pkts)
		return kh_cli_usage("ts inspect", "--%s goes with udp://", secs ? "duration" : "packets");
	return inspect_file(file, (uint16_t)casid, json);
}

static const struct kh_cli_cmd sub[] = {
	{"inspect", cmd_inspect, "list a transport stream's programmes, PIDs, scrambling, ECMs and EMMs"},
};

int kh_cmd_ts(int argc, char **argv)
{
	return kh_cli_dispatch("ts", sub, sizeof sub / sizeof sub[0], argc, argv);
}
