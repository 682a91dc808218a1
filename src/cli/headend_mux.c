/*
 * `keyhole headend mux`: the mux side of SimulCrypt EMMG<->MUX (include/keyhole/emmg.h). Copies a
 * transport stream and puts the EMMs an EMMG provisions over TCP where null packets were, on the
 * EMM PID with continuity counters of ours, so the stream keeps its size and every PCR its place;
 * the CAT names the EMM PID (kh_headend_cat_merge: the input's descriptors kept, or a CAT of our
 * own). One thread: a poll loop over the listening socket, the EMMG connections and the input.
 * EMM packets waiting for a null packet are bounded (MUX_RING): beyond it a section is dropped
 * and counted. See keyhole-headend(1), docs/internals/emmg.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/headend.h"
#include "cli/udp_pipe.h"
#include "keyhole/emmg.h"
#include "keyhole/headend.h"
#include "keyhole/log.h"
#include "keyhole/ts.h"
#include "keyhole/tsip.h"

#define P "headend mux"
#define PKT KH_TS_PACKET_LEN
#define MUX_RING 4096u	   /* EMM packets waiting for a null packet at most (770 KB) */
#define MUX_CONNS 4u	   /* EMMG connections at once */
#define CAT_EVERY 4000u	   /* input packets between CATs of ours while the input sends none */
#define IN_CHUNK (256 * PKT)
#define OUT_CHUNK 256u	   /* packets written at once */

static const char mux_help[] =
	"usage: keyhole headend mux --in FILE|udp://... --out FILE|udp://... --emmg-listen HOST:PORT\n"
	"           --emm-pid PID [--ca-system-id ID] [--client-id ID] [--max-bandwidth KBITS]\n"
	"           [--regulate] [--wait-emmg SECONDS]\n"
	"\n"
	"Copy a transport stream and insert the EMMs an EMMG provisions over the DVB SimulCrypt\n"
	"EMMG<->MUX interface (ETSI TS 103 197, TCP; e.g. `keyhole emmg`): its sections go on the EMM\n"
	"PID in the place of null packets, so the stream keeps its size and every PCR its place; the\n"
	"CAT gets a CA descriptor naming the EMM PID (the input's other descriptors kept, its version\n"
	"one more), or a CAT is made when the input has none. An EMMG gets min(asked, --max-bandwidth)\n"
	"and is refused (exceeded_bandwidth) when it sends clearly faster. EMMs waiting for a null\n"
	"packet beyond a bound are dropped and counted. Prints listening=HOST:PORT once ready and the\n"
	"counts at the end. SIGINT or SIGTERM end the input as a file's end.\n"
	"\n"
	"  -i, --in FILE              the transport stream to read (- for standard input; udp://)\n"
	"  -o, --out FILE             the transport stream to write (- for standard output; udp://)\n"
	"      --emmg-listen HOST:PORT  where EMMGs connect (port 0: any free port)\n"
	"      --emm-pid PID          the PID of the EMMs (0x0010 to 0x1FFE, unused by the input)\n"
	"  -C, --ca-system-id ID      CA_system_id of the CAT's descriptor (default 0x4B48)\n"
	"      --client-id ID         the client_id an EMMG must give (default CA_system_id << 16)\n"
	"      --max-bandwidth KBITS  the most an EMMG stream is allocated, kbit/s (default 1000)\n"
	"      --regulate             read the input at its PCR rate (a file muxed with a live EMMG)\n"
	"      --wait-emmg SECONDS    wait up to SECONDS for the first data_provision before reading\n"
	"  -h, --help                 this help\n";

enum { O_LISTEN = 256, O_EMMPID, O_CLIENT, O_MAXBW, O_REGULATE, O_WAIT };

