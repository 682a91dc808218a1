/*
 * The host side of PC/SC: a transport to the card in a smart-card reader, through pcsc-lite
 * (docs/internals/pcsc.md). The reader is held by name; the card in it is connected
 * exclusively with T=1 and every APDU is one SCardTransmit of the bytes as they are (our
 * commands are ISO 7816-4 extended-length APDUs when their data passes 255 bytes; nothing is
 * chained). A transmit that fails (the card pulled, reset, pcscd gone) makes the next one
 * connect again to whatever card is in the reader then, so a host that pairs again after a
 * failure meets the new card. kh_transport_pcsc_poll() tells a host that watches the reader
 * that the card changed under it before any APDU says so.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <PCSC/winscard.h>
#include <PCSC/wintypes.h>

#include "keyhole/apdu.h"
#include "keyhole/device.h"
#include "keyhole/log.h"

#define NAME_MAX_LEN 256

struct pcsc {
	SCARDCONTEXT ctx;
	SCARDHANDLE card;
	int have_ctx, have_card;
	char want[NAME_MAX_LEN];   /* as asked: empty for the first reader with a card */
	char reader[NAME_MAX_LEN]; /* the reader held, once chosen */
	int have_base;             /* events and present hold what was last seen */
	unsigned events;           /* pcscd's count of insertions and removals in the reader */
	int present;
};

/* What a PC/SC status means to a caller. */
static kh_err map(LONG rv)
{
	switch (rv) {
	case SCARD_S_SUCCESS: return KH_OK;
	case SCARD_E_NO_SERVICE:
	case SCARD_E_SERVICE_STOPPED:
	case SCARD_F_COMM_ERROR:
	case SCARD_E_INVALID_HANDLE:
	case SCARD_E_NO_READERS_AVAILABLE: return KH_ERR_PCSC_SERVICE;
	case SCARD_E_UNKNOWN_READER:
	case SCARD_E_READER_UNAVAILABLE: return KH_ERR_READER;
	case SCARD_E_NO_SMARTCARD:
	case SCARD_W_REMOVED_CARD:
	case SCARD_W_UNPOWERED_CARD:
	case SCARD_W_UNRESPONSIVE_CARD: return KH_ERR_NO_CARD;
	case SCARD_E_SHARING_VIOLATION: return KH_ERR_CARD_BUSY;
	default: return KH_ERR_TRANSPORT;
	}
}

static void drop_card(struct pcsc *p)
{
	if (p->have_card)
		(void)SCardDisconnect(p->card, SCARD_LEAVE_CARD);
	p->have_card = 0;
}

/* pcscd went away: everything held with it is void (a new pcscd counts events from zero). */
static void drop_all(struct pcsc *p)
{
	drop_card(p);
	if (p->have_ctx)
		(void)SCardReleaseContext(p->ctx);
	p->have_ctx = 0;
	p->have_base = 0;
}

static kh_err need_ctx(struct pcsc *p)
{
	LONG rv;

	if (p->have_ctx && SCardIsValidContext(p->ctx) == SCARD_S_SUCCESS)
		return KH_OK;
	drop_all(p);
	if ((rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &p->ctx)) != SCARD_S_SUCCESS)
		return map(rv) == KH_ERR_TRANSPORT ? KH_ERR_PCSC_SERVICE : map(rv);
	p->have_ctx = 1;
	return KH_OK;
}

/* The state of one reader now: SCARD_STATE_* with pcscd's event count in the upper 16 bits. */
static LONG reader_state(struct pcsc *p, const char *name, DWORD *state)
{
	SCARD_READERSTATE rs;
	LONG rv;

	memset(&rs, 0, sizeof rs);
	rs.szReader = name;
	rs.dwCurrentState = SCARD_STATE_UNAWARE;
	rv = SCardGetStatusChange(p->ctx, 0, &rs, 1);
	if (rv == SCARD_E_TIMEOUT)
		rv = SCARD_S_SUCCESS;
	*state = rs.dwEventState;
	return rv;
}

/*
 * Choose the reader: the one named exactly, else the only one whose name begins with the name
 * given; with no name, the first that has a card. KH_ERR_READER when none (or several) match.
 */
static kh_err pick(struct pcsc *p)
{
	DWORD len = 0, st;
	char *all = NULL, *found = NULL;
	int several = 0;
	LONG rv;
	kh_err r = KH_ERR_READER;

	if ((rv = SCardListReaders(p->ctx, NULL, NULL, &len)) != SCARD_S_SUCCESS)
		return rv == SCARD_E_NO_READERS_AVAILABLE ? KH_ERR_READER : map(rv);
	/* two zero bytes past what pcscd fills: the list ends even if its own ending is missing */
	if (!(all = calloc(1, (size_t)len + 2)))
		return KH_ERR_NOMEM;
	if ((rv = SCardListReaders(p->ctx, NULL, all, &len)) != SCARD_S_SUCCESS) {
		r = rv == SCARD_E_NO_READERS_AVAILABLE ? KH_ERR_READER : map(rv);
		goto out;
	}
	for (char *n = all; *n; n += strlen(n) + 1) {
		if (!p->want[0]) {
			if (reader_state(p, n, &st) == SCARD_S_SUCCESS && (st & SCARD_STATE_PRESENT)) {
				found = n;
				break;
			}
			r = KH_ERR_NO_CARD;
		} else if (strcmp(n, p->want) == 0) {
			found = n;
			several = 0;
			break;
		} else if (strncmp(n, p->want, strlen(p->want)) == 0) {
			several = found != NULL;
			found = n;
		}
	}
	if (found && !several && strlen(found) < sizeof p->reader) {
		snprintf(p->reader, sizeof p->reader, "%s", found);
		r = KH_OK;
	}
out:
	free(all);
	return r;
}

