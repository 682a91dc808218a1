/*
 * A udp:// input or output for commands that read and write file descriptors: a thread between
 * the network (include/keyhole/tsip.h) and one end of a pipe. Input: the datagrams' packets into
 * the pipe, its end closed (the command's end of input) after idle_ms without a datagram once
 * one came (0: never). Output: the pipe's packets out in datagrams, with regulate paced at the
 * stream's PCR rate (the first PCR anchors the clock). The thread takes no stop signal: the
 * command's own thread does.
 */
#ifndef KH_CLI_UDP_PIPE_H
#define KH_CLI_UDP_PIPE_H

struct kh__cli_udp;

/* KH_EXIT_OK with *fd the end the command reads from, or KH_EXIT_USAGE / KH_EXIT_FAIL (told). */
int kh__cli_udp_in(const char *cmd, const char *url, unsigned idle_ms, int *fd, struct kh__cli_udp **u);
/* KH_EXIT_OK with *fd the end the command writes to; as kh__cli_udp_in. */
int kh__cli_udp_out(const char *cmd, const char *url, int regulate, int *fd, struct kh__cli_udp **u);
/* Output: the command's end closed, everything sent; input: the thread stopped. Prints the
 * receiver's losses (input) as a warning. KH_EXIT_OK or KH_EXIT_FAIL (told). */
int kh__cli_udp_finish(struct kh__cli_udp *u);
/* Any path: the thread stopped, everything released (u may be NULL). */
void kh__cli_udp_free(struct kh__cli_udp *u);

#endif
