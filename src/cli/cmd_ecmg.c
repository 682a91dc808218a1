/*
 * `keyhole ecmg serve`: the SimulCrypt ECMG (include/keyhole/ecmg.h, docs/internals/ecmg.md). One
 * thread, a poll loop over the listening socket and at most --max-connections SCS connections;
 * each connection's bytes are framed with kh_sim_frame and handed to the protocol engine whole.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/headend.h"
#include "keyhole/crypto.h"
#include "keyhole/ecmg.h"
#include "keyhole/headend.h"

#define P "ecmg serve"
#define MAX_CONN_LIMIT 1024u

static const char serve_help[] =
	"usage: keyhole ecmg serve --keys FILE --listen HOST:PORT [--super-cas-id ID]\n"
	"           [--product P | --event E --price N] [--alg csa2|cissa|idsa] [--key-id N]\n"
	"           [--ts-packets] [--max-connections N]\n"
	"\n"
	"Serve the DVB SimulCrypt ECMG<->SCS interface (ETSI TS 103 197, protocol versions 2 and 3)\n"
	"over TCP: each connection is one SCS channel; CW_provision is answered by an ECM_response\n"
	"carrying a Keyhole ECM for that crypto period, sealed under the key file's newest service\n"
	"key --key-id and signed by its ECM signer, as `headend scramble` makes it.\n"
	"The ECM's access criteria are --product or --event, unless the SCS sends its own\n"
	"(docs/internals/ecmg.md). Prints listening=HOST:PORT once ready; SIGINT or SIGTERM stop it.\n"
	"\n"
	"  -k, --keys FILE         the headend key file\n"
	"  -l, --listen HOST:PORT  address to listen on (port 0: any free port)\n"
	"      --super-cas-id ID   the Super_CAS_id an SCS must ask for (default 0x4B480000)\n"
	"      --product P         subscription product the ECMs ask for\n"
	"      --event E           pay-per-view event the ECMs ask for\n"
	"      --price N           the event's price\n"
	"      --alg ALG           the scrambling algorithm the ECMs name, which sets the control\n"
	"                          words' length: csa2 (8 bytes, the default), cissa or idsa (16)\n"
	"      --key-id N          the service key sealing the ECMs, its newest version (default 1)\n"
	"      --ts-packets        ECMs as TS packets (section_TSpkt_flag 1), not sections\n"
	"      --max-connections N at most N SCS connections at once (default 16)\n"
	"  -h, --help              this help\n";

enum { O_SCID = 256, O_PRODUCT, O_EVENT, O_PRICE, O_TSPKT, O_MAXCONN, O_ALG, O_KEYID };

static const struct option serve_opts[] = {
	{"keys", required_argument, NULL, 'k'},	       {"listen", required_argument, NULL, 'l'},
	{"super-cas-id", required_argument, NULL, O_SCID}, {"product", required_argument, NULL, O_PRODUCT},
	{"event", required_argument, NULL, O_EVENT},	       {"price", required_argument, NULL, O_PRICE},
	{"ts-packets", no_argument, NULL, O_TSPKT},	       {"max-connections", required_argument, NULL, O_MAXCONN},
	{"alg", required_argument, NULL, O_ALG},	       {"key-id", required_argument, NULL, O_KEYID},
	{"help", no_argument, NULL, 'h'},		       {NULL, 0, NULL, 0}};

struct serve_opts {
	const char *keys, *listen;
	int have_product, have_event, have_price;
	uint64_t max_conn;
	struct kh_ecmg_cfg cfg;
};

/* One SCS connection. */
struct conn {
	int fd;
	size_t have;
	uint8_t in[KH_SIM_MAX_MSG];
	struct kh_ecmg_conn st;
};

/* A number option into *dst (and *flag set); KH_EXIT_OK or KH_EXIT_USAGE. */
static int num_u32(const char *name, const char *s, uint32_t *dst, int *flag)
{
	uint64_t v = 0;
	int rc = kh_cli_num_opt(P, name, s, UINT32_MAX, &v);

	*dst = (uint32_t)v;
	*flag = 1;
	return rc;
}

