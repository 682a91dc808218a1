/*
 * kh_sim_pcap FILE PORT [bad]: writes a classic libpcap file (LINKTYPE_RAW, IPv4) holding one TCP
 * stream from 10.0.0.1:40000 to 10.0.0.2:PORT that carries every SimulCrypt message type
 * (tests/tools/sim_samples.h, made by our builder) in protocol version 2 and then 3, one message
 * per segment. Prints, one a line, the message_type of each message in order and its number of
 * parameters (decimal), for tests/cli/test_simulcrypt_tshark.sh to compare with what tshark
 * decodes. With `bad`, one more message follows, hand-made and broken (a parameter running past
 * the end of its message): the control that shows tshark's malformed check can fire. The IPv4 header
 * checksum is computed; the TCP checksum is left 0 (tshark does not check it by default).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_samples.h"

static void put16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v & 0xFFFFu);
}

/* pcap headers are in the writer's byte order: we write little-endian explicitly. */
static void le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static uint16_t ip_checksum(const uint8_t *h, size_t n)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < n; i += 2)
		sum += (uint32_t)h[i] << 8 | h[i + 1];
	while (sum >> 16)
		sum = (sum & 0xFFFFu) + (sum >> 16);
	return (uint16_t)~sum;
}

static int write_global(FILE *f)
{
	uint8_t g[24];

	le32(g, 0xA1B2C3D4u); /* microsecond timestamps */
	le16(g + 4, 2);
	le16(g + 6, 4);
	le32(g + 8, 0);
	le32(g + 12, 0);
	le32(g + 16, 65535); /* snaplen */
	le32(g + 20, 101);   /* LINKTYPE_RAW */
	return fwrite(g, 1, sizeof g, f) == sizeof g ? 0 : -1;
}

/* One IPv4+TCP packet carrying `msg`; *seq advances by its length. */
static int write_segment(FILE *f, unsigned idx, uint16_t port, uint32_t *seq, const uint8_t *msg, size_t len)
{
	uint8_t pkt[40 + 1024];
	uint8_t rec[16];
	size_t total = 40 + len;

	if (len > 1024)
		return -1;
	memset(pkt, 0, 40);
	pkt[0] = 0x45; /* IPv4, 20-byte header */
	put16(pkt + 2, (uint32_t)total);
	put16(pkt + 4, idx);
	pkt[6] = 0x40; /* don't fragment */
	pkt[8] = 64;   /* TTL */
	pkt[9] = 6;    /* TCP */
	put32(pkt + 12, 0x0A000001u);
	put32(pkt + 16, 0x0A000002u);
	put16(pkt + 10, ip_checksum(pkt, 20));
	put16(pkt + 20, 40000);
	put16(pkt + 22, port);
	put32(pkt + 24, *seq);
	put32(pkt + 28, 1);
	pkt[32] = 5 << 4;  /* data offset: 20 bytes */
	pkt[33] = 0x18;	   /* PSH, ACK */
	put16(pkt + 34, 65535);
	memcpy(pkt + 40, msg, len);
	*seq += (uint32_t)len;
	le32(rec, 1000000u + idx);
	le32(rec + 4, 0);
	le32(rec + 8, (uint32_t)total);
	le32(rec + 12, (uint32_t)total);
	if (fwrite(rec, 1, sizeof rec, f) != sizeof rec || fwrite(pkt, 1, total, f) != total)
		return -1;
	return 0;
}

/* Parameters in a message we built (so it parses). */
static size_t kh_sim_count_all(const uint8_t *msg, size_t len)
{
	static struct kh_sim_msg m;
	enum kh_sim_iface iface = kh_sim_known_type(KH_SIM_ECMG, (uint16_t)(msg[1] << 8 | msg[2])) ? KH_SIM_ECMG
												    : KH_SIM_EMMG;

	return kh_sim_parse(iface, msg, len, &m, NULL) == KH_SIM_OK ? m.n : 0;
}

int main(int argc, char **argv)
{
	FILE *f;
	uint32_t seq = 1000;
	unsigned idx = 0;
	long port;

	port = argc >= 3 ? strtol(argv[2], NULL, 10) : 0;
	if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "bad") != 0) || port <= 0 || port > 65535) {
		fprintf(stderr, "usage: kh_sim_pcap FILE PORT [bad]\n");
		return 2;
	}
	f = fopen(argv[1], "wb");
	if (f == NULL || write_global(f) != 0) {
		fprintf(stderr, "kh_sim_pcap: cannot write %s\n", argv[1]);
		return 1;
	}
	for (uint8_t version = 2; version <= 3; version++) {
		for (size_t i = 0; i < SIM_SAMPLES; i++) {
			uint8_t msg[1024];
			size_t len;

			if (sim_sample_build(i, version, msg, sizeof msg, &len) != KH_OK ||
			    write_segment(f, idx++, (uint16_t)port, &seq, msg, len) != 0) {
				fprintf(stderr, "kh_sim_pcap: sample %s failed\n", sim_samples[i].name);
				return 1;
			}
			printf("%u %zu\n", sim_samples[i].type, kh_sim_count_all(msg, len));
		}
	}
	if (argc == 4) {
		/* channel_test: ECM_channel_id claiming 4 bytes where the message holds 2 */
		static const uint8_t bad[] = {0x02, 0x00, 0x02, 0x00, 0x06, 0x00, 0x0E, 0x00, 0x04, 0x00, 0x01};

		if (write_segment(f, idx++, (uint16_t)port, &seq, bad, sizeof bad) != 0)
			return 1;
	}
	if (fclose(f) != 0) {
		fprintf(stderr, "kh_sim_pcap: cannot write %s\n", argv[1]);
		return 1;
	}
	return 0;
}
