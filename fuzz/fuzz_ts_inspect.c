/*
 * libFuzzer harness: the engine of `keyhole ts inspect` (src/cli/ts_inspect.c, compiled into
 * this harness), which reads any file it is given: packet finding and resync, PCRs, the tables
 * and the ECM/EMM headers on the CA PIDs they name.
 *
 * The input is inspected twice: in one piece, and in pieces whose sizes the input's first byte
 * picks (1 to 256 bytes), to check that where the stream is cut never changes what is found.
 * Invariants: the bytes are accounted for exactly (whole packets, skipped, cut short; cut short
 * below 188), the PIDs' packets add up to the packets, each PID's packets are the invalid ones,
 * those with transport_error_indicator, those with a payload by scrambling control and those
 * without; per CA PID the ECMs, EMMs and other sections are at most its sections, and the
 * sections not read as one of them are malformed; the bounds of the tables (programmes,
 * components, CA descriptors, assemblers, CA PIDs, ECM intervals) hold; every result function
 * answers (a bitrate not negative, a state and a role name). Both runs agree on every counter.
 */
#include <string.h>

#include "cli/ts_inspect.h"

#include "fuzz_common.h"

#define MAX_IN (256u * KH_TS_PACKET_LEN)

static struct kh_tsi whole, cut;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	return 0;
}

static void run(struct kh_tsi *t, const uint8_t *p, size_t n, size_t piece)
{
	CHECK(kh_tsi_init(t, 0x4B48) == KH_OK);
	while (n > 0) {
		size_t k = n < piece ? n : piece;
		CHECK(kh_tsi_feed(t, p, k) == KH_OK);
		p += k;
		n -= k;
	}
	kh_tsi_finish(t);
}

static void check_counts(struct kh_tsi *t)
{
	uint64_t sum = 0, tei = 0;

	CHECK(t->npkts * KH_TS_PACKET_LEN + t->skipped + t->truncated == t->bytes);
	CHECK(t->truncated < KH_TS_PACKET_LEN);
	for (unsigned pid = 0; pid <= KH_TS_PID_MAX; pid++) {
		const struct kh_tsi_pid *ps = &t->pids[pid];
		uint64_t seen = ps->invalid + ps->af_only + ps->sc[0] + ps->sc[1] + ps->sc[2] + ps->sc[3];
		CHECK(seen <= ps->pkts);
		tei += ps->pkts - seen;
		sum += ps->pkts;
		CHECK(kh_tsi_pid_rate(t, (uint16_t)pid) >= 0);
		CHECK(kh_tsi_scrambling_state(ps) != NULL);
		CHECK(kh_tsi_role_name(t, (uint16_t)pid) != NULL);
	}
	CHECK(sum == t->npkts);
	CHECK(tei == t->tei);
	CHECK(kh_tsi_mux_rate(t) >= 0);
	CHECK(t->first_pcr_pid < 0 || t->pids[t->first_pcr_pid].pcrs > 0);
}

static void check_tables(struct kh_tsi *t)
{
	CHECK(t->nprogs <= KH_TS_PAT_MAX_PROGRAMS && t->ncat <= KH_TSI_MAX_CA);
	CHECK(t->nasm <= KH_TSI_MAX_ASM && t->ncapids <= KH_TSI_MAX_CAPIDS);
	for (size_t i = 0; i < t->nprogs; i++) {
		CHECK(t->progs[i].nes <= KH_TSI_MAX_ES && t->progs[i].nca <= KH_TSI_MAX_CA);
		for (size_t j = 0; j < t->progs[i].nes; j++)
			CHECK(t->progs[i].es[j].name != NULL && t->progs[i].es[j].pid <= KH_TS_PID_MAX);
	}
	for (size_t i = 0; i < t->ncapids; i++) {
		struct kh_tsi_capid *c = t->capids[i];
		uint64_t read = c->ecms + c->emms[0] + c->emms[1] + c->emms[2] + c->other;
		CHECK(read <= c->sections && c->sections - read <= c->malformed);
		CHECK(c->ngaps <= KH_TSI_MAX_GAPS && (c->ecms == 0 || c->ngaps < c->ecms));
		CHECK(i == 0 || t->capids[i - 1]->pid < c->pid);
		CHECK(c->ecms == 0 || c->ecm_first.table_id == 0x80 || c->ecm_first.table_id == 0x81);
		(void)kh_tsi_ecm_interval_ms(t, c);
	}
}

/* Where the stream was cut changes nothing. */
static void check_same(const struct kh_tsi *a, const struct kh_tsi *b)
{
	CHECK(a->bytes == b->bytes && a->npkts == b->npkts && a->skipped == b->skipped);
	CHECK(a->truncated == b->truncated && a->invalid == b->invalid && a->tei == b->tei);
	CHECK(a->nprogs == b->nprogs && a->ncat == b->ncat && a->ncapids == b->ncapids);
	CHECK(a->first_pcr_pid == b->first_pcr_pid);
	for (unsigned pid = 0; pid <= KH_TS_PID_MAX; pid++) {
		const struct kh_tsi_pid *x = &a->pids[pid], *y = &b->pids[pid];
		CHECK(x->pkts == y->pkts && x->cc_errors == y->cc_errors && x->psi_errors == y->psi_errors);
		CHECK(memcmp(x->sc, y->sc, sizeof x->sc) == 0 && x->role == y->role && x->pcrs == y->pcrs);
	}
	for (size_t i = 0; i < a->ncapids; i++) {
		const struct kh_tsi_capid *x = a->capids[i], *y = b->capids[i];
		CHECK(x->pid == y->pid && x->sections == y->sections && x->malformed == y->malformed);
		CHECK(x->ecms == y->ecms && memcmp(x->emms, y->emms, sizeof x->emms) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t piece;

	if (size < 1 || size > MAX_IN)
		return 0;
	piece = (size_t)data[0] + 1;
	run(&whole, data + 1, size - 1, size);
	run(&cut, data + 1, size - 1, piece);
	check_counts(&whole);
	check_tables(&whole);
	check_same(&whole, &cut);
	kh_tsi_free(&whole);
	kh_tsi_free(&cut);
	return 0;
}