static int take(void *ctx, int c, const char *arg)
{
	struct serve_opts *o = ctx;
	int ignored = 0;

	switch (c) {
	case 'k':
		o->keys = arg;
		return KH_EXIT_OK;
	case 'l':
		o->listen = arg;
		return KH_EXIT_OK;
	case O_SCID:
		return num_u32("super-cas-id", arg, &o->cfg.super_cas_id, &ignored);
	case O_PRODUCT:
		return num_u32("product", arg, &o->cfg.product, &o->have_product);
	case O_EVENT:
		return num_u32("event", arg, &o->cfg.event, &o->have_event);
	case O_PRICE:
		return num_u32("price", arg, &o->cfg.price, &o->have_price);
	case O_TSPKT:
		o->cfg.ts_packets = 1;
		return KH_EXIT_OK;
	case O_MAXCONN:
		return kh_cli_num_opt(P, "max-connections", arg, MAX_CONN_LIMIT, &o->max_conn);
	case O_ALG:
		if (strcmp(arg, "csa2") == 0)
			o->cfg.alg = KH_SCR_CSA2;
		else if (strcmp(arg, "cissa") == 0)
			o->cfg.alg = KH_SCR_CISSA;
		else if (strcmp(arg, "idsa") == 0)
			o->cfg.alg = KH_SCR_IDSA;
		else
			return kh_cli_usage(P, "--alg must be csa2, cissa or idsa");
		return KH_EXIT_OK;
	case O_KEYID: {
		uint64_t v = 0;
		int rc = kh_cli_num_opt(P, "key-id", arg, 255, &v);
		o->cfg.key_id = (uint8_t)v;
		return rc;
	}
	default:
		return -1;
	}
}

static int check(const struct serve_opts *o)
{
	if (!o->keys)
		return kh_cli_usage(P, "--keys is required");
	if (!o->listen)
		return kh_cli_usage(P, "--listen is required");
	if (o->have_product == o->have_event)
		return kh_cli_usage(P, "give one of --product and --event");
	if (o->have_event != o->have_price)
		return kh_cli_usage(P, "--event needs --price, and --price needs --event");
	if (o->max_conn == 0)
		return kh_cli_usage(P, "--max-connections must be at least 1");
	return KH_EXIT_OK;
}

/* KH_EXIT_OK, KH_EXIT_USAGE, or -1 after the help. */
static int parse(int argc, char **argv, struct serve_opts *o)
{
	int rc;

	memset(o, 0, sizeof *o);
	kh_ecmg_cfg_defaults(&o->cfg);
	o->max_conn = 16;
	if ((rc = kh_cli_options(P, argc, argv, "+k:l:h", serve_opts, serve_help, take, o)) != KH_EXIT_OK)
		return rc;
	if ((rc = check(o)) != KH_EXIT_OK)
		return rc;
	o->cfg.access = o->have_product ? KH_ECM_PRODUCT : KH_ECM_EVENT;
	return KH_EXIT_OK;
}

/* The key file's newest service key 1, its ECM signer and revoked version into o->cfg. */
static int open_keys(struct serve_opts *o)
{
	struct kh_headend_keys *k = NULL;
	size_t line = 0;
	kh_err r;

	if ((r = kh_headend_keys_load(o->keys, &k, &line)) != KH_OK)
		return kh__cli_keys_fail(o->keys, line, r);
	r = kh_headend_keys_get(k, o->cfg.key_id, 0, o->cfg.service_key, &o->cfg.key_version);
	if (r == KH_OK)
		r = kh_headend_keys_signer(k, KH_ROLE_ECM_SIGNER, &o->cfg.signer, NULL, NULL);
	o->cfg.revoked_version = kh_headend_keys_revoked(k);
	kh_headend_keys_free(k);
	if (r != KH_OK) {
		fprintf(stderr, "keyhole: %s: no service key %u or no ECM signer\n", o->keys, o->cfg.key_id);
		return KH_EXIT_FAIL;
	}
	return KH_EXIT_OK;
}