static const struct option mux_opts[] = {
	{"in", required_argument, NULL, 'i'},		   {"out", required_argument, NULL, 'o'},
	{"emmg-listen", required_argument, NULL, O_LISTEN}, {"emm-pid", required_argument, NULL, O_EMMPID},
	{"ca-system-id", required_argument, NULL, 'C'},	   {"client-id", required_argument, NULL, O_CLIENT},
	{"max-bandwidth", required_argument, NULL, O_MAXBW}, {"regulate", no_argument, NULL, O_REGULATE},
	{"wait-emmg", required_argument, NULL, O_WAIT},	   {"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0}};

struct mux_opts {
	const char *in, *out, *listen;
	uint16_t emm_pid, ca_system_id;
	int have_pid, have_client, regulate;
	uint64_t wait_s;
	struct kh_emmmux_cfg cfg;
};

struct conn {
	int fd;
	size_t have;
	uint8_t in[KH_SIM_MAX_MSG];
	struct kh_emmmux_conn st;
};

struct counts {
	uint64_t packets, nulls, emm_sections, emm_packets, dropped_sections, dropped_packets, cat, foreign;
	uint64_t provisions, replaced;
};

struct mux {
	const struct mux_opts *o;
	int lfd, infd, outfd, eof;
	struct conn *c[MUX_CONNS];
	/* EMM packets waiting for a null packet: a ring */
	uint8_t *ring;
	size_t head, count;
	uint8_t cc;
	/* the CAT: ours (merged), waiting packets, the input's assembler */
	uint8_t cat[KH_TS_PSI_MAX], cat_pk[8 * PKT], sec[KH_TS_PSI_MAX];
	size_t cat_len, cat_pk_n, cat_pk_at;
	uint8_t cat_cc;
	uint64_t since_cat;
	int input_cat;
	struct kh_ts_asm cat_asm;
	/* input and output buffers */
	uint8_t ib[IN_CHUNK];
	size_t ipos, ihave;
	struct kh_headend_sync sync;
	uint8_t ob[OUT_CHUNK * PKT];
	size_t on;
	int write_failed;
	/* --regulate: the first PCR and when it was read */
	int have_pcr0;
	uint16_t pcr_pid;
	uint64_t pcr0, t0_ms;
	struct counts n;
	struct kh_cli_out outf;
	struct kh__cli_udp *uin, *uout;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- options ---- */

static int take(void *ctx, int c, const char *arg)
{
	struct mux_opts *o = ctx;
	uint64_t v = 0;
	int rc = KH_EXIT_OK;

	switch (c) {
	case 'i': o->in = arg; break;
	case 'o': o->out = arg; break;
	case O_LISTEN: o->listen = arg; break;
	case O_REGULATE: o->regulate = 1; break;
	case O_EMMPID:
		if ((rc = kh_cli_num_opt(P, "emm-pid", arg, 0x1FFE, &v)) == KH_EXIT_OK && v < 0x0010)
			rc = kh_cli_usage(P, "--emm-pid: 0x%04llX is a reserved PID", (unsigned long long)v);
		o->emm_pid = (uint16_t)v;
		o->have_pid = 1;
		break;
	case 'C':
		rc = kh_cli_num_opt(P, "ca-system-id", arg, UINT16_MAX, &v);
		o->ca_system_id = (uint16_t)v;
		break;
	case O_CLIENT:
		rc = kh_cli_num_opt(P, "client-id", arg, UINT32_MAX, &v);
		o->cfg.client_id = (uint32_t)v;
		o->have_client = 1;
		break;
	case O_MAXBW:
		if ((rc = kh_cli_num_opt(P, "max-bandwidth", arg, UINT16_MAX, &v)) == KH_EXIT_OK && v == 0)
			rc = kh_cli_usage(P, "--max-bandwidth must be at least 1 kbit/s");
		o->cfg.max_bandwidth = (uint16_t)v;
		break;
	case O_WAIT: rc = kh_cli_num_opt(P, "wait-emmg", arg, 3600, &o->wait_s); break;
	default: return -1;
	}
	return rc;
}

static int check(struct mux_opts *o)
{
	if (!o->in || !o->out)
		return kh_cli_usage(P, "--in and --out are required");
	if (!o->listen)
		return kh_cli_usage(P, "--emmg-listen is required");
	if (!o->have_pid)
		return kh_cli_usage(P, "--emm-pid is required");
	if (!o->have_client)
		o->cfg.client_id = (uint32_t)o->ca_system_id << 16;
	if (kh_cli_refuse_tty_out(P, o->out) != KH_EXIT_OK)
		return KH_EXIT_USAGE;
	return KH_EXIT_OK;
}

/* KH_EXIT_OK, KH_EXIT_USAGE, or -1 after the help. */
static int parse(int argc, char **argv, struct mux_opts *o)
{
	int rc;

	memset(o, 0, sizeof *o);
	kh_emmmux_cfg_defaults(&o->cfg);
	o->ca_system_id = KH_HEADEND_DEFAULT_CA_SYSTEM_ID;
	if ((rc = kh_cli_options(P, argc, argv, "+i:o:C:h", mux_opts, mux_help, take, o)) != KH_EXIT_OK)
		return rc;
	return check(o);
}

/* ---- the EMMG side ---- */


/* Packets of ours on the EMM PID into the ring; 0, or -1 when there is no room (nothing added). */
static int ring_put(struct mux *m, const uint8_t *pk, size_t npk)
{
	if (m->count + npk > MUX_RING)
		return -1;
	for (size_t i = 0; i < npk; i++) {
		uint8_t *d = m->ring + ((m->head + m->count + i) % MUX_RING) * PKT;
		memcpy(d, pk + i * PKT, PKT);
		d[1] = (uint8_t)((d[1] & 0xE0u) | (m->o->emm_pid >> 8));
		d[2] = (uint8_t)m->o->emm_pid;
		d[3] = (uint8_t)((d[3] & 0xF0u) | (m->cc++ & 0x0Fu));
	}
	m->count += npk;
	return 0;
}

/* One section from an EMMG, packetised (the PID and counters are set by ring_put). */
static void put_section(struct mux *m, const uint8_t *sec, size_t n)
{
	uint8_t pk[(KH_TS_PRIVATE_MAX / 184u + 2u) * PKT];
	uint8_t cc = 0;
	size_t len = 0;

	if (kh_ts_packetise(m->o->emm_pid, &cc, sec, n, pk, sizeof pk, &len) != KH_OK ||
	    ring_put(m, pk, len / PKT) != 0) {
		m->n.dropped_sections++;
		return;
	}
	m->n.emm_sections++;
}

static void on_data(void *ctx, uint16_t data_id, int ts_packets, const uint8_t *dg, size_t n)
{
	struct mux *m = ctx;
	size_t off = 0;

	(void)data_id;
	m->n.provisions++;
	if (ts_packets) {
		if (ring_put(m, dg, n / PKT) != 0)
			m->n.dropped_packets += n / PKT;
		return;
	}
	while (off + 3 <= n) { /* whole sections: the engine checked */
		size_t len = 3u + (((size_t)dg[off + 1] & 0x0Fu) << 8 | dg[off + 2]);
		put_section(m, dg + off, len);
		off += len;
	}
}

static int client_busy(void *ctx, uint32_t client)
{
	struct mux *m = ctx;

	for (size_t i = 0; i < MUX_CONNS; i++)
		if (m->c[i] && m->c[i]->st.open && m->c[i]->st.client_id == client)
			return 1;
	return 0;
}

static void drop_conn(struct mux *m, size_t i)
{
	close(m->c[i]->fd);
	free(m->c[i]);
	m->c[i] = NULL;
}

/* Every whole message of c handled. 0 to keep the connection, -1 to close it. */
static int drain(struct mux *m, struct conn *c)
{
	uint8_t out[KH_EMMG_OUT_MAX];
	size_t need = 0, olen = 0;
	int bye = 0;

	for (;;) {
		enum kh_sim_status st = kh_sim_frame(c->in, c->have, &need);
		if (st != KH_SIM_OK) {
			if (kh_emmmux_frame_error(&c->st, st, out, sizeof out, &olen) == KH_OK)
				(void)kh_cli_send_all(c->fd, out, olen);
			return -1;
		}
		if (c->have < need)
			return 0;
		if (kh_emmmux_handle(&m->o->cfg, &c->st, c->in, need, now_ms(), out, sizeof out, &olen, &bye) != KH_OK)
			return -1;
		if (olen) {
			struct kh_sim_msg em;
			uint16_t status = 0;
			if (kh_sim_parse(KH_SIM_EMMG, out, olen, &em, NULL) == KH_SIM_OK &&
			    kh_sim_u16(&em, KH_SIM_P_ERROR_STATUS, 0, &status) == KH_OK)
				kh_log_warn("headend.mux_refused", "error_status=0x%04X", (unsigned)status);
			if (kh_cli_send_all(c->fd, out, olen) != 0)
				return -1;
		}
		memmove(c->in, c->in + need, c->have - need);
		c->have -= need;
		if (bye)
			return -1;
	}
}

static void accept_one(struct mux *m)
{
	int fd = accept4(m->lfd, NULL, NULL, SOCK_CLOEXEC);
	size_t i;

	if (fd < 0)
		return;
	for (i = 0; i < MUX_CONNS && m->c[i]; i++)
		;
	if (i == MUX_CONNS || !(m->c[i] = calloc(1, sizeof *m->c[i]))) {
		close(fd);
		return;
	}
	m->c[i]->fd = fd;
	kh_emmmux_conn_init(&m->c[i]->st);
}

static void read_conn(struct mux *m, size_t i)
{
	struct conn *c = m->c[i];
	ssize_t n = recv(c->fd, c->in + c->have, sizeof c->in - c->have, 0);

	if (n < 0 && errno == EINTR)
		return;
	if (n <= 0 || (c->have += (size_t)n, drain(m, c) != 0))
		drop_conn(m, i);
}

/* Wait up to ms for the EMMG side (accept, read, answer) or, when want_in, the input: 1 when the
 * input is readable. */
static int service(struct mux *m, int ms, int want_in)
{
	struct pollfd pf[MUX_CONNS + 2];
	size_t idx[MUX_CONNS];
	nfds_t n = 2;

	pf[0] = (struct pollfd){.fd = m->lfd, .events = POLLIN};
	pf[1] = (struct pollfd){.fd = want_in ? m->infd : -1, .events = POLLIN};
	for (size_t i = 0; i < MUX_CONNS; i++)
		if (m->c[i]) {
			idx[n - 2] = i;
			pf[n++] = (struct pollfd){.fd = m->c[i]->fd, .events = POLLIN};
		}
	if (poll(pf, n, ms) <= 0)
		return 0;
	for (nfds_t j = 2; j < n; j++)
		if (pf[j].revents)
			read_conn(m, idx[j - 2]);
	if (pf[0].revents & POLLIN)
		accept_one(m);
	return want_in && pf[1].revents != 0;
}

/* ---- the transport stream ---- */

/* Our CAT (its packets) to go out at the next null packets; the current one is m->cat. Their
 * continuity counters are set as they go (fill): one that replaces another not yet out leaves no
 * gap in the counters. */
static void queue_cat(struct mux *m)
{
	uint8_t cc = 0;
	size_t len = 0;

	if (kh_ts_packetise(KH_TS_PID_CAT, &cc, m->cat, m->cat_len, m->cat_pk, sizeof m->cat_pk, &len) != KH_OK)
		return;
	m->cat_pk_n = len / PKT;
	m->cat_pk_at = 0;
	m->since_cat = 0;
}

/* A CAT section of the input: ours becomes its merge with our descriptor. */
static void on_input_cat(struct mux *m, const uint8_t *pkt)
{
	size_t n = 0, len = 0;
	int got;

	if (kh_ts_asm_push(&m->cat_asm, pkt, PKT) != KH_OK)
		return;
	while ((got = kh_ts_asm_pop(&m->cat_asm, m->sec, sizeof m->sec, &n)) != 0) {
		uint8_t cat[KH_TS_PSI_MAX];
		if (got < 0 || kh_ts_section_check(m->sec, n) != KH_OK)
			continue;
		if (kh_headend_cat_merge(m->sec, n, m->o->ca_system_id, m->o->emm_pid, cat, sizeof cat, &len) !=
		    KH_OK)
			continue; /* a CAT we cannot merge: ours stays */
		memcpy(m->cat, cat, len);
		m->cat_len = len;
		m->input_cat = 1;
		queue_cat(m);
	}
}

/* A packet of ours for a hole (a null packet, or one of the input's CAT packets): the CAT first,
 * then EMMs; NULL when there is none. */
static const uint8_t *fill(struct mux *m)
{
	const uint8_t *p;

	if (m->cat_pk_at < m->cat_pk_n) {
		uint8_t *c = m->cat_pk + PKT * m->cat_pk_at++;
		c[3] = (uint8_t)((c[3] & 0xF0u) | (m->cat_cc++ & 0x0Fu));
		m->n.cat += m->cat_pk_at == 1; /* a CAT goes out */
		return c;
	}
	if (m->count == 0)
		return NULL;
	p = m->ring + m->head * PKT;
	m->head = (m->head + 1) % MUX_RING;
	m->count--;
	m->n.emm_packets++;
	return p;
}

static int flush(struct mux *m)
{
	size_t len = m->on * PKT;
	const uint8_t *p = m->ob;

	while (len > 0 && !m->write_failed) {
		ssize_t w = write(m->outfd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			m->write_failed = errno ? errno : EIO;
			break;
		}
		p += w;
		len -= (size_t)w;
	}
	m->on = 0;
	return m->write_failed ? -1 : 0;
}

static int emit(struct mux *m, const uint8_t *pkt)
{
	memcpy(m->ob + m->on * PKT, pkt, PKT);
	if (++m->on == OUT_CHUNK)
		return flush(m);
	return 0;
}

/* The PCR of a packet (27 MHz base only: 90 kHz units), or -1. */
static int64_t pcr_of(const uint8_t *p)
{
	if (!(p[3] & 0x20) || p[4] < 7 || !(p[5] & 0x10))
		return -1;
	return (int64_t)((uint64_t)p[6] << 25 | (uint64_t)p[7] << 17 | (uint64_t)p[8] << 9 | (uint64_t)p[9] << 1 |
			 (uint64_t)(p[10] >> 7));
}

/* --regulate: the milliseconds to wait before the packet may go (0: now). */
static uint64_t pace(struct mux *m, const uint8_t *p)
{
	uint16_t pid = (uint16_t)((p[1] & 0x1Fu) << 8 | p[2]);
	int64_t pcr = pcr_of(p);
	uint64_t due, now = now_ms();

	if (!m->o->regulate || pcr < 0 || (m->have_pcr0 && pid != m->pcr_pid))
		return 0;
	if (!m->have_pcr0 || (uint64_t)pcr < m->pcr0 || (uint64_t)pcr - m->pcr0 > 90000u * 60u) {
		m->have_pcr0 = 1; /* the first PCR, or a jump: the clock is anchored again */
		m->pcr_pid = pid;
		m->pcr0 = (uint64_t)pcr;
		m->t0_ms = now;
		return 0;
	}
	due = m->t0_ms + ((uint64_t)pcr - m->pcr0) / 90u;
	return due > now ? due - now : 0;
}

static const uint8_t *null_packet(void)
{
	static uint8_t pk[PKT];

	if (pk[0] != 0x47) {
		memset(pk, 0xFF, sizeof pk);
		pk[0] = 0x47;
		pk[1] = 0x1F;
		pk[2] = 0xFF;
		pk[3] = 0x10;
	}
	return pk;
}

/* One input packet out: a null packet or one of the input's CAT carries ours when there is one. */
static int one(struct mux *m, const uint8_t *p)
{
	uint16_t pid = (uint16_t)((p[1] & 0x1Fu) << 8 | p[2]);
	const uint8_t *ours;

	m->n.packets++;
	if (!m->input_cat && ++m->since_cat >= CAT_EVERY)
		queue_cat(m);
	if (pid == KH_TS_PID_CAT)
		on_input_cat(m, p);
	else if (pid == m->o->emm_pid)
		m->n.foreign++; /* the input's packets on our PID: replaced */
	else if (pid != KH_TS_PID_NULL)
		return emit(m, p);
	else
		m->n.nulls++;
	if ((ours = fill(m)) != NULL) {
		m->n.replaced += pid == KH_TS_PID_NULL;
		return emit(m, ours);
	}
	return emit(m, pid == KH_TS_PID_NULL ? p : null_packet());
}

/* ---- the run ---- */

/* Read what the input has (it was readable). 0, or -1 when reading failed. */
static int read_input(struct mux *m)
{
	ssize_t got;

	memmove(m->ib, m->ib + m->ipos, m->ihave);
	m->ipos = 0;
	got = read(m->infd, m->ib + m->ihave, sizeof m->ib - m->ihave);
	if (got < 0)
		return errno == EINTR ? 0 : -1;
	if (got == 0)
		m->eof = 1;
	m->ihave += (size_t)got;
	return 0;
}

/* The packets found in what was read, each out in turn (--regulate waits by servicing the EMMG
 * side). 0, 1 when nothing could be taken, -1 when writing failed. */
static int pump(struct mux *m, volatile sig_atomic_t *stop)
{
	size_t off = 0, cnt = 0, used;

	used = kh_headend_sync_find(&m->sync, m->ib + m->ipos, m->ihave, m->eof, &off, &cnt);
	for (size_t i = 0; i < cnt && !*stop; i++) {
		const uint8_t *p = m->ib + m->ipos + off + i * PKT;
		uint64_t wait;
		while ((wait = pace(m, p)) > 0 && !*stop)
			(void)service(m, wait < 100 ? (int)wait : 100, 0);
		if (one(m, p) != 0)
			return -1;
		if ((m->n.packets & 255u) == 0)
			(void)service(m, 0, 0);
	}
	m->ipos += used;
	m->ihave -= used;
	return used == 0; /* 1: more bytes are needed */
}

static int loop(struct mux *m)
{
	volatile sig_atomic_t *stop = kh_cli_stop_signals();
	uint64_t deadline = now_ms() + m->o->wait_s * 1000u;

	while (m->o->wait_s && m->n.provisions == 0 && now_ms() < deadline && !*stop)
		(void)service(m, 100, 0);
	while (!*stop) {
		if (m->ihave == 0 && m->eof)
			break;
		if (m->ihave >= 3 * PKT || m->eof) {
			int r = pump(m, stop);
			if (r < 0)
				return -1;
			if (r == 1 && m->eof)
				break; /* (the finder takes everything at the end: not reached) */
			if (r == 0)
				continue;
		}
		if (service(m, 100, 1) && read_input(m) != 0) {
			fprintf(stderr, "keyhole: %s: %s: cannot read: %s\n", P, m->o->in, strerror(errno));
			return -1;
		}
	}
	return flush(m);
}

static int open_ends(struct mux *m)
{
	const struct mux_opts *o = m->o;
	int rc;

	if (strcmp(o->in, "-") == 0) {
		m->infd = 0;
	} else if (kh_tsip_is_url(o->in)) {
		if ((rc = kh__cli_udp_in(P, o->in, 0, &m->infd, &m->uin)) != KH_EXIT_OK)
			return rc;
	} else if ((m->infd = open(o->in, O_RDONLY | O_CLOEXEC)) < 0) {
		return kh_cli_fail(o->in, errno == ENOENT ? KH_ERR_NOTFOUND : KH_ERR_IO);
	}
	if (kh_tsip_is_url(o->out))
		return kh__cli_udp_out(P, o->out, o->regulate, &m->outfd, &m->uout);
	if (kh_cli_out_open(&m->outf, o->out) != KH_EXIT_OK)
		return KH_EXIT_FAIL;
	m->outfd = m->outf.fd;
	return KH_EXIT_OK;
}

static int setup(struct mux *m)
{
	size_t len = 0;
	int rc;

	if (!(m->ring = malloc((size_t)MUX_RING * PKT)))
		return kh_cli_fail(P, KH_ERR_NOMEM);
	if (kh_ts_asm_init(&m->cat_asm, KH_TS_PID_CAT, KH_TS_PSI_MAX) != KH_OK ||
	    kh_headend_cat_merge(NULL, 0, m->o->ca_system_id, m->o->emm_pid, m->cat, sizeof m->cat, &len) != KH_OK)
		return kh_cli_fail(P, KH_ERR_INVAL);
	m->cat_len = len;
	queue_cat(m); /* at the first null packet: the input may send none */
	kh_headend_sync_init(&m->sync);
	(void)kh_cli_stop_signals();
	signal(SIGPIPE, SIG_IGN);
	if ((rc = open_ends(m)) != KH_EXIT_OK)
		return rc;
	if ((m->lfd = kh_cli_tcp_listen(P, "--emmg-listen", m->o->listen, 4)) < 0)
		return m->lfd == -2 ? KH_EXIT_USAGE : KH_EXIT_FAIL;
	return KH_EXIT_OK;
}

static void report(const struct mux *m)
{
	const struct counts *n = &m->n;

	fprintf(stderr,
		"keyhole: %s: packets=%llu emm_sections=%llu emm_packets=%llu emm_left=%zu dropped_sections=%llu "
		"dropped_packets=%llu nulls=%llu nulls_left=%llu cat=%llu foreign=%llu\n",
		P, (unsigned long long)n->packets, (unsigned long long)n->emm_sections,
		(unsigned long long)n->emm_packets, m->count, (unsigned long long)n->dropped_sections,
		(unsigned long long)n->dropped_packets, (unsigned long long)n->nulls,
		(unsigned long long)(n->nulls - n->replaced),
		(unsigned long long)n->cat, (unsigned long long)n->foreign);
}

static int finish(struct mux *m, int rc)
{
	if (rc == KH_EXIT_OK && m->write_failed) {
		fprintf(stderr, "keyhole: %s: %s: cannot write: %s\n", P, m->o->out, strerror(m->write_failed));
		rc = KH_EXIT_FAIL;
	}
	if (m->uout) {
		if (rc == KH_EXIT_OK && kh__cli_udp_finish(m->uout) != KH_EXIT_OK)
			rc = KH_EXIT_FAIL;
	} else if (rc == KH_EXIT_OK && m->outfd >= 0 && kh_cli_out_commit(&m->outf, m->o->out) != KH_EXIT_OK) {
		rc = KH_EXIT_FAIL;
	}
	if (rc == KH_EXIT_OK)
		report(m);
	for (size_t i = 0; i < MUX_CONNS; i++)
		if (m->c[i])
			drop_conn(m, i);
	if (m->lfd >= 0)
		close(m->lfd);
	if (m->uin)
		(void)kh__cli_udp_finish(m->uin);
	else if (m->infd > 0)
		close(m->infd);
	kh_cli_out_close(&m->outf);
	kh__cli_udp_free(m->uout);
	kh__cli_udp_free(m->uin);
	free(m->ring);
	free(m);
	return rc;
}

int kh__cli_headend_mux(int argc, char **argv)
{
	struct mux_opts o;
	struct mux *m;
	int rc;

	if ((rc = parse(argc, argv, &o)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if (!(m = calloc(1, sizeof *m)))
		return kh_cli_fail(P, KH_ERR_NOMEM);
	m->o = &o;
	m->lfd = m->infd = m->outfd = m->outf.fd = -1;
	o.cfg.on_data = on_data;
	o.cfg.busy = client_busy;
	o.cfg.ctx = m;
	if ((rc = setup(m)) == KH_EXIT_OK && loop(m) != 0)
		rc = KH_EXIT_FAIL;
	return finish(m, rc);
}
