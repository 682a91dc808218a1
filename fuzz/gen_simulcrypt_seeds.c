/*
 * Seeds of fuzz_simulcrypt (fuzz/README.md): every sample message of tests/tools/sim_samples.h in
 * protocol versions 2 and 3, one a file behind the interface byte, and each interface's samples
 * as one TCP stream. No randomness: the same files each run. Not built by CMake:
 *   cmake --build build --target kh_ts
 *   gcc -std=c11 -Wall -Wextra -Iinclude -Itests/tools fuzz/gen_simulcrypt_seeds.c build/libkh_ts.a \
 *       -o /tmp/gen_sim && /tmp/gen_sim fuzz/corpus/fuzz_simulcrypt
 * (the hand-made refusals ecmg-too-long, emmg-bad-version and ecmg-unknown-param are kept as they are).
 */
#include <stdio.h>

#include "sim_samples.h"

static int out(const char *dir, const char *name, const uint8_t *b, size_t n)
{
	char p[512];
	FILE *f;

	snprintf(p, sizeof p, "%s/%s", dir, name);
	f = fopen(p, "wb");
	if (f == NULL || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
		fprintf(stderr, "gen_simulcrypt_seeds: cannot write %s\n", p);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static uint8_t stream[2][8192];
	size_t used[2] = {1, 1};

	if (argc != 2) {
		fprintf(stderr, "usage: gen_simulcrypt_seeds DIR\n");
		return 2;
	}
	stream[0][0] = 0, stream[1][0] = 1;
	for (uint8_t v = 2; v <= 3; v++) {
		for (size_t i = 0; i < SIM_SAMPLES; i++) {
			uint8_t one[1025];
			char name[64];
			size_t len;
			int e = sim_samples[i].iface == KH_SIM_EMMG;

			if (sim_sample_build(i, v, one + 1, sizeof one - 1, &len) != KH_OK)
				return 1;
			one[0] = (uint8_t)e;
			snprintf(name, sizeof name, "%s-%s-v%u", e ? "emmg" : "ecmg", sim_samples[i].name, v);
			if (out(argv[1], name, one, len + 1) != 0)
				return 1;
			memcpy(stream[e] + used[e], one + 1, len);
			used[e] += len;
		}
	}
	if (out(argv[1], "ecmg-stream-all", stream[0], used[0]) != 0 ||
	    out(argv[1], "emmg-stream-all", stream[1], used[1]) != 0)
		return 1;
	return 0;
}