/* Every whole message in c->in handled. 0 to keep the connection, -1 to close it. */
static int drain(const struct kh_ecmg_cfg *cfg, struct conn *c)
{
	uint8_t out[KH_ECMG_OUT_MAX];
	size_t need = 0, olen = 0;
	int bye = 0;

	for (;;) {
		enum kh_sim_status st = kh_sim_frame(c->in, c->have, &need);
		if (st != KH_SIM_OK) {
			if (kh_ecmg_frame_error(&c->st, st, out, sizeof out, &olen) == KH_OK)
				(void)kh_cli_send_all(c->fd, out, olen);
			return -1;
		}
		if (c->have < need)
			return 0;
		if (kh_ecmg_handle(cfg, &c->st, c->in, need, out, sizeof out, &olen, &bye) != KH_OK)
			return -1;
		if (olen && kh_cli_send_all(c->fd, out, olen) != 0)
			return -1;
		memmove(c->in, c->in + need, c->have - need);
		kh_wipe(c->in + c->have - need, need); /* the clear control words go */
		c->have -= need;
		if (bye)
			return -1;
	}
}

static void drop(struct conn **cs, size_t i)
{
	close(cs[i]->fd);
	kh_wipe(cs[i], sizeof *cs[i]);
	free(cs[i]);
	cs[i] = NULL;
}

static void accept_one(int lfd, struct conn **cs, size_t max)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	struct timeval tv = {.tv_sec = 2}; /* an SCS that reads nothing stalls the others this long at most */
	size_t i;

	if (fd < 0)
		return;
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	for (i = 0; i < max && cs[i]; i++)
		;
	if (i == max || !(cs[i] = calloc(1, sizeof *cs[i]))) {
		close(fd); /* over --max-connections: refused at once */
		return;
	}
	cs[i]->fd = fd;
	kh_ecmg_conn_init(&cs[i]->st);
}

static void read_one(struct kh_ecmg_cfg *cfg, struct conn **cs, size_t i)
{
	struct conn *c = cs[i];
	ssize_t n = recv(c->fd, c->in + c->have, sizeof c->in - c->have, 0);

	if (n < 0 && errno == EINTR)
		return;
	if (n <= 0) {
		drop(cs, i);
		return;
	}
	c->have += (size_t)n;
	cfg->time = (uint64_t)time(NULL); /* the ECMs' broadcast time */
	if (drain(cfg, c) != 0)
		drop(cs, i);
}

static int loop(struct kh_ecmg_cfg *cfg, int lfd, size_t max)
{
	volatile sig_atomic_t *stop = kh_cli_stop_signals();
	struct conn **cs = calloc(max, sizeof *cs);
	struct pollfd *pf = calloc(max + 1, sizeof *pf);
	size_t idx[MAX_CONN_LIMIT];

	if (!cs || !pf) {
		free(cs);
		free(pf);
		return kh_cli_fail(P, KH_ERR_NOMEM);
	}
	while (!*stop) {
		nfds_t n = 1;
		pf[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
		for (size_t i = 0; i < max; i++)
			if (cs[i]) {
				idx[n - 1] = i;
				pf[n++] = (struct pollfd){.fd = cs[i]->fd, .events = POLLIN};
			}
		if (poll(pf, n, 500) <= 0)
			continue;
		for (nfds_t j = 1; j < n; j++)
			if (pf[j].revents)
				read_one(cfg, cs, idx[j - 1]);
		if (pf[0].revents & POLLIN)
			accept_one(lfd, cs, max);
	}
	for (size_t i = 0; i < max; i++)
		if (cs[i])
			drop(cs, i);
	free(cs);
	free(pf);
	return KH_EXIT_OK;
}

static int cmd_serve(int argc, char **argv)
{
	struct serve_opts o;
	int rc, lfd;

	if ((rc = parse(argc, argv, &o)) != KH_EXIT_OK)
		return rc < 0 ? KH_EXIT_OK : rc;
	if ((rc = open_keys(&o)) != KH_EXIT_OK) {
		kh_wipe(&o, sizeof o);
		return rc;
	}
	if ((lfd = kh_cli_tcp_listen(P, "--listen", o.listen, 16)) < 0) {
		kh_wipe(&o, sizeof o);
		return lfd == -2 ? KH_EXIT_USAGE : KH_EXIT_FAIL;
	}
	rc = loop(&o.cfg, lfd, (size_t)o.max_conn);
	close(lfd);
	kh_wipe(&o, sizeof o);
	return rc;
}

static const struct kh_cli_cmd sub[] = {
	{"serve", cmd_serve, "serve the SimulCrypt ECMG<->SCS interface: ECMs for an SCS"},
};

int kh_cmd_ecmg(int argc, char **argv)
{
	return kh_cli_dispatch("ecmg", sub, sizeof sub / sizeof sub[0], argc, argv);
}