/* Connect to the card in the reader (choosing the reader the first time). */
static kh_err connect_card(struct pcsc *p)
{
	DWORD proto = 0, st = 0;
	LONG rv;
	kh_err r;

	if ((r = need_ctx(p)) != KH_OK)
		return r;
	drop_card(p);
	if (!p->reader[0] && (r = pick(p)) != KH_OK) {
		if (r == KH_ERR_PCSC_SERVICE)
			drop_all(p); /* a context of a pcscd gone still looks valid: make a new one next time */
		return r;
	}
	rv = SCardConnect(p->ctx, p->reader, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T1, &p->card, &proto);
	if (rv != SCARD_S_SUCCESS) {
		kh_log_info("pcsc.connect", "reader=\"%s\" status=0x%08lX", p->reader, (unsigned long)rv);
		if (map(rv) == KH_ERR_PCSC_SERVICE)
			drop_all(p);
		return map(rv) == KH_ERR_TRANSPORT ? KH_ERR_NO_CARD : map(rv);
	}
	p->have_card = 1;
	if (!p->have_base && reader_state(p, p->reader, &st) == SCARD_S_SUCCESS) {
		p->events = (unsigned)(st >> 16) & 0xFFFFu;
		p->present = (st & SCARD_STATE_PRESENT) != 0;
		p->have_base = 1;
	}
	return KH_OK;
}

static kh_err pcsc_xfer(void *ctx, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap, size_t *rlen)
{
	struct pcsc *p = ctx;
	DWORD got = (DWORD)(cap < MAX_BUFFER_SIZE_EXTENDED ? cap : MAX_BUFFER_SIZE_EXTENDED);
	LONG rv;
	kh_err r;

	if (len > KH_APDU_MAX_CMD)
		return KH_ERR_TOO_LARGE;
	if (!p->have_card && (r = connect_card(p)) != KH_OK) {
		kh_log_info("pcsc.reconnect", "reader=\"%s\" err=%s", p->reader[0] ? p->reader : p->want,
			    kh_err_name(r));
		return KH_ERR_TRANSPORT;
	}
	rv = SCardTransmit(p->card, SCARD_PCI_T1, cmd, (DWORD)len, NULL, resp, &got);
	if (rv != SCARD_S_SUCCESS || got < 2 || got > cap) {
		kh_log_info("pcsc.transmit", "reader=\"%s\" status=0x%08lX len=%lu", p->reader, (unsigned long)rv,
			    (unsigned long)got);
		if (map(rv) == KH_ERR_PCSC_SERVICE)
			drop_all(p);
		else
			drop_card(p);
		return KH_ERR_TRANSPORT;
	}
	*rlen = got;
	return KH_OK;
}

static void pcsc_close(void *ctx)
{
	struct pcsc *p = ctx;

	if (!p)
		return;
	drop_all(p);
	free(p);
}

kh_err kh_transport_pcsc(struct kh_transport *t, const char *reader)
{
	struct pcsc *p;
	kh_err r;

	memset(t, 0, sizeof *t);
	if (!reader || strlen(reader) >= NAME_MAX_LEN)
		return KH_ERR_READER;
	if (!(p = calloc(1, sizeof *p)))
		return KH_ERR_NOMEM;
	snprintf(p->want, sizeof p->want, "%s", reader);
	if ((r = connect_card(p)) != KH_OK) {
		pcsc_close(p);
		return r;
	}
	t->xfer = pcsc_xfer;
	t->close = pcsc_close;
	t->ctx = p;
	return KH_OK;
}

int kh_transport_is_pcsc(const struct kh_transport *t)
{
	return t && t->xfer == pcsc_xfer;
}

const char *kh_transport_pcsc_reader(const struct kh_transport *t)
{
	return kh_transport_is_pcsc(t) ? ((const struct pcsc *)t->ctx)->reader : NULL;
}

int kh_transport_pcsc_present(const struct kh_transport *t)
{
	return kh_transport_is_pcsc(t) && ((const struct pcsc *)t->ctx)->present;
}

enum kh_pcsc_event kh_transport_pcsc_poll(struct kh_transport *t)
{
	struct pcsc *p;
	DWORD st = 0;
	unsigned events;
	int present;
	LONG rv;

	if (!kh_transport_is_pcsc(t))
		return KH_PCSC_SAME;
	p = t->ctx;
	if (need_ctx(p) != KH_OK)
		return KH_PCSC_GONE;
	if ((rv = reader_state(p, p->reader, &st)) != SCARD_S_SUCCESS) {
		if (map(rv) == KH_ERR_PCSC_SERVICE)
			drop_all(p);
		else
			drop_card(p);
		p->have_base = 0;
		return KH_PCSC_GONE;
	}
	if (st & (SCARD_STATE_UNKNOWN | SCARD_STATE_UNAVAILABLE)) {
		drop_card(p);
		p->have_base = 0;
		return KH_PCSC_GONE;
	}
	events = (unsigned)(st >> 16) & 0xFFFFu;
	present = (st & SCARD_STATE_PRESENT) != 0;
	if (!p->have_base || events != p->events || present != p->present) {
		/* Back from gone, or a card went out or in since last seen: whatever card is there
		 * now is another one as far as the host can tell. */
		p->events = events;
		p->present = present;
		p->have_base = 1;
		drop_card(p);
		return KH_PCSC_CHANGED;
	}
	return present ? KH_PCSC_SAME : KH_PCSC_NO_CARD;
}
